"""End to end on a tiny real corpus: a few steps, one evaluation per epoch, and the MLPerf log's events."""
import subprocess
import sys

import pytest

from benchmark import mlperf_log
from benchmark.results import system_desc

SMALL_MODEL = ["--features", "logmel", "--n_mels", "40", "--rnn_type", "gru", "--rnn_hidden_size", "32",
               "--rnn_layers", "2", "--conv_channels", "4", "--time_stride", "4", "--batch_size", "4",
               "--eval_batch_size", "8", "--num_threads", "1", "--num_workers", "0", "--log_every", "0"]


def read_log(path):
    """The log's records as dicts (key, value, metadata, time_ms, line), through the project's one reader."""
    records, warnings = mlperf_log.read_log(path)
    assert not warnings, warnings
    return [vars(r) for r in records]


def run_train(corpus, tmp_path, *extra):
    log_file = tmp_path / "result_1.txt"
    cmd = [sys.executable, "-m", "benchmark.train", "--train_data_dir", str(corpus / "train.csv"),
           "--eval_data_dir", str(corpus / "dev.csv"), "--output_dir", str(tmp_path / "out"),
           "--log_file", str(log_file), *SMALL_MODEL, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return done, log_file


@pytest.mark.parametrize("backend", ["torch"])
def test_train_two_epochs_logs_every_mlperf_event(tiny_corpus, tmp_path, backend):
    done, log_file = run_train(tiny_corpus, tmp_path, "--max_epochs", "2", "--target_wer", "0.05",
                               "--data_backend", backend, "--model_dir", str(tmp_path / "ckpt"))
    assert done.returncode == 3, done.stderr   # target not reached in 2 epochs: aborted
    events = read_log(log_file)
    keys = [e["key"] for e in events]
    for key in ("cache_clear", "init_start", "submission_benchmark", "submission_org", "submission_division",
                "submission_status", "submission_platform", "seed", "global_batch_size", "opt_name",
                "opt_base_learning_rate", "target_wer", "train_samples", "eval_samples", "init_stop",
                "run_start", "run_stop"):
        assert keys.count(key) == 1, key
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("epoch_start")
    for key in ("epoch_start", "epoch_stop", "eval_start", "eval_accuracy", "eval_stop"):
        assert keys.count(key) == 2, key
    accuracies = [e for e in events if e["key"] == "eval_accuracy"]
    assert [e["metadata"]["epoch_num"] for e in accuracies] == [1, 2]
    assert all(0.0 <= e["value"] for e in accuracies)
    by_key = {e["key"]: e for e in events}
    assert by_key["eval_samples"]["value"] == 6 and by_key["train_samples"]["value"] == 16
    assert by_key["run_stop"]["metadata"]["status"] == "aborted"
    assert by_key["submission_benchmark"]["value"] == "deepspeech2"
    # Throughput per epoch: useful model TFLOP/s against the matmul peak measured in the run (benchmark/flops.py).
    throughput = [e for e in events if e["key"] == "train_throughput"]
    assert [e["metadata"]["epoch_num"] for e in throughput] == [1, 2]
    for e in throughput:
        meta = e["metadata"]
        assert e["value"] > 0 and meta["precision"] == "fp32" and 0 < meta["useful_tflop"] <= meta["padded_tflop"]
        assert 0 < meta["fraction_of_peak"] < 1.5 and meta["matmul_peak_tflop_per_second"] > 0
        assert meta["fraction_of_peak"] == pytest.approx(e["value"] / meta["matmul_peak_tflop_per_second"], rel=1e-3)
    # The machine the run ran on, as benchmark.results.system_desc identifies it (a CPU run, one node).
    assert keys.count("machine") == 1 and keys.index("init_start") < keys.index("machine") < keys.index("init_stop")
    assert by_key["machine"]["value"] == system_desc.identity(system_desc.describe(0, nodes=1))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint_epoch0001.pt",
                                                                      "checkpoint_epoch0002.pt"]


@pytest.mark.parametrize("flag,value,message", [
    ("--batch_size", "-1", "--batch_size"), ("--target_wer", "1.5", "--target_wer"),
    ("--sortagrad", "yes", "--sortagrad"), ("--amp", ":true", "--amp"), ("--no_such_flag", "1", "--no_such_flag")])
def test_bad_flags_fail_before_init_start(tiny_corpus, tmp_path, flag, value, message):
    done, log_file = run_train(tiny_corpus, tmp_path, flag, value)
    assert done.returncode == 2 and message in done.stderr
    assert not log_file.exists()


def test_missing_and_empty_manifest_named(tiny_corpus, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("wav_filename,wav_filesize,transcript\n")
    for manifest, message in ((tmp_path / "missing.csv", "manifest not found"), (empty, "no utterances")):
        log_file = tmp_path / "log.txt"
        done = subprocess.run([sys.executable, "-m", "benchmark.train", "--train_data_dir", str(manifest),
                               "--eval_data_dir", str(tiny_corpus / "dev.csv"), "--log_file", str(log_file)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and str(manifest) in done.stderr and message in done.stderr
        assert not log_file.exists()
