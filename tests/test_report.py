"""benchmark.results.report: time to train, the official score, trust (compliance, one machine per folder),
warnings on bad logs, JSON, plots and HTML, on logs written by the project's logger with a controlled clock
(tests/mlperf_run_logs.py)."""
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from benchmark.results import logs, report, system_desc
from mlperf_run_logs import write_run_log

TARGET = 0.30
ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "results" / "CPU"


def write_system(folder, runs, **kwargs):
    """runs: (epoch_minutes, wers) per run; returns the log paths."""
    return [write_run_log(folder / f"result_{n}.txt", wers, epoch_minutes=minutes, seed=n, target_wer=TARGET, **kwargs)
            for n, (minutes, wers) in enumerate(runs, 1)]


CONVERGE = [0.9, 0.5, TARGET - 0.01]           # 3 epochs, success
ABORT = [0.9, 0.6, 0.5, 0.45]                  # 4 epochs, aborted


def names(paths):
    return sorted(Path(p).name for p in paths)


def test_score_of_five_runs_with_one_aborted(tmp_path):
    # Time to train = epochs * epoch_minutes (init happens before run_start and is not timed).
    write_system(tmp_path / "CPU", [(1.0, CONVERGE), (1.2, CONVERGE), (1.1, CONVERGE), (1.3, CONVERGE), (0.5, ABORT)])
    built, _ = report.build_report(tmp_path)
    system = built["systems"]["CPU"]
    assert [run["minutes"] for run in system["runs"]] == pytest.approx([3.0, 3.6, 3.3, 3.9, 2.0])
    assert [run["status"] for run in system["runs"]] == ["success"] * 4 + ["aborted"]
    assert [run["counts"] for run in system["runs"]] == [True] * 4 + [False]
    assert [run["epochs"] for run in system["runs"]] == [3, 3, 3, 3, 4]
    score = system["score"]
    # Converged 3.0 3.3 3.6 3.9: drop the fastest (3.0); the aborted run is the slowest, dropped.
    assert score["score_minutes"] == pytest.approx((3.3 + 3.6 + 3.9) / 3)
    assert names(score["counted"]) == ["result_2.txt", "result_3.txt", "result_4.txt"]
    assert names(score["dropped"]) == ["result_1.txt", "result_5.txt"]
    assert "did not converge (run_stop status aborted)" in score["failed"][str(tmp_path / "CPU" / "result_5.txt")]
    assert (score["min_minutes"], score["max_minutes"]) == pytest.approx((3.0, 3.9))
    assert system["quality"]["target"] == "eval_accuracy <= 0.3"
    assert system["quality"]["final_minus_target"] == pytest.approx(-0.01)
    assert score["runs_required"] == 5 and "deepspeech2 closed training 4.1.0" in score["rules"]


def test_too_many_non_converged_runs_give_no_score(tmp_path):
    write_system(tmp_path / "CPU", [(1.0, CONVERGE)] * 3 + [(1.0, ABORT)] * 2)
    score = report.build_report(tmp_path)[0]["systems"]["CPU"]["score"]
    assert score["score_minutes"] is None and score["converged"] == 3
    assert any("at most 1 failed run allowed" in note for note in score["notes"])


def test_success_status_above_target_counts_as_not_converged(tmp_path):
    log = write_run_log(tmp_path / "result_1.txt", [0.9, 0.35], status="success", target_wer=TARGET)
    run = logs.summarize_run(log)
    assert run.status == "success" and not run.converged
    assert any("no eval met the target" in w for w in run.warnings)


def test_fewer_than_three_runs_give_a_provisional_mean_only(tmp_path):
    write_system(tmp_path / "CPU", [(1.0, CONVERGE), (2.0, CONVERGE)])
    score = report.build_report(tmp_path)[0]["systems"]["CPU"]["score"]
    assert score["score_minutes"] is None
    assert score["provisional_mean_minutes"] == pytest.approx(4.5)
    assert any("an official deepspeech2 result has exactly 5" in note for note in score["notes"])


@pytest.mark.parametrize("case", ["two run_stop", "forged eval_accuracy", "missing seed", "two run_start"])
def test_a_log_that_fails_compliance_is_never_scored_silently(tmp_path, case):
    """Four good runs and one bad: the bad one is listed with the checker's reason and counts as the failure
    the rules allow, so the score is that of the four (before: the report counted it as a good run)."""
    good = write_system(tmp_path / "CPU", [(1.0, CONVERGE), (1.1, CONVERGE), (1.2, CONVERGE), (1.3, CONVERGE)])
    bad = tmp_path / "CPU" / "result_5.txt"
    kwargs = {"two run_stop": dict(duplicate={"run_stop"}),
              "forged eval_accuracy": dict(extra_evals=[(3, 0.1)]),
              "missing seed": dict(omit={"seed"}),
              "two run_start": dict(duplicate={"run_start"})}[case]
    write_run_log(bad, CONVERGE, epoch_minutes=0.5, seed=5, target_wer=TARGET, **kwargs)
    built = report.build_report(tmp_path)[0]
    score = built["systems"]["CPU"]["score"]
    assert list(score["failed"]) == [str(bad)]
    assert score["failed"][str(bad)].startswith("fails the compliance checker")
    # 4 converged (3.0, 3.3, 3.6, 3.9) + 1 failed (the slowest): drop 3.0 and the failure.
    assert score["score_minutes"] == pytest.approx((3.3 + 3.6 + 3.9) / 3)
    assert str(bad) in score["dropped"] and str(bad) not in score["counted"]
    assert not built["systems"]["CPU"]["runs"][4]["counts"]
    assert "result_5.txt: fails the compliance checker" in report.format_text(built)
    assert len(good) == 4


def test_two_run_stops_are_invalid_for_every_reader(tmp_path):
    """One rule (benchmark.mlperf_log.timed_region): the report used to take the first run_stop."""
    log = write_run_log(tmp_path / "result_1.txt", CONVERGE, duplicate={"run_stop"})
    run = logs.summarize_run(log)
    assert run.status == "invalid" and run.minutes is None and not run.converged
    assert any("2 run_stop records" in w for w in run.warnings)


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
    # The garbage records also fail the checker (unparsable lines): three runs that count out of six.
    score = built["systems"]["CPU"]["score"]
    assert score["converged"] == 3 and score["score_minutes"] is None and "SCORE none" in out
    assert score["failed"][str(folder / "result_4.txt")].startswith("fails the compliance checker")


def test_a_folder_of_logs_from_two_machines_is_refused(tmp_path):
    """A log records its machine (Key.MACHINE); the published logs predate that record and are taken to be
    from the machine the folder's system_desc.json describes."""
    folder = tmp_path / "CPU"
    shutil.copytree(PUBLISHED, folder)
    assert report.build_report(tmp_path)[0]["systems"]["CPU"]["score"]["score_minutes"] == pytest.approx(7.657, abs=5e-4)
    here = system_desc.identity(system_desc.describe())
    write_run_log(folder / "result_6.txt", CONVERGE, epoch_minutes=2.5, seed=6, machine=here)
    built = report.build_report(tmp_path)[0]
    score = built["systems"]["CPU"]["score"]
    assert score["score_minutes"] is None and score["converged"] == 0
    assert "result_6.txt ran on another machine than the folder's description" in score["notes"][0]
    assert "host_processor_model_name" in score["notes"][0]
    assert not any(run["counts"] for run in built["systems"]["CPU"]["runs"])


def test_logs_of_two_machines_without_a_description_are_refused(tmp_path):
    one = system_desc.identity(system_desc.describe())
    other = dict(one, host_processor_model_name="Some Other CPU", host_processor_vcpu_count="64")
    write_system(tmp_path / "S", [(1.0, CONVERGE)] * 2, machine=one)
    write_run_log(tmp_path / "S" / "result_3.txt", CONVERGE, machine=other)
    score = report.build_report(tmp_path)[0]["systems"]["S"]["score"]
    assert score["score_minutes"] is None and "logs from 2 machines" in score["notes"][0]
    write_run_log(tmp_path / "T" / "result_1.txt", CONVERGE, machine=one)
    write_run_log(tmp_path / "T" / "result_2.txt", CONVERGE)
    assert "record no machine" in report.build_report(tmp_path / "T")[0]["systems"]["T"]["score"]["notes"][0]


def test_the_published_cpu_results_keep_their_score_and_pass_the_checks():
    built = report.build_report(ROOT / "results")[0]
    system = built["systems"]["CPU"]
    assert round(system["score"]["score_minutes"], 3) == 7.657
    assert system["score"]["converged"] == 5 and not system["score"]["failed"]
    assert system["description_check"]["valid"], system["description_check"]
    assert system["rcp"]["passed"] and system["rcp"]["message"] == "RCP found"


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


def test_plot_and_html_are_written_atomically_readable_and_rewritable(tmp_path, capsys):
    write_system(tmp_path / "results" / "CPU", [(1.0, CONVERGE), (1.5, ABORT), (1.2, CONVERGE)])
    plot, page = tmp_path / "out" / "curves.png", tmp_path / "out" / "report.html"
    old_umask = os.umask(0o022)
    try:
        for _ in range(2):   # the second time over the reports it wrote itself
            assert report.main([str(tmp_path / "results"), "--plot", str(plot), "--html", str(page)]) == 0
    finally:
        os.umask(old_umask)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    text = page.read_text()
    assert "data:image/png;base64," in text and "result_2.txt" in text and "SCORE" in text
    assert sorted(p.name for p in plot.parent.iterdir()) == ["curves.png", "report.html"]   # no temp files left
    assert stat.S_IMODE(plot.stat().st_mode) == stat.S_IMODE(page.stat().st_mode) == 0o644


def test_outputs_never_overwrite_a_result_log_or_another_file(tmp_path, capsys):
    """Before: `--html results/CPU/result_1.txt` wrote the page over the log it had just read (exit 0)."""
    paths = write_system(tmp_path / "CPU", [(1.0, CONVERGE)] * 3)
    before = paths[0].read_bytes()
    other = tmp_path / "notes.html"
    other.write_text("my notes\n")
    for flag, target in (("--html", paths[0]), ("--plot", paths[0]), ("--html", other), ("--plot", other),
                         ("--html", tmp_path)):
        assert report.main([str(tmp_path), flag, str(target)]) == 2
    err = capsys.readouterr().err
    assert "is one of the result logs being reported" in err and "is not a report written by" in err
    assert paths[0].read_bytes() == before and other.read_text() == "my notes\n"


def test_no_logs_is_an_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "no result_*.txt logs" in capsys.readouterr().err
