"""benchmark.results.report: time to train, olympic score, warnings on bad logs, JSON, plots and HTML, on logs
written by the project's logger with a controlled clock (tests/mlperf_run_logs.py)."""
import json

import pytest

from benchmark.results import logs, report, scoring
from mlperf_run_logs import START_MS, write_run_log

TARGET = 0.30


def write_system(folder, runs):
    """runs: (epoch_minutes, wers) per run; returns the log paths."""
    return [write_run_log(folder / f"result_{n}.txt", wers, epoch_minutes=minutes, seed=n, target_wer=TARGET)
            for n, (minutes, wers) in enumerate(runs, 1)]


CONVERGE = [0.9, 0.5, TARGET - 0.01]           # 3 epochs, success
ABORT = [0.9, 0.6, 0.5, 0.45]                  # 4 epochs, aborted


def test_score_of_five_runs_with_one_aborted(tmp_path):
    # Time to train = epochs * epoch_minutes (init happens before run_start and is not timed).
    paths = write_system(tmp_path / "CPU", [(1.0, CONVERGE), (1.2, CONVERGE), (1.1, CONVERGE), (1.3, CONVERGE),
                                            (0.5, ABORT)])
    built, _ = report.build_report(tmp_path)
    system = built["systems"]["CPU"]
    assert [run["minutes"] for run in system["runs"]] == pytest.approx([3.0, 3.6, 3.3, 3.9, 2.0])
    assert [run["status"] for run in system["runs"]] == ["success"] * 4 + ["aborted"]
    assert [run["epochs"] for run in system["runs"]] == [3, 3, 3, 3, 4]
    score = system["score"]
    # Converged 3.0 3.3 3.6 3.9: drop the fastest (3.0); the aborted run is the slowest, dropped.
    assert score["score_minutes"] == pytest.approx((3.3 + 3.6 + 3.9) / 3)
    assert sorted(score["counted"]) == sorted(map(str, [paths[1], paths[2], paths[3]]))
    assert sorted(score["dropped"]) == sorted(map(str, [paths[0], paths[4]]))
    assert (score["min_minutes"], score["max_minutes"]) == pytest.approx((3.0, 3.9))
    assert system["quality"]["target"] == TARGET
    assert system["quality"]["final_minus_target"] == pytest.approx(-0.01)


def test_all_converged_drops_fastest_and_slowest(tmp_path):
    write_system(tmp_path / "S", [(m, CONVERGE) for m in (2.0, 1.0, 5.0, 3.0, 4.0)])
    score = report.build_report(tmp_path / "S")[0]["systems"]["S"]["score"]   # a system folder given directly
    assert score["score_minutes"] == pytest.approx(3 * (2.0 + 3.0 + 4.0) / 3)


def test_too_many_non_converged_runs_give_no_score(tmp_path):
    write_system(tmp_path / "CPU", [(1.0, CONVERGE), (1.0, CONVERGE), (1.0, CONVERGE), (1.0, ABORT), (1.0, ABORT)])
    score = report.build_report(tmp_path)[0]["systems"]["CPU"]["score"]
    assert score["score_minutes"] is None and score["converged"] == 3
    assert any("no score" in note for note in score["notes"])


def test_success_status_above_target_counts_as_not_converged(tmp_path):
    log = write_run_log(tmp_path / "result_1.txt", [0.9, 0.35], status="success", target_wer=TARGET)
    run = logs.summarize_run(log)
    assert run.status == "success" and not run.converged
    assert any("misses the target" in w for w in run.warnings)


def test_fewer_than_three_runs_give_a_provisional_mean_only(tmp_path):
    write_system(tmp_path / "CPU", [(1.0, CONVERGE), (2.0, CONVERGE)])
    score = report.build_report(tmp_path)[0]["systems"]["CPU"]["score"]
    assert score["score_minutes"] is None
    assert score["provisional_mean_minutes"] == pytest.approx(4.5)


@pytest.mark.parametrize("times,non_converged,expected", [
    ([1, 2, 3], 0, 2), ([1, 2], 1, 2), ([4, 1, 3, 2], 1, 3), ([1, 2, 3, 4, 5], 0, 3), ([1, 2, 3], 2, None)])
def test_olympic_mean(times, non_converged, expected):
    assert scoring.olympic_mean(times, non_converged) == expected


def test_bad_lines_prefixes_foreign_keys_and_interrupted_runs_are_warnings(tmp_path, capsys):
    folder = tmp_path / "CPU"
    write_system(folder, [(1.0, CONVERGE), (1.0, CONVERGE), (1.0, CONVERGE)])
    # A launcher prefix on every line, stray output, a foreign key, garbage records.
    good = write_run_log(folder / "result_4.txt", CONVERGE, epoch_minutes=2.0)
    lines = [f"0: {line}" for line in good.read_text().splitlines()]
    lines[5:5] = ["Traceback? no, just stdout noise", ':::MLLOG {"key": "vendor_knob", "time_ms": 1, "value": 3}',
                  ":::MLLOG {garbage", ':::MLLOG {"value": 1}', ':::MLLOG {"key": "x", "time_ms": "soon"}']
    good.write_text("\n".join(lines) + "\n")
    # An interrupted run: its last record cut in the middle, no run_stop.
    cut = write_run_log(folder / "result_5.txt", [0.9, 0.5], stop=False)
    cut.write_text(cut.read_text() + ':::MLLOG {"namespace": "", "time_ms": 17')
    (folder / "result_6.txt").write_bytes(b"\x00\xff\xfe binary junk")
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    built = report.build_report(tmp_path)[0]
    runs = {run["path"].rsplit("/", 1)[1]: run for run in built["systems"]["CPU"]["runs"]}
    assert runs["result_4.txt"]["status"] == "success" and runs["result_4.txt"]["minutes"] == pytest.approx(6.0)
    assert runs["result_5.txt"]["status"] == "interrupted" and runs["result_5.txt"]["minutes"] is None
    assert runs["result_6.txt"]["status"] == "unreadable"
    warnings = "\n".join(built["warnings"])
    for expected in ("vendor_knob", "unreadable MLLOG record '{garbage'", "without a key", "without a valid time_ms",
                     "truncated?", "interrupted", "result_6.txt: no MLLOG records"):
        assert expected in warnings and expected.split("'")[0] in out, expected
    # Two non-converged runs out of six: no score, and the report says why.
    assert built["systems"]["CPU"]["score"]["score_minutes"] is None and "SCORE none" in out


def test_reads_another_benchmarks_log(tmp_path):
    """A BERT-style log: launcher prefix, samples_count instead of epoch_num, higher-is-better accuracy and
    no target in the log (taken from mlperf_logging's rules)."""
    records = [("submission_benchmark", "bert", {}), ("train_samples", 1000, {}), ("run_start", None, {}),
               ("eval_accuracy", 0.70, {"samples_count": 500}), ("eval_accuracy", 0.725, {"samples_count": 1500}),
               ("run_stop", None, {"status": "success"})]
    path = tmp_path / "bert" / "result_0.txt"
    path.parent.mkdir()
    path.write_text("".join(
        f'[1,0]<stdout>::::MLLOG {json.dumps({"time_ms": START_MS + 30_000 * i, "key": k, "value": v, "metadata": m})}\n'
        for i, (k, v, m) in enumerate(records)))
    run = logs.summarize_run(path)
    assert (run.benchmark, run.target, run.lower_is_better, run.converged) == ("bert", 0.72, False, True)
    assert run.minutes == pytest.approx(1.5) and run.epochs == pytest.approx(1.5)
    assert [e.epoch for e in run.evals] == pytest.approx([0.5, 1.5])


def test_json_output_and_comparison_between_systems(tmp_path, capsys):
    write_system(tmp_path / "slow", [(2.0, CONVERGE)] * 3)
    write_system(tmp_path / "fast", [(0.5, CONVERGE)] * 3)
    assert report.main([str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["systems"]) == {"slow", "fast"}
    assert data["systems"]["fast"]["score"]["score_minutes"] == pytest.approx(1.5)
    assert data["comparison"]["baseline"] == "slow"
    assert data["comparison"]["speedup_vs_baseline"]["fast"] == pytest.approx(4.0)
    assert data["comparison"]["time_ratio"]["slow"]["fast"] == pytest.approx(4.0)
    evals = data["systems"]["slow"]["runs"][0]["evals"]
    assert [e["epoch"] for e in evals] == [1, 2, 3] and evals[-1]["value"] == pytest.approx(TARGET - 0.01)


def test_plot_and_html_are_written(tmp_path, capsys):
    write_system(tmp_path / "results" / "CPU", [(1.0, CONVERGE), (1.5, ABORT), (1.2, CONVERGE)])
    plot, page = tmp_path / "out" / "curves.png", tmp_path / "out" / "report.html"
    assert report.main([str(tmp_path / "results"), "--plot", str(plot), "--html", str(page)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    text = page.read_text()
    assert "data:image/png;base64," in text and "result_2.txt" in text and "SCORE" in text
    assert sorted(p.name for p in plot.parent.iterdir()) == ["curves.png", "report.html"]   # no temp files left


def test_no_logs_is_an_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "no result_*.txt logs" in capsys.readouterr().err
