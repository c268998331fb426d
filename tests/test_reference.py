"""The reference (reference/) and the benchmark (benchmark/) compute the same thing: features on real
espeak-ng audio, model outputs, loss and gradients on the same weights and batch, optimizer steps, batch
order, decoding and WER; and `python -m reference.train` runs an epoch and writes a compliant MLPerf log."""
import importlib.util
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from benchmark import features as bench_features
from benchmark import mlperf_log
from benchmark import text as bench_text
from benchmark.results.compliance import check_logs
from benchmark.config import TrainConfig
from benchmark.data.manifest import read_manifest
from benchmark.data.sampler import TrainBatchSampler, eval_batches
from benchmark.data.torch_loader import UtteranceDataset, _collate
from benchmark.metrics import word_errors
from mlperf_run_logs import write_run_log
from benchmark.model import DeepSpeech2 as BenchmarkModel
from benchmark.optim import build_optimizer, build_scheduler
from benchmark.trainer import ctc_loss
from reference import features as ref_features
from reference import text as ref_text
from reference.config import ReferenceConfig, parse_config
from reference.data import SortaGradSampler, SpeechDataset, collate
from reference.model import DeepSpeech2 as ReferenceModel
from reference.optim import learning_rate_factor
from reference import train as reference_train
from reference.train import Training

REPO = Path(__file__).resolve().parent.parent
FEATURE_KINDS = [("spectrogram", 80), ("logmel", 80), ("logmel", 40)]
MODELS = [dict(rnn_type="lstm", time_stride=2), dict(rnn_type="gru", time_stride=4)]


@pytest.fixture(scope="module")
def utterances(tiny_corpus):
    return read_manifest(tiny_corpus / "train.csv")


@pytest.mark.parametrize("kind,n_mels", FEATURE_KINDS)
def test_features_match_benchmark_on_real_audio(utterances, kind, n_mels):
    for utterance in utterances:
        samples, rate = soundfile.read(str(utterance.path), dtype="float32")
        assert rate == 16000 and samples.ndim == 1
        expected = bench_features.compute_features(torch.from_numpy(samples),
                                                   bench_features.FeatureSpec(kind, n_mels)).numpy()
        got = ref_features.compute_features(samples, kind, n_mels)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert got.shape[1] == 1 + (len(samples) - 320) // 160
        # 1e-4 after normalization, plus the benchmark's float32 STFT rounding (~1e-6 of a log-magnitude)
        # magnified by the normalization: near-silent top bins (the espeak-ng audio is band-limited) have a
        # standard deviation of ~0.005 and stretch a 5e-7 error 200-fold.
        log_magnitude = np.log1p(ref_features.magnitude_spectrogram(samples))
        if kind == "logmel":
            log_magnitude = np.log1p(ref_features.slaney_mel_filterbank(n_mels) @ np.expm1(log_magnitude))
        bin_std = np.sqrt(log_magnitude.var(axis=1, keepdims=True) + ref_features.NORM_EPSILON)
        error = np.abs(got - expected)
        assert (error <= 1e-4 + 1e-6 / bin_std).all(), error.max()
        assert (error <= 1e-4).mean() > 0.9999
        assert error[bin_std[:, 0] > 0.05].max(initial=0) <= 1e-4   # every bin that carries signal


def test_mel_filterbank_matches_benchmark_and_has_unit_area():
    for n_mels in (40, 80):
        bank = ref_features.slaney_mel_filterbank(n_mels)
        np.testing.assert_allclose(bank, bench_features.mel_filterbank(n_mels), rtol=1e-5, atol=1e-9)
    # Slaney normalization: each triangle, sampled finely, has area 1 over Hz.
    hz = np.linspace(0, 8000, 160001)
    edges = ref_features.slaney_mel_to_hz(np.linspace(0, ref_features.slaney_hz_to_mel(8000), 42))
    left, center, right = edges[10:13]
    triangle = np.clip(np.minimum((hz - left) / (center - left), (right - hz) / (right - center)), 0, None)
    assert np.trapezoid(triangle * 2 / (right - left), hz) == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(ref_features.slaney_mel_to_hz(ref_features.slaney_hz_to_mel([0, 500, 1000, 7000])),
                               [0, 500, 1000, 7000])


def test_short_audio_is_refused_by_both():
    with pytest.raises(ValueError, match="shorter than one"):
        ref_features.compute_features(np.zeros(319))
    with pytest.raises(ValueError, match="shorter than one"):
        bench_features.compute_features(torch.zeros(319))


def real_batch(utterances, kind="logmel", n_mels=40):
    """A padded batch of real features of different lengths, from the reference loader's pieces."""
    items = [SpeechDataset(utterances, kind, n_mels)[i] for i in (0, 3, 5, 6)]
    batch = collate(items)
    bench_batch = _collate([UtteranceDataset(utterances, bench_features.FeatureSpec(kind, n_mels))[i]
                            for i in (0, 3, 5, 6)])
    for ours, theirs in zip(batch, bench_batch):   # the two loaders' batch contracts agree
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert len(set(batch[1].tolist())) == 4
    return batch


def twin_models(model_kwargs, num_features=40):
    torch.manual_seed(3)
    bench = BenchmarkModel(num_features, conv_channels=4, rnn_hidden_size=24, rnn_layers=2, **model_kwargs)
    torch.manual_seed(3)
    ref = ReferenceModel(num_features, conv_channels=4, rnn_hidden_size=24, rnn_layers=2, **model_kwargs)
    return bench, ref


@pytest.mark.parametrize("model_kwargs", MODELS)
def test_same_seed_same_weights_and_state_dicts_interchange(model_kwargs):
    bench, ref = twin_models(model_kwargs)
    bench_state, ref_state = bench.state_dict(), ref.state_dict()
    assert list(bench_state) == list(ref_state)
    for name in bench_state:
        assert torch.equal(bench_state[name], ref_state[name]), name
    torch.manual_seed(9)
    other = ReferenceModel(40, conv_channels=4, rnn_hidden_size=24, rnn_layers=2, **model_kwargs)
    bench.load_state_dict(other.state_dict(), strict=True)
    assert torch.equal(bench.fc[1].weight, other.fc[1].weight)


def assert_same_gradients(bench, ref, tolerance):
    """Every parameter's gradient equal to within `tolerance` of that tensor's largest gradient."""
    ref_params = dict(ref.named_parameters())
    for name, param in bench.named_parameters():
        theirs, ours = param.grad, ref_params[name].grad
        assert theirs is not None and ours is not None, name
        scale = theirs.abs().max().item()
        assert scale > 0, name
        assert (ours - theirs).abs().max().item() <= tolerance * scale, name


class LossBatch:
    """The fields of benchmark.data.batch.Batch that benchmark.train.ctc_loss reads."""

    def __init__(self, features, targets, target_lengths):
        self.features, self.targets, self.target_lengths = features, targets, target_lengths


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("model_kwargs", MODELS)
def test_same_outputs_loss_and_gradients(utterances, model_kwargs, train_mode):
    """float32, as trained: each implementation's own forward, CTC loss and backward on the same weights."""
    feats, lengths, targets, target_lengths = real_batch(utterances)
    bench, _ = twin_models(model_kwargs)
    bench.train(train_mode)   # train mode: batch norm uses the (padded) batch's statistics in both
    config = ReferenceConfig(**model_kwargs, conv_channels=4, rnn_hidden_size=24, rnn_layers=2)
    training = Training(config, 40, steps_per_epoch=1, device=torch.device("cpu"))
    training.model.load_state_dict(bench.state_dict())
    training.model.train(train_mode)
    bench_logits, bench_lengths = bench(feats, lengths)
    ref_logits, ref_lengths = training.model(feats, lengths)
    assert torch.equal(bench_lengths, ref_lengths) and torch.equal(ref_lengths, training.model.output_lengths(lengths))
    for b, n in enumerate(ref_lengths.tolist()):   # beyond its length an utterance has no outputs to compare
        torch.testing.assert_close(ref_logits[:n, b], bench_logits[:n, b], atol=1e-5, rtol=1e-5)
    bench_loss = ctc_loss(bench_logits, bench_lengths, LossBatch(feats, targets, target_lengths))
    ref_loss = training.loss((feats, lengths, targets, target_lengths))
    assert ref_loss.item() > 10
    torch.testing.assert_close(ref_loss, bench_loss, atol=0, rtol=1e-6)
    bench_loss.backward()
    training.backward(ref_loss)
    # float32 sums over thousands of frames in a different order: 1e-4 of the largest gradient.
    assert_same_gradients(bench, training.model, 1e-4)


@pytest.mark.parametrize("model_kwargs", MODELS)
def test_same_maths_in_float64(utterances, model_kwargs):
    """In float64 rounding vanishes: outputs and gradients agree to 1e-10, so any gap above is float32's."""
    feats, lengths, targets, target_lengths = real_batch(utterances)
    feats = feats.double()
    bench, ref = twin_models(model_kwargs)
    bench.double().train(), ref.double().train()
    bench_logits, bench_lengths = bench(feats, lengths)
    ref_logits, ref_lengths = ref(feats, lengths)
    ctc = torch.nn.CTCLoss(reduction="sum", zero_infinity=True)
    losses = [ctc(logits.log_softmax(2), targets, out_lengths, target_lengths)
              for logits, out_lengths in ((bench_logits, bench_lengths), (ref_logits, ref_lengths))]
    for b, n in enumerate(ref_lengths.tolist()):
        torch.testing.assert_close(ref_logits[:n, b], bench_logits[:n, b], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(losses[0], losses[1], atol=0, rtol=1e-12)
    (losses[0] + losses[1]).backward()
    assert_same_gradients(bench, ref, 1e-10)


def test_same_optimizer_steps_and_schedule(utterances):
    """Three clipped AdamW steps in warm-up from the same gradients: the benchmark's fused AdamW + LambdaLR
    and the reference's plain AdamW + schedule function leave the same weights."""
    feats, lengths, targets, target_lengths = real_batch(utterances)
    config = TrainConfig(train_data_dir="x", eval_data_dir="x", rnn_type="gru", time_stride=4, conv_channels=4,
                         rnn_hidden_size=24, rnn_layers=2, max_epochs=2, warmup_fraction=0.25, learning_rate=1e-2,
                         grad_clip_norm=5.0)
    bench, _ = twin_models(dict(rnn_type="gru", time_stride=4))
    ref_config = ReferenceConfig(**{k: getattr(config, k) for k in (
        "rnn_type", "time_stride", "conv_channels", "rnn_hidden_size", "rnn_layers", "max_epochs",
        "warmup_fraction", "learning_rate", "grad_clip_norm")})
    training = Training(ref_config, 40, steps_per_epoch=4, device=torch.device("cpu"))
    training.model.load_state_dict(bench.state_dict())
    optimizer = build_optimizer(config, bench)
    scheduler = build_scheduler(config, optimizer, total_steps=8)
    batch = LossBatch(feats, targets, target_lengths)
    ref_params = dict(training.model.named_parameters())
    for _ in range(3):
        assert learning_rate_factor(training.step, 8, 0.25) * 1e-2 == pytest.approx(scheduler.get_last_lr()[0])
        logits, out_lengths = bench(feats, lengths)
        loss = ctc_loss(logits, out_lengths, batch)
        optimizer.zero_grad()
        loss.backward()
        # Adam divides by sqrt(v): float32 noise in a near-zero gradient would flip its update, so both
        # optimizers get the very same (unclipped) gradients.
        for name, param in bench.named_parameters():
            ref_params[name].grad = param.grad.clone()
        norm = torch.nn.utils.clip_grad_norm_(bench.parameters(), config.grad_clip_norm)
        assert norm > config.grad_clip_norm   # clipping is exercised
        optimizer.step()
        scheduler.step()
        assert training.optimizer_step(loss.detach())
        for name, param in bench.named_parameters():
            torch.testing.assert_close(ref_params[name], param, atol=1e-6, rtol=1e-5,
                                       msg=lambda message, name=name: f"{name}: {message}")
    # The whole schedule, constant variant included.
    for schedule in ("onecycle", "constant"):
        config.lr_schedule = schedule
        scheduler = build_scheduler(config, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 40)
        for step in range(40):
            assert scheduler.get_last_lr()[0] == pytest.approx(learning_rate_factor(step, 40, 0.25, schedule))
            scheduler.optimizer.step()
            scheduler.step()


def test_non_finite_step_is_skipped_but_counted():
    config = ReferenceConfig(rnn_type="gru", time_stride=4, conv_channels=4, rnn_hidden_size=8, rnn_layers=1,
                             max_nonfinite_steps=2)
    training = Training(config, 40, steps_per_epoch=4, device=torch.device("cpu"))
    before = [p.detach().clone() for p in training.model.parameters()]
    for p in training.model.parameters():
        p.grad = torch.zeros_like(p)
    assert not training.optimizer_step(torch.tensor(float("nan")))
    assert training.step == 1 and training.nonfinite_skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, training.model.parameters()))
    with pytest.raises(RuntimeError, match="2 consecutive steps"):
        training.optimizer_step(torch.tensor(float("inf")))


def test_same_batch_order_as_the_benchmark_sampler(utterances):
    durations = [u.duration for u in utterances] * 3
    ours = SortaGradSampler(durations, batch_size=5, seed=7)
    theirs = TrainBatchSampler(durations, global_batch=5, seed=7)
    assert len(ours) == len(theirs)
    for epoch in (1, 2, 3):
        ours.set_epoch(epoch)
        assert list(ours) == theirs.epoch_batches(epoch)
    assert list(SortaGradSampler(durations, 8)) == eval_batches(durations, 8)


def test_same_alphabet_decoding_and_wer():
    assert ref_text.NUM_CLASSES == bench_text.NUM_CLASSES
    sentence = "IT'S A SUNNY DAY"
    assert ref_text.encode(sentence) == bench_text.encode(sentence)
    with pytest.raises(ValueError, match="'!'"):
        ref_text.encode("HI!")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(60, 5, ref_text.NUM_CLASSES, generator=g)
    logits[::3, :, 28] += 3   # plenty of spaces, some repeated, some at the ends
    lengths = torch.tensor([60, 41, 17, 1, 33])
    best = logits.argmax(dim=2)
    expected = [bench_text.greedy_collapse(best[:n, b].tolist()) for b, n in enumerate(lengths.tolist())]
    assert ref_text.greedy_decode(logits, lengths) == expected
    assert any(" " in t for t in expected)
    references = ["THE CAT SAT", "A DOG", "", "HELLO WORLD", "ONE TWO THREE FOUR"]
    hypotheses = ["THE CAT SAT", "A FROG RAN", "EXTRA WORDS", "", "ONE THREE FOUR FIVE"]
    assert ref_text.corpus_wer(references, hypotheses) == word_errors(references, hypotheses) == (8, 11)
    assert ref_text.corpus_wer(hypotheses[:2], expected[:2]) == word_errors(hypotheses[:2], expected[:2])


def test_reference_train_one_epoch_logs_every_event(tiny_corpus, tmp_path):
    log_file = tmp_path / "result_1.txt"
    done = subprocess.run(
        [sys.executable, "-m", "reference.train", "--train_data_dir", str(tiny_corpus / "train.csv"),
         "--eval_data_dir", str(tiny_corpus / "dev.csv"), "--log_file", str(log_file), "--features", "logmel",
         "--n_mels", "40", "--rnn_type", "gru", "--rnn_hidden_size", "32", "--rnn_layers", "2",
         "--conv_channels", "4", "--time_stride", "4", "--batch_size", "4", "--eval_batch_size", "8",
         "--num_threads", "1", "--num_workers", "1", "--log_every", "2", "--max_epochs", "1",
         "--target_wer", "0.05"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr   # target not reached in one epoch: aborted
    assert "epoch 1 step 4/4" in done.stdout
    records, warnings = mlperf_log.read_log(log_file)
    assert not warnings, warnings
    events = [vars(r) for r in records]
    keys = [e["key"] for e in events]
    for key in ("cache_clear", "init_start", "submission_benchmark", "submission_platform", "seed",
                "global_batch_size", "opt_name", "opt_base_learning_rate", "opt_learning_rate_warmup_steps",
                "target_wer", "train_samples", "eval_samples", "init_stop", "run_start", "epoch_start",
                "epoch_stop", "train_loss", "data_wait_seconds", "eval_start", "eval_accuracy", "eval_stop",
                "run_stop"):
        assert keys.count(key) == 1, key
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("epoch_start") < keys.index("run_stop")
    by_key = {e["key"]: e for e in events}
    assert by_key["train_samples"]["value"] == 16 and by_key["eval_samples"]["value"] == 6
    assert by_key["opt_learning_rate_training_steps"]["value"] == 4
    assert by_key["model_config"]["value"]["backend"] == "reference"
    assert by_key["eval_accuracy"]["value"] >= 0 and by_key["run_stop"]["metadata"]["status"] == "aborted"
    verdict, = check_logs([log_file])
    assert verdict.passed, verdict.reasons
    before = log_file.read_bytes()
    again = reference_train.main(["--train_data_dir", str(tiny_corpus / "train.csv"), "--eval_data_dir",
                                  str(tiny_corpus / "dev.csv"), "--log_file", str(log_file)])
    assert again == 2 and log_file.read_bytes() == before   # a result is never appended to or overwritten


@pytest.mark.parametrize("flag,value", [("--batch_size", "0"), ("--amp", "bf16"), ("--sortagrad", "yes"),
                                        ("--target_wer", "23")])
def test_reference_bad_flags_fail_naming_them(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--train_data_dir", "a.csv", "--eval_data_dir", "b.csv", flag, value])
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err


TINY_RECIPE = ["--n_mels", "40", "--rnn_hidden_size", "32", "--rnn_layers", "2", "--conv_channels", "4",
               "--batch_size", "2", "--eval_batch_size", "8", "--num_workers", "1", "--log_every", "0"]


@pytest.fixture(scope="module")
def compare_reference():
    spec = importlib.util.spec_from_file_location("compare_reference", REPO / "measure" / "compare_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_recipes_give_the_reference_its_flags_only(compare_reference):
    base = {"rnn_type": "lstm", "batch_size": "8", "amp": "off", "data_backend": "auto", "train_data_dir": "t.csv",
            "eval_data_dir": "d.csv", "num_gpus": "0"}
    bench_argv, ref_argv, bench_only = compare_reference.build_recipes(base, ["--batch_size", "4", "--data_backend=torch"],
                                                                       nproc=2)
    assert "--batch_size=4" in bench_argv and "--batch_size=8" not in bench_argv and "--batch_size=8" in ref_argv
    assert "--rnn_type=lstm" in bench_argv and "--rnn_type=lstm" in ref_argv
    assert bench_only == {"amp": "off", "data_backend": "torch"}
    assert not any(flag.startswith(("--amp", "--data_backend")) for flag in ref_argv)


def test_compare_throughput_prints_both_rates_phases_and_ratio(compare_reference, tiny_corpus, capsys):
    assert compare_reference.main(["--steps", "2", "--warmup_steps", "1", "--train_data_dir",
                                   str(tiny_corpus / "train.csv"), "--eval_data_dir", str(tiny_corpus / "dev.csv"),
                                   *TINY_RECIPE]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("reference ", "benchmark "))}
    assert set(rows) == {"reference", "benchmark"}
    for name, row in rows.items():
        utt_per_s, audio_per_s = float(row[1]), float(row[2])
        assert utt_per_s > 0 and audio_per_s > utt_per_s   # espeak-ng sentences last over a second
    ratio = float(out.split("ratio benchmark/reference: ")[1].split("x")[0])
    assert ratio == pytest.approx(float(rows["benchmark"][1]) / float(rows["reference"][1]), rel=0.02)
    assert "benchmark-only flags" in out and "--amp off" in out and "2 timed steps of 4 utterances" in out


def test_compare_time_to_target_runs_both_trainers(compare_reference, tiny_corpus, tmp_path, capsys):
    assert compare_reference.main(["--time_to_target", "--output_dir", str(tmp_path), "--train_data_dir",
                                   str(tiny_corpus / "train.csv"), "--eval_data_dir", str(tiny_corpus / "dev.csv"),
                                   *TINY_RECIPE, "--max_epochs", "1", "--target_wer", "0.01", "--num_threads", "1"]) == 0
    out = capsys.readouterr().out
    logs = sorted(p.name for p in tmp_path.glob("*/*_mlperf_log.txt"))
    assert logs == ["benchmark_mlperf_log.txt", "reference_mlperf_log.txt"]
    for name in ("reference", "benchmark"):
        row = next(line.split() for line in out.splitlines() if line.startswith(name + " "))
        assert row[2] == "aborted" and row[3] == "1" and float(row[1].rstrip("s")) > 0
    assert "not both reached the target" in out
    assert "--nproc_per_node=2" in out and "--batch_size=2" in out   # TINY_RECIPE's batch 2 on each of 2 ranks
    assert "-m reference.train" in out and "--batch_size=4" in out   # the reference: their global batch


def test_compare_time_to_target_follows_the_one_run_stop_rule(compare_reference, tmp_path):
    """Its summary used to time a log with two run_stop by the first (as the report did)."""
    log = write_run_log(tmp_path / "log.txt", [0.9, 0.29], duplicate={"run_stop"})
    summary = compare_reference.summarize_run(log)
    assert summary["status"].startswith("invalid log: 2 run_stop records") and summary["seconds"] != summary["seconds"]
    good = compare_reference.summarize_run(write_run_log(tmp_path / "good.txt", [0.9, 0.29], epoch_minutes=1.0))
    assert good["status"] == "success" and good["seconds"] == pytest.approx(120.0)
