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
