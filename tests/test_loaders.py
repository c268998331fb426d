"""Every data backend gives the same batch contract and features; everything works with DALI absent.

Backends are parametrized (lhotse style): the DALI ones skip with a reason where DALI is not installed.
One test hides `nvidia.dali` behind an empty `nvidia` package on PYTHONPATH and trains with the fallback.
"""
from dataclasses import fields
import os
import subprocess
import sys

import pytest
import torch

from benchmark.config import ConfigError, TrainConfig, parse_config
from benchmark.data.backends import BACKENDS as BACKEND_TABLE, BackendError, dali_available, resolve_backend
from benchmark.data.manifest import read_manifest
from benchmark.data.torch_loader import load_audio
from benchmark.features import FeatureSpec, compute_features
from benchmark.plan import make_plan
from benchmark.text import encode

from test_train_e2e import read_log, run_train

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed (requirements-dali.txt)")
BACKENDS = ["torch", pytest.param("dali_cpu", marks=[pytest.mark.dali, needs_dali])]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loader_for(backend, utterances, spec, workers=1):
    config = TrainConfig(data_backend=backend, num_workers=workers, seed=1, features=spec.kind, n_mels=spec.n_mels,
                         num_gpus=0)
    plan = make_plan(config)
    assert plan.backend.name == backend and plan.feature_spec == spec
    return plan.build_loader(utterances, train=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_gives_the_batch_contract_in_the_given_order(tiny_corpus, backend):
    utterances = read_manifest(tiny_corpus / "train.csv")
    spec = FeatureSpec("logmel", 40)
    order = [[5, 0, 11], [2], [15, 8, 3, 9]]
    loader = loader_for(backend, utterances, spec)
    assert isinstance(loader, BACKEND_TABLE[backend].loader_class())
    batches = list(loader.batches(order))
    assert len(batches) == len(order)
    for batch, indices in zip(batches, order):
        assert batch.features.dtype == torch.float32 and batch.features.shape[:2] == (len(indices), 40)
        assert batch.features.shape[2] == int(batch.feature_lengths.max())
        for k, i in enumerate(indices):
            ref = compute_features(load_audio(utterances[i].path), spec)
            n = int(batch.feature_lengths[k])
            assert n == ref.shape[1]
            assert (batch.features[k, :, :n] - ref).abs().max().item() <= 1e-3
            assert not batch.features[k, :, n:].any()
            target = encode(utterances[i].transcript)
            assert batch.targets[k, :len(target)].tolist() == target and int(batch.target_lengths[k]) == len(target)


@needs_dali
@pytest.mark.dali
def test_auto_picks_the_fastest_backend_and_dali_gpu_needs_a_gpu():
    assert resolve_backend("auto", torch.device("cpu")).name == "torch"      # see featurize_throughput.py
    assert resolve_backend("auto", torch.device("cuda")).name == "dali_gpu"
    assert resolve_backend("dali_cpu", torch.device("cpu")).name == "dali_cpu"
    with pytest.raises(RuntimeError, match="needs a GPU"):
        resolve_backend("dali_gpu", torch.device("cpu"))


def test_backend_table_gives_the_flag_choices_and_unknown_names_fail():
    choices = next(f.metadata["choices"] for f in fields(TrainConfig) if f.name == "data_backend")
    assert choices == ["auto", *BACKEND_TABLE]
    assert {n for n, b in BACKEND_TABLE.items() if b.speed_perturbation} == {"dali_gpu", "dali_cpu"}
    assert [n for n, b in BACKEND_TABLE.items() if b.needs_cuda] == ["dali_gpu"]
    with pytest.raises(BackendError, match="unknown; choose one of auto, dali_gpu, dali_cpu, torch"):
        resolve_backend("tpu", "cpu")


@pytest.mark.parametrize("value,message", [("0.9", "LOW,HIGH"), ("1.1,0.9", "LOW <= HIGH"), ("a,b", "LOW,HIGH")])
def test_bad_speed_perturbation_named(value, message):
    with pytest.raises(SystemExit):
        parse_config(["--train_data_dir", "t.csv", "--eval_data_dir", "d.csv", "--speed_perturbation", value])
    with pytest.raises(ValueError, match=message):
        TrainConfig(train_data_dir="t.csv", eval_data_dir="d.csv", speed_perturbation=value).validate()


@pytest.mark.parametrize("backend", BACKENDS)
def test_speed_perturbation_reaches_dali_training_loaders_only(tiny_corpus, backend):
    utterances = read_manifest(tiny_corpus / "train.csv")
    config = TrainConfig(data_backend=backend, num_workers=1, speed_perturbation="0.9,1.1", features="logmel",
                         n_mels=40, num_gpus=0)
    if backend == "torch":
        with pytest.raises(ConfigError, match="needs a DALI backend"):
            make_plan(config)
        return
    plan = make_plan(config)
    train = plan.build_loader(utterances, train=True)
    evaluation = plan.build_loader(utterances, train=False)
    assert train.speed_perturbation == (0.9, 1.1) and evaluation.speed_perturbation is None


@pytest.mark.dali
@needs_dali
def test_train_two_epochs_with_dali_cpu_logs_data_wait(tiny_corpus, tmp_path):
    done, log_file = run_train(tiny_corpus, tmp_path, "--max_epochs", "2", "--target_wer", "0.05",
                               "--data_backend", "dali_cpu", "--num_workers", "1")
    assert done.returncode == 3, done.stderr   # trained both epochs, target out of reach: aborted
    events = read_log(log_file)
    config = next(e for e in events if e["key"] == "model_config")
    assert config["value"]["backend"] == "dali_cpu"
    waits = [e for e in events if e["key"] == "data_wait_seconds"]
    assert [e["metadata"]["epoch_num"] for e in waits] == [1, 2]
    assert all(0 <= e["metadata"]["fraction"] <= 1 for e in waits)
    losses = [e["value"] for e in events if e["key"] == "train_loss"]
    assert len(losses) == 2 and all(v == v and v > 0 for v in losses)   # finite, positive CTC loss
    assert len([e for e in events if e["key"] == "eval_accuracy"]) == 2


def hide_dali(tmp_path):
    """Environment whose PYTHONPATH starts with an empty regular `nvidia` package: `nvidia.dali` is gone."""
    shadow = tmp_path / "no_dali"
    (shadow / "nvidia").mkdir(parents=True)
    (shadow / "nvidia" / "__init__.py").write_text("# stands in for a machine without NVIDIA DALI\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), REPO]))


CHECK_WITHOUT_DALI = """
import torch
try:
    import nvidia.dali
    raise SystemExit("nvidia.dali still importable")
except ImportError:
    pass
from benchmark.data.backends import dali_available, resolve_backend
assert not dali_available()
assert resolve_backend("auto", torch.device("cpu")).name == "torch"
assert resolve_backend("auto", torch.device("cuda")).name == "torch"
try:
    resolve_backend("dali_cpu", torch.device("cpu"))
    raise SystemExit("dali_cpu accepted without DALI")
except RuntimeError as error:
    assert "not installed" in str(error) and "--data_backend torch" in str(error), error
print("ok")
"""


def test_without_dali_auto_resolves_to_torch_and_training_works(tiny_corpus, tmp_path):
    env = hide_dali(tmp_path)
    done = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_DALI], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr + done.stdout
    log_file = tmp_path / "result_1.txt"
    cmd = [sys.executable, "-m", "benchmark.train", "--train_data_dir", str(tiny_corpus / "train.csv"),
           "--eval_data_dir", str(tiny_corpus / "dev.csv"), "--output_dir", str(tmp_path / "out"),
           "--log_file", str(log_file), "--features", "logmel", "--n_mels", "40", "--rnn_type", "gru",
           "--rnn_hidden_size", "32", "--rnn_layers", "1", "--conv_channels", "4", "--time_stride", "4",
           "--batch_size", "8", "--num_threads", "1", "--num_workers", "0", "--log_every", "0",
           "--max_epochs", "1", "--target_wer", "0.05"]   # --data_backend left at auto
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    events = read_log(log_file)
    assert next(e for e in events if e["key"] == "model_config")["value"]["backend"] == "torch"
    assert [e["key"] for e in events].count("eval_accuracy") == 1
