"""benchmark.mlperf_log: the vocabulary agrees with mllog's, and the one reader handles what logs hold."""
from mlperf_logging.mllog import constants

from benchmark import mlperf_log
from benchmark.mlperf_log import Key, Status


def test_keys_shared_with_mllog_have_mllogs_names_and_values():
    shared = [name for name in vars(Key) if name.isupper() and hasattr(constants, name)]
    assert len(shared) >= 30
    for name in shared:
        assert getattr(Key, name) == getattr(constants, name), name
    assert (Status.SUCCESS, Status.ABORTED) == (constants.SUCCESS, constants.ABORTED)
    # our own keys must not shadow one of mllog's under another name
    mllog_values = {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)}
    own = [name for name in vars(Key) if name.isupper() and not hasattr(constants, name)]
    assert {getattr(Key, n) for n in own}.isdisjoint(mllog_values)


def test_reader_keeps_records_and_turns_bad_lines_into_warnings(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text('0: :::MLLOG {"key": "run_start", "time_ms": 1500, "metadata": {"a": 1}}\nnoise\r\n'
                   ':::MLLOG {garbage\n:::MLLOG {"value": 1}\n:::MLLOG {"key": "x", "time_ms": "soon"}\n'
                   '[1,0]<stdout>::::MLLOG {"key": "run_stop", "time_ms": 4000.25, "metadata": {"status": "success"}}\n'
                   ':::MLLOG {"key": "run_st')
    records, warnings = mlperf_log.read_log(log)
    assert [(r.line, r.key, r.time_ms, r.metadata) for r in records] == [
        (1, "run_start", 1500.0, {"a": 1}), (6, "run_stop", 4000.25, {"status": "success"})]
    assert len(warnings) == 4 and "line 3: unreadable" in warnings[0] and "line 7 (last line: truncated?)" in warnings[3]
    assert [n for n, _, _ in mlperf_log.token_lines(log)] == [1, 3, 4, 5, 6, 7]
    assert mlperf_log.read_log(tmp_path / "missing.txt")[1][0].startswith("cannot read")


def test_timed_region_is_the_one_rule_for_run_start_and_run_stop(tmp_path):
    def region(*lines):
        log = tmp_path / "log.txt"
        log.write_text("".join(f':::MLLOG {{"key": "{k}", "time_ms": {t}, "metadata": {{"status": "{s}"}}}}\n'
                               for k, t, s in lines))
        return mlperf_log.timed_region(mlperf_log.read_log(log)[0])

    good = region(("run_start", 1000, ""), ("run_stop", 61000, "success"))
    assert good.valid and good.milliseconds == 60000 and good.status == "success" and good.problems == []
    open_ended = region(("run_start", 1000, ""))
    assert open_ended.valid and open_ended.stop is None and open_ended.milliseconds is None
    two_stops = region(("run_start", 0, ""), ("run_stop", 444000, "success"), ("run_stop", 1043800, "aborted"))
    assert not two_stops.valid and two_stops.milliseconds is None
    assert two_stops.problems == ["2 run_stop records (lines 2, 3): a valid log has one"]
    assert region(("run_start", 0, ""), ("run_start", 5, ""), ("run_stop", 9, "success")).problems[0].startswith(
        "2 run_start records")
    assert region(("run_stop", 9, "success")).problems == ["no run_start"]
    assert "before run_start" in region(("run_start", 9, ""), ("run_stop", 1, "success")).problems[0]


def test_no_reader_looks_up_run_stop_by_itself():
    """Every reader of run_stop goes through timed_region. Before: the report took the first run_stop, the
    RESULT line the last; measure/data_wait.py and scripts/container_check.sh looked it up by key themselves."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    pattern = re.compile(r"Key\.RUN_STOP|[\"']run_stop[\"']")
    allowed = {"benchmark/mlperf_log.py",       # the rule itself
               "benchmark/train.py",            # the writer
               "benchmark/results/rules.py"}    # builds records for the official summarizer, reads none
    found = []
    for path in [*root.glob("benchmark/**/*.py"), *root.glob("measure/*.py"), *root.glob("scripts/*"),
                 *root.glob("*.sh"), root / "run.sub"]:
        name = str(path.relative_to(root))
        if name in allowed or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, found
