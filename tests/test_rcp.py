"""benchmark.results.rcp: our RCP test agrees with mlperf_logging's rcp_checker on the checker's own RCP data,
DeepSpeech2's RCPs come from the published runs, and a recipe converging faster than they allow is flagged."""
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlperf_logging.rcp_checker import rcp_checker

from benchmark.results import logs, rcp, report, rules
import official_logs
from mlperf_run_logs import write_run_log

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "results" / "CPU"
# The checker cannot load these: benchmarks missing from its submission_runs table (dlrm, and
# stable_diffusion 3.1.0, whose records name "sd"), and llama31_405b, whose max speed-up it
# offsets by 46080 samples from 5.0.0 on (not implemented here: no DeepSpeech2 rule needs it).
OFFICIAL_FILES = [p for p in sorted(rules.RCP_DIR.glob("training_*/rcps_*.json"))
                  if next(iter(json.loads(p.read_text()).values()))["Benchmark"] in rcp_checker.submission_runs["training"]
                  and "llama31_405b" not in p.name]


@functools.lru_cache(maxsize=None)
def official_checker(path):
    raw = next(iter(json.loads(Path(path).read_text()).values()))
    with open(path) as f:
        return rcp_checker.RCP_Checker("training", Path(path).parent.name.split("_")[1], raw["Benchmark"], False, f)


def official_verdict(monkeypatch, tmp_path, path, batch_size, epochs):
    """rcp_checker.check_directory's own verdict for these epochs (its log reading replaced, nothing else)."""
    checker = official_checker(path)
    monkeypatch.setattr(rcp_checker, "get_submission_epochs", lambda *a, **k: (batch_size, list(epochs), checker.benchmark))
    monkeypatch.setattr(rcp_checker, "RCP_Checker", lambda *a, **k: checker)
    passed, message, norm = rcp_checker.check_directory(str(tmp_path), "training", checker.ruleset, False, False,
                                                        rcp_pass="pruned_rcps")
    return passed, message, norm


def test_the_official_rcp_files_are_many():
    assert len(OFFICIAL_FILES) >= 70


@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_records_pruning_and_verdicts_agree_with_rcp_checker(monkeypatch, tmp_path, path):
    checker = official_checker(path)
    benchmark = checker.benchmark
    ours = rcp.references(json.loads(path.read_text()), benchmark)
    for ref in ours:
        theirs = checker.rcp_data[ref.name]
        assert ref.mean == pytest.approx(theirs["RCP Mean"], rel=1e-12)
        assert ref.stdev == pytest.approx(theirs["RCP Stdev"], rel=1e-12)
        assert ref.min_epochs == pytest.approx(theirs["Min Epochs"], rel=1e-12)
    assert {r.name for r in rcp.prune(ours, benchmark)} == set(checker.pruned_rcp_data)
    sizes = sorted({r.batch_size for r in ours})
    probes = {sizes[0] // 2, sizes[-1] * 2} | set(sizes) | {(a + b) // 2 for a, b in zip(sizes, sizes[1:])}
    runs = rcp.submission_runs(benchmark)
    for batch_size in sorted(probes):
        for factor in (0.5, 0.97, 1.0, 1.03):
            base = min(ours, key=lambda r: abs(r.batch_size - batch_size))
            epochs = [base.mean * factor] * runs
            expected = official_verdict(monkeypatch, tmp_path, path, batch_size, epochs)
            got = rcp.test(ours, batch_size, epochs, benchmark)
            assert (got.passed, got.message) == expected[:2], (batch_size, factor)
            assert got.norm_factor == pytest.approx(expected[2], rel=1e-9)


def test_the_official_cli_and_ours_agree_on_a_folder_of_logs(tmp_path):
    """End to end on logs: ssd 4.1.0 at batch 256 (RCP mean 4.0, no spread: 4 epochs pass, 3 fail)."""
    for epochs, passes in ((4, True), (3, False)):
        folder = tmp_path / f"e{epochs}"
        for i in range(5):
            official_logs.write_log(folder / f"result_{i}.txt", "ssd", "4.1.0", epochs=epochs, seed=i,
                                    overrides={"global_batch_size": 256})
        proc = subprocess.run([sys.executable, "-m", "mlperf_logging.rcp_checker", str(folder), "--rcp_version", "4.1.0",
                               "--log_output", str(tmp_path / "rcp.log")], capture_output=True, text=True, timeout=120)
        runs = [logs.summarize_run(p, "4.1.0") for p in logs.result_logs(folder)]
        verdict = rcp.check_system(runs, "ssd", "4.1.0")
        assert (proc.returncode == 0) == verdict.passed == passes, proc.stdout + proc.stderr
        assert verdict.message == "RCP found" and verdict.submission_mean == epochs


def test_deepspeech2_rcps_are_the_published_runs():
    records, notes = rcp.build([PUBLISHED])
    committed = json.loads(rcp.DEFAULT_FILE.read_text())
    assert set(records) == set(committed) == {"deepspeech2_ref_16"}
    record = committed["deepspeech2_ref_16"]
    assert record["BS"] == 16 and sorted(record["Epochs to converge"]) == [2, 2, 2, 2, 3]
    assert records["deepspeech2_ref_16"]["Epochs to converge"] == record["Epochs to converge"]
    assert records["deepspeech2_ref_16"]["Hyperparams"] == record["Hyperparams"]
    assert record["Hyperparams"]["opt_base_learning_rate"] == 0.003
    assert any("MLPerf asks for 10" in n for n in notes)


def test_the_official_checker_reads_our_rcp_file_and_agrees(monkeypatch, tmp_path):
    """rcp_checker refuses deepspeech2 (KeyError, even with --custom_rcps); given a submission count it
    takes our file in the --custom_rcps format and gives our verdicts."""
    with pytest.raises(KeyError, match="deepspeech2"):
        with open(rcp.DEFAULT_FILE) as f:
            rcp_checker.check_directory(str(PUBLISHED), "training", "4.1.0", False, False, rcp_file=f,
                                        rcp_pass="pruned_rcps")
    monkeypatch.setitem(rcp_checker.submission_runs["training"], "deepspeech2", 5)
    fast = tmp_path / "fast"
    for n in range(1, 6):   # a recipe that reaches the target after one epoch
        write_run_log(fast / f"result_{n}.txt", [0.29], seed=n, global_batch_size=16)
    for folder, passes in ((PUBLISHED, True), (fast, False)):
        with open(rcp.DEFAULT_FILE) as f:
            passed, message, _ = rcp_checker.check_directory(str(folder), "training", "4.1.0", False, False, rcp_file=f,
                                                             rcp_pass="pruned_rcps")
        runs = [logs.summarize_run(p) for p in logs.result_logs(folder)]
        ours = rcp.check_system(runs, "deepspeech2", "4.1.0")
        assert (passed, message) == (ours.passed, ours.message) == (passes, "RCP found")
    assert (PUBLISHED / "scaling.json").exists() is False


def test_a_recipe_converging_in_fewer_epochs_than_the_reference_allows_is_flagged(tmp_path, capsys):
    for n in range(1, 6):
        write_run_log(tmp_path / "S" / f"result_{n}.txt", [0.29], seed=n, epoch_minutes=3.0, global_batch_size=16)
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "RCP: FAIL (RCP found)" in out and "at least 1.3037 allowed" in out
    assert "FLAG: converges in fewer epochs than the reference distribution allows" in out


def test_published_cpu_runs_pass_their_rcp(capsys):
    assert rcp.main(["check", str(PUBLISHED)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"PASS  {PUBLISHED}: RCP found") and "mean epochs to target 2.0000" in out


def test_build_refuses_mixed_recipes(tmp_path):
    folder = tmp_path / "S"
    shutil.copytree(PUBLISHED, folder)
    log = folder / "result_1.txt"
    log.write_text(log.read_text().replace('"opt_base_learning_rate", "value": 0.003', '"opt_base_learning_rate", "value": 0.004'))
    with pytest.raises(ValueError, match="hyperparameters differ"):
        rcp.build([folder])
