"""DALI pipeline vs the reference feature maths, on real espeak-ng WAVs and a FLAC made from one with sox.

Skipped (with the reason) where NVIDIA DALI is not installed; the GPU case also needs CUDA.
"""
import importlib.util
from pathlib import Path
import subprocess

import numpy as np
import pytest
import torch

from benchmark.data.backends import dali_available
from benchmark.data.manifest import Utterance, read_manifest
from benchmark.data.torch_loader import load_audio
from benchmark.features import FeatureSpec, compute_features, num_frames
from benchmark.text import encode

pytestmark = [pytest.mark.dali,
              pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed (requirements-dali.txt)")]

SPECS = [FeatureSpec("spectrogram"), FeatureSpec("logmel", 80), FeatureSpec("logmel", 40)]


@pytest.fixture(scope="module")
def corpus(tiny_corpus, tmp_path_factory):
    """The tiny corpus' utterances plus one of them again as FLAC."""
    utterances = read_manifest(tiny_corpus / "train.csv")
    flac = tmp_path_factory.mktemp("flac") / "utt3.flac"
    subprocess.run(["sox", str(utterances[3].path), str(flac)], check=True)
    return utterances + [Utterance(flac, flac.stat().st_size, utterances[3].transcript)]


def reference(utterance, spec):
    return compute_features(load_audio(utterance.path), spec)


def dali_loader(utterances, spec, **kwargs):
    from benchmark.data.dali_loader import DaliLoader
    return DaliLoader(utterances, spec, "cpu", workers=2, **kwargs)


def assert_batch_matches(batch, indices, utterances, spec):
    """Contract and parity for one batch: dtypes, shapes, zero padding, features within 1e-3, targets."""
    assert batch.features.dtype == torch.float32 and batch.feature_lengths.dtype == torch.int64
    assert batch.targets.dtype == torch.int64 and batch.target_lengths.dtype == torch.int64
    assert batch.features.shape[:2] == (len(indices), spec.num_features)
    assert batch.features.shape[2] == int(batch.feature_lengths.max())
    for k, i in enumerate(indices):
        ref = reference(utterances[i], spec)
        length = int(batch.feature_lengths[k])
        assert length == ref.shape[1], utterances[i].path
        assert (batch.features[k, :, :length] - ref).abs().max().item() <= 1e-3, utterances[i].path
        assert not batch.features[k, :, length:].any()
        target = encode(utterances[i].transcript)
        assert int(batch.target_lengths[k]) == len(target)
        assert batch.targets[k, :len(target)].tolist() == target and not batch.targets[k, len(target):].any()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}{s.num_features}")
def test_dali_cpu_features_match_reference_in_the_given_order(corpus, spec):
    # Variable sizes, a partial last batch, the FLAC next to its WAV, no sorting by length.
    order = [[16, 3, 0], [5, 1, 9, 12], [15, 2], [7]]
    loader = dali_loader(corpus, spec)
    batches = list(loader.batches(order))
    assert len(batches) == len(order)
    for batch, indices in zip(batches, order):
        assert_batch_matches(batch, indices, corpus, spec)
    # FLAC decodes to the same samples as the WAV it was made from.
    flac_row, wav_row = batches[0].features[0], batches[0].features[1]
    assert torch.equal(flac_row, wav_row)


def test_epochs_reuse_the_pipeline_and_an_abandoned_epoch_leaves_nothing_behind(corpus):
    spec = FeatureSpec("logmel", 40)
    loader = dali_loader(corpus, spec)
    first = [[0, 1], [2, 3], [4, 5], [6, 7]]
    batches = loader.batches(first)
    next(batches)
    batches.close()   # e.g. an exception in the training step; DALI had prefetched two more batches
    second = [[10], [11, 12, 13]]
    for batch, indices in zip(loader.batches(second), second):
        assert_batch_matches(batch, indices, corpus, spec)
    # A larger batch than any before rebuilds the pipeline with room for it.
    third = [list(range(17))]
    for batch, indices in zip(loader.batches(third), third):
        assert_batch_matches(batch, indices, corpus, spec)


def test_files_are_read_ahead_off_the_training_loops_thread(corpus, monkeypatch):
    import threading
    from benchmark.data import dali_loader as module
    reads, real_read = [], module._read_files

    def recording_read(paths):
        reads.append((threading.current_thread().name, [Path(p).name for p in paths]))
        return real_read(paths)

    monkeypatch.setattr(module, "_read_files", recording_read)
    order = [[i] for i in range(12)]
    batches = dali_loader(corpus, FeatureSpec("logmel", 40)).batches(order)
    first = next(batches)
    # When the first batch arrives, the files of the batches DALI prefetched and READ_AHEAD more were asked for.
    assert len(reads) >= module.PREFETCH_DEPTH + module.READ_AHEAD
    assert_batch_matches(first, order[0], corpus, FeatureSpec("logmel", 40))
    rest = list(batches)
    assert len(rest) == 11 and [r[1] for r in reads] == [[corpus[i].path.name] for i in range(12)]
    assert all(name.startswith("dali-read") for name, _ in reads)


def test_speed_perturbation_changes_lengths_by_the_speed_factor(corpus):
    spec = FeatureSpec("logmel", 40)
    indices = [0, 1, 2, 3]
    samples = [load_audio(corpus[i].path).numel() for i in indices]
    for speed in (0.8, 1.25):
        lengths = next(dali_loader(corpus, spec, speed_perturbation=(speed, speed)).batches([indices])).feature_lengths
        for n, length in zip(samples, lengths.tolist()):
            assert abs(length - num_frames(round(n / speed))) <= 1, (speed, n, length)
    low, high = 0.9, 1.1
    loader = dali_loader(corpus, spec, speed_perturbation=(low, high), seed=7)
    epoch1 = next(loader.batches([indices])).feature_lengths.tolist()
    epoch2 = next(loader.batches([indices])).feature_lengths.tolist()
    for n, a, b in zip(samples, epoch1, epoch2):
        for length in (a, b):
            assert num_frames(n / high) - 1 <= length <= num_frames(n / low) + 1
    assert epoch1 != epoch2   # a new draw per epoch
    again = dali_loader(corpus, spec, speed_perturbation=(low, high), seed=7)
    assert next(again.batches([indices])).feature_lengths.tolist() == epoch1   # seeded
    with pytest.raises(ValueError, match="low <= high"):
        dali_loader(corpus, spec, speed_perturbation=(1.1, 0.9))


def test_bad_files_are_named(corpus, tmp_path):
    spec = FeatureSpec("logmel", 40)
    wrong_rate, short, corrupt = tmp_path / "rate.wav", tmp_path / "short.wav", tmp_path / "corrupt.wav"
    subprocess.run(["sox", str(corpus[0].path), "-r", "8000", str(wrong_rate)], check=True)
    subprocess.run(["sox", str(corpus[0].path), str(short), "trim", "0", "100s"], check=True)
    corrupt.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    for path, message in ((wrong_rate, "8000 Hz"), (short, "shorter than one"), (corrupt, "unreadable")):
        utterances = [corpus[1], Utterance(path, path.stat().st_size, "A")]
        with pytest.raises((ValueError, RuntimeError), match=message) as error:
            list(dali_loader(utterances, spec).batches([[0, 1]]))
        assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="outside the alphabet"):
        dali_loader([Utterance(corpus[0].path, 1, "lower case")], spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="dali_gpu needs CUDA")
@pytest.mark.parametrize("spec", SPECS[:2], ids=lambda s: s.kind)
def test_dali_gpu_matches_dali_cpu(corpus, spec):
    from benchmark.data.dali_loader import DaliLoader
    order = [[16, 3, 0], [5, 1, 9, 12], [15]]
    gpu = DaliLoader(corpus, spec, "cuda", workers=2, on_gpu=True)
    cpu = dali_loader(corpus, spec)
    for g, c, indices in zip(gpu.batches(order), cpu.batches(order), order):
        assert g.features.is_cuda and g.feature_lengths.is_cuda
        assert torch.equal(g.feature_lengths.cpu(), c.feature_lengths)
        assert np.abs(g.features.cpu().numpy() - c.features.numpy()).max() <= 1e-3
        assert_batch_matches(g.to("cpu"), indices, corpus, spec)


def load_script(name):
    path = Path(__file__).resolve().parent.parent / "measure" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_scripts_run_on_real_files(tiny_corpus, capsys):
    manifest = str(tiny_corpus / "train.csv")
    load_script("featurize_throughput").main(["--manifest", manifest, "--repeats", "1", "--batch_size", "8",
                                              "--features", "logmel", "--backends", "torch,dali_cpu"])
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.startswith(("torch ", "dali_cpu "))}
    assert set(rows) == {"torch", "dali_cpu"} and rows["torch"][-1] == "1.00x"
    status = load_script("gpu_dali_check").main(["--manifest", manifest, "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert status == 0 and "ALL CHECKS PASSED" in out
    assert ("GPU part SKIPPED" in out) != torch.cuda.is_available()
