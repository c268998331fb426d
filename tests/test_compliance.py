"""benchmark.results.compliance: the official mlperf_logging checker with our DeepSpeech2 rules, on logs written by
the project's own logger (benchmark.mlperf_log)."""
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.results import compliance
from mlperf_run_logs import write_run_log

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    return compliance.write_rules(tmp_path_factory.mktemp("rules"))


def verdict(path, rules):
    return compliance.check_log(path, rules)


def test_converged_and_aborted_runs_pass(tmp_path, rules):
    good = verdict(write_run_log(tmp_path / "good.txt", [0.9, 0.5, 0.29]), rules)
    assert good.passed, good.reasons
    # A run that stops without reaching the target is a valid log (MLPerf scores count it as non-converged).
    aborted = verdict(write_run_log(tmp_path / "aborted.txt", [0.9, 0.5, 0.4]), rules)
    assert aborted.passed, aborted.reasons


@pytest.mark.parametrize("key", ["seed", "eval_samples", "target_wer", "run_start", "cache_clear", "opt_name"])
def test_missing_key_fails_naming_it(tmp_path, rules, key):
    result = verdict(write_run_log(tmp_path / "log.txt", [0.9, 0.29], omit={key}), rules)
    assert not result.passed
    assert any(key in reason for reason in result.reasons), result.reasons


def test_open_division_frees_hyperparameters_but_not_the_target(tmp_path, rules):
    free = verdict(write_run_log(tmp_path / "free.txt", [0.9, 0.29], division="open", omit={"opt_name"}), rules)
    assert free.passed, free.reasons
    liar = verdict(write_run_log(tmp_path / "liar.txt", [0.9, 0.35], division="open", status="success"), rules)
    assert not liar.passed


def test_two_run_starts_fail(tmp_path, rules):
    result = verdict(write_run_log(tmp_path / "log.txt", [0.9, 0.29], duplicate={"run_start"}), rules)
    assert not result.passed
    assert any("'run_start'" in reason and "2" in reason for reason in result.reasons), result.reasons


def test_run_stop_without_status_fails(tmp_path, rules):
    result = verdict(write_run_log(tmp_path / "log.txt", [0.9, 0.29], run_stop_metadata={}), rules)
    assert not result.passed
    assert any(reason.startswith("run_stop") and "status" in reason for reason in result.reasons), result.reasons


def test_interrupted_run_without_run_stop_fails(tmp_path, rules):
    result = verdict(write_run_log(tmp_path / "log.txt", [0.9, 0.5], stop=False), rules)
    assert not result.passed
    assert any("'run_stop'" in reason for reason in result.reasons), result.reasons


def test_success_with_last_wer_above_target_fails(tmp_path, rules):
    result = verdict(write_run_log(tmp_path / "log.txt", [0.9, 0.35], target_wer=0.30, status="success"), rules)
    assert not result.passed
    assert any("last_wer=0.35" in reason and "target_wer=0.3" in reason for reason in result.reasons), result.reasons


def test_wer_equal_to_target_converges(tmp_path, rules):
    result = verdict(write_run_log(tmp_path / "log.txt", [0.9, 0.30], target_wer=0.30, status="success"), rules)
    assert result.passed, result.reasons


def test_stop_condition_bugs_fail(tmp_path, rules):
    # Training went on after an eval already met the target...
    late = verdict(write_run_log(tmp_path / "late.txt", [0.9, 0.25, 0.2], target_wer=0.30), rules)
    assert not late.passed and any("target_reached_epoch" in r for r in late.reasons), late.reasons
    # ...or stopped as 'aborted' although it converged (the TensorFlow deep_speech inverted test).
    aborted = verdict(write_run_log(tmp_path / "ab.txt", [0.9, 0.25], target_wer=0.30, status="aborted"), rules)
    assert not aborted.passed and any("aborted" in r for r in aborted.reasons), aborted.reasons


def test_other_benchmark_and_truncated_line_fail(tmp_path, rules):
    rnnt = verdict(write_run_log(tmp_path / "rnnt.txt", [0.9, 0.29], benchmark_name="rnnt"), rules)
    assert not rnnt.passed and any("submission_benchmark" in r for r in rnnt.reasons), rnnt.reasons
    path = write_run_log(tmp_path / "cut.txt", [0.9, 0.29])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1][:60]]) + "\n")   # run_stop record cut mid-JSON
    cut = verdict(path, rules)
    assert not cut.passed and any("unparsable" in r for r in cut.reasons), cut.reasons


def test_required_target_and_eval_samples(tmp_path):
    log = write_run_log(tmp_path / "log.txt", [0.9, 0.29], target_wer=0.30, eval_samples=100)
    ok, = compliance.check_logs([log], target_wer=0.30, eval_samples=100)
    assert ok.passed, ok.reasons
    bad, = compliance.check_logs([log], target_wer=0.23, eval_samples=2703)
    assert not bad.passed
    assert {r.split(" ")[0] for r in bad.reasons} == {"target_wer", "eval_samples"}, bad.reasons


def test_cli_verdicts_and_exit_code(tmp_path, capsys):
    good = write_run_log(tmp_path / "good.txt", [0.9, 0.29])
    bad = write_run_log(tmp_path / "bad.txt", [0.9, 0.29], omit={"seed"})
    assert compliance.main([str(good)]) == 0
    assert compliance.main([str(good), str(bad), str(tmp_path / "missing.txt")]) == 1
    out = capsys.readouterr().out
    assert f"PASS  {good}" in out and f"FAIL  {bad}" in out and "no such file" in out
    assert "1 of 3 logs pass" in out


def test_official_cli_agrees_with_written_rules(tmp_path):
    """The resolved rules run unchanged in `python -m mlperf_logging.compliance_checker`."""
    rules = tmp_path / "rules"
    assert compliance.main(["--write-rules", str(rules)]) == 0
    good = write_run_log(tmp_path / "good.txt", [0.9, 0.29])
    bad = write_run_log(tmp_path / "bad.txt", [0.9, 0.35], status="success")
    codes = []
    for log in (good, bad):
        proc = subprocess.run(
            [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset",
             compliance.RULESET, "--werror", "--config", str(rules / "common.yaml"),
             "--log_output", str(tmp_path / "checker.log"), str(log)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        codes.append(proc.returncode)
    assert codes[0] == 0 and codes[1] != 0, codes


def test_write_rules_refuses_paths_that_break_the_yaml_code(tmp_path):
    with pytest.raises(ValueError, match="quotes"):
        compliance.write_rules(tmp_path / "it's")
