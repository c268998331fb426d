"""The full DeepSpeech2's training step on one GPU: every recurrent implementation x precision x per-GPU batch.

Usage (one GPU; about 4-6 minutes with the defaults; the --budget_s guard skips what would not fit):
  python measure/gpu_step_benchmark.py --json gpu_step_benchmark.json
  python measure/gpu_step_benchmark.py --batch_sizes 64,128,256 --amps bf16 --rnn_impls padded,streams
  python measure/gpu_step_benchmark.py --device cpu --tiny     # the rehearsal the test suite runs (seconds)

What is timed: benchmark.trainer.Trainer.train_step, the benchmark's own step (forward under autocast, fp32
CTC, backward, clipping, device-side finiteness check, fused AdamW, GradScaler for fp16, schedule), built
by the run plan of config_DGXH100.sh's recipe (the full model: 161-bin spectrogram, 2 conv, 5 x BiLSTM-800,
its optimizer) with --batch_size, --amp and --rnn_impl set per row, on one device, without DDP (--ddp
wraps it in DDP over a 1-rank NCCL group, as measure/gpu_ddp_check.py does). Batches have LibriSpeech's
lengths: durations drawn from 16.7 s x Beta(4, 1.43) (mean 12.3 s, longest 16.7 s: train-960 after
MAX_DURATION), cut into batches from the sorted pool as the sampler does, so padding is as in training.
Each row: --warmup untimed passes over its --steps batches (cuDNN and oneDNN build a plan per shape;
in training the shapes recur every epoch), then the --steps steps timed with one synchronisation at the
end (the host runs ahead as in training), then one step under torch.cuda.set_sync_debug_mode counting the
host synchronisations it makes. Printed per row: ms/step, utt/s, audio s/s, useful TFLOP/s (benchmark/flops.py,
the training's own count), the fraction of this GPU's matmul peak measured here at the row's precision,
padding, peak memory of the step (beyond the resident batches) and per second of padded audio.

Parity first: every implementation against padded at every precision on the same weights and batch
(logits within each utterance's length and every gradient, max difference relative to the largest value).
Exit status 0 when every parity check passed and at least one row ran, 1 otherwise. Uses only APIs of
PyTorch 2.11 and older, so the CUDA builds of NVIDIA's containers run it as well as the pinned torch.
"""
import argparse
from dataclasses import replace
import json
import os
from pathlib import Path
import sys
import time
import warnings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GOMP_SPINCOUNT", "20000")   # bounded OpenMP spin, as scripts/threads.sh

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmark.config import RNN_IMPLS, parse_config  # noqa: E402
from benchmark.data.batch import Batch  # noqa: E402
from benchmark.features import SAMPLE_RATE, num_frames  # noqa: E402
from benchmark.flops import StepCosts, Throughput, matmul_peak, peak_dtype  # noqa: E402
from benchmark.model import CUDA_ONLY_RNN_IMPLS, DeepSpeech2  # noqa: E402
from benchmark.plan import AUTOCAST_DTYPES, make_plan  # noqa: E402
from benchmark.text import NUM_CLASSES  # noqa: E402
from benchmark.trainer import Trainer, ctc_loss  # noqa: E402
from measure.system_recipe import system_recipe  # noqa: E402

MEAN_SECONDS, LONGEST_SECONDS, BETA_A = 12.3, 16.7, 4.0   # LibriSpeech train-960 clipped at MAX_DURATION
CHARACTERS_PER_SECOND = 14
TINY_MODEL = {"rnn_hidden_size": "32", "rnn_layers": "2", "conv_channels": "4"}
# Parity tolerance (max difference / largest value) per precision: fp32 runs cuDNN's RNNs and convolutions
# in TF32 by default on a GPU; bf16 keeps 8 mantissa bits.
TOLERANCE = {"off": {"cpu": 1e-4, "cuda": 5e-3}, "bf16": {"cpu": 5e-2, "cuda": 5e-2},
             "fp16": {"cpu": 1e-2, "cuda": 1e-2}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: rehearsal (with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny model and 10x shorter utterances (rehearsal)")
    parser.add_argument("--system", default="DGXH100", help="config_<SYSTEM>.sh whose model and optimizer to run")
    parser.add_argument("--rnn_impls", default=",".join(RNN_IMPLS), help="recurrent implementations to compare")
    parser.add_argument("--amps", default="", help="precisions (default bf16,fp16,off on a GPU; off,bf16 on the CPU)")
    parser.add_argument("--batch_sizes", default="", help="per-GPU batch sizes (default 32,64,128; tiny: 2,4)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (distinct batches) per row")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed passes over the same batches first (cuDNN/oneDNN plans per shape, allocator)")
    parser.add_argument("--budget_s", type=float, default=330.0,
                        help="start no row after this many seconds (the rest are listed as skipped)")
    parser.add_argument("--ddp", action="store_true", help="wrap the model in DDP over a 1-rank NCCL/gloo group")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=1, help="lengths, features and weights")
    args = parser.parse_args(argv)
    args.rnn_impls = args.rnn_impls.split(",")
    for impl in args.rnn_impls:
        if impl not in RNN_IMPLS:
            parser.error(f"--rnn_impls: {impl!r} is not one of {','.join(RNN_IMPLS)}")
    args.amps = (args.amps or ("bf16,fp16,off" if args.device == "cuda" else "off,bf16")).split(",")
    for amp in args.amps:
        if amp not in AUTOCAST_DTYPES:
            parser.error(f"--amps: {amp!r} is not one of {','.join(AUTOCAST_DTYPES)}")
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("2,4" if args.tiny else "32,64,128")).split(",")]
    if args.steps < 1 or args.warmup < 0 or min(args.batch_sizes) < 1:
        parser.error("--steps and --batch_sizes must be positive, --warmup not negative")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (rehearse with --device cpu --tiny)")
    return args


def base_config(args):
    """config_<SYSTEM>.sh's flags (the torch loader: no data is loaded here), on the chosen device."""
    flags = dict(system_recipe(args.system).flags, data_backend="torch", train_data_dir="-", eval_data_dir="-")
    if args.tiny:
        flags.update(TINY_MODEL)
    config = parse_config([f"--{name}={value}" for name, value in flags.items()])
    return replace(config, num_gpus=0 if args.device == "cpu" else -1, seed=args.seed, log_every=0,
                   lr_schedule="constant", warmup_fraction=0.0)


def durations(count, rng, scale=1.0):
    """`count` LibriSpeech-like durations in seconds (mean 12.3 x scale, at most 16.7 x scale)."""
    beta_b = BETA_A * (LONGEST_SECONDS - MEAN_SECONDS) / MEAN_SECONDS
    return np.maximum(rng.beta(BETA_A, beta_b, size=count) * LONGEST_SECONDS, 1.0) * scale


def batch_of(seconds, num_features, device, generator):
    """A Batch of random features and targets for utterances of these durations, zero beyond each length."""
    lengths = torch.tensor([num_frames(int(d * SAMPLE_RATE)) for d in seconds], dtype=torch.int64)
    features = torch.randn(len(seconds), num_features, int(lengths.max()), generator=generator)
    features *= (torch.arange(features.shape[2]) < lengths[:, None])[:, None, :]
    target_lengths = torch.tensor([max(1, int(d * CHARACTERS_PER_SECOND)) for d in seconds])
    targets = torch.randint(1, NUM_CLASSES, (len(seconds), int(target_lengths.max())), generator=generator)
    return Batch(features, lengths, targets, target_lengths).to(device)


def make_batches(batch_size, count, num_features, device, seed, scale, pool_batches=32):
    """`count` batches cut from a sorted pool of durations, as the sampler cuts them: evenly spaced over the
    pool (so their lengths follow the distribution), in a shuffled order."""
    rng = np.random.default_rng([seed, batch_size])
    pool = np.sort(durations(batch_size * pool_batches, rng, scale))
    picks = rng.permutation(((np.arange(count) + 0.5) * pool_batches / count).astype(int))
    generator = torch.Generator().manual_seed(seed)
    return [batch_of(pool[k * batch_size:(k + 1) * batch_size], num_features, device, generator) for k in picks]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def syncs_of_one_step(trainer, batch):
    """Host synchronisations one training step makes (torch.cuda.set_sync_debug_mode's warnings)."""
    if trainer.plan.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


# ------------------------------------------------------------------------------------------------ parity
def parity(config, impls, amps, device, batch):
    """Each implementation against padded at each precision: same weights, same batch, forward + backward."""
    results = []
    for amp in amps:
        reference = None
        for impl in ["padded"] + [i for i in impls if i != "padded"]:
            plan = make_plan(replace(config, amp=amp, rnn_impl=impl if impl not in CUDA_ONLY_RNN_IMPLS else "padded"))
            torch.manual_seed(config.seed)
            model = DeepSpeech2.from_args(plan.model_args, impl, plan.conv_layout).to(device)   # streams: its own path, also on CPU
            with plan.autocast():
                logits, lengths = model(batch.features, batch.feature_lengths)
            ctc_loss(logits, lengths, batch).backward()
            valid = (torch.arange(logits.shape[0], device=device)[:, None] < lengths).unsqueeze(2)
            got = [("logits", (logits.float() * valid).detach())] + [(n, p.grad) for n, p in model.named_parameters()]
            if reference is None:
                reference = got
                continue
            worst, where = 0.0, ""
            for (name, expected), (_, value) in zip(reference, got):
                difference = float((value - expected).abs().max() / expected.abs().max().clamp_min(1e-30))
                if difference > worst:
                    worst, where = difference, name
            tolerance = TOLERANCE[amp][device.type]
            results.append({"rnn_impl": impl, "amp": amp, "max_relative_difference": worst, "worst": where,
                            "tolerance": tolerance, "ok": worst <= tolerance})
    return results


# -------------------------------------------------------------------------------------------- throughput
def measure_row(config, args, batches, peaks):
    """One row: a trainer of `config`, warm-up steps, timed steps, one step counting synchronisations."""
    plan = make_plan(config, num_train_utterances=config.batch_size * args.steps * (args.warmup + 2))
    device = plan.device
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(plan, matmul_peak=peaks[config.amp])
    trainer.training_model.train()
    for batch in batches * args.warmup:
        trainer.train_step(batch)
    timed = batches
    synchronize(device)
    start = time.perf_counter()
    for batch in timed:
        result = trainer.train_step(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak_memory = torch.cuda.max_memory_allocated(device) - resident if device.type == "cuda" else None
    syncs = syncs_of_one_step(trainer, batches[-1])
    costs = trainer.costs
    useful = sum(float(costs.batch_flops(b.feature_lengths, b.features.shape[2])[0]) for b in timed)
    padded = sum(costs.batch_flops(b.feature_lengths, b.features.shape[2])[1] for b in timed)
    frames = sum(int(b.feature_lengths.sum()) for b in timed)
    padded_seconds = sum(b.features.shape[0] * b.features.shape[2] for b in timed) / len(timed) / 100
    rate = Throughput(seconds, len(timed) * config.batch_size, frames / 100, useful, padded, *peaks[config.amp])
    return {"status": "ok", "mean_seconds": rate.audio_seconds / rate.utterances,
            "ms_per_step": 1000 * seconds / len(timed),
            "utterances_per_second": rate.utterances / seconds,
            "audio_seconds_per_second": rate.audio_seconds / seconds,
            "tflops": rate.tflops, "fraction_of_peak": rate.fraction_of_peak, "padding": rate.padding_fraction,
            "peak_memory_gib": peak_memory / 2 ** 30 if peak_memory is not None else None,
            "memory_mib_per_audio_second": peak_memory / 2 ** 20 / padded_seconds if peak_memory is not None else None,
            "syncs_per_step": syncs, "loss": float(result.loss)}


def row_text(row):
    head = f"{row['rnn_impl']:>8s} {row['amp']:>5s} {row['batch_size']:5d}"
    if row["status"] != "ok":
        return f"{head}  {row['status']}"
    memory = (f"{row['peak_memory_gib']:7.2f} {row['memory_mib_per_audio_second']:9.2f}"
              if row["peak_memory_gib"] is not None else f"{'-':>7s} {'-':>9s}")
    syncs = "-" if row["syncs_per_step"] is None else str(row["syncs_per_step"])
    return (f"{head} {row['ms_per_step']:8.1f} {row['utterances_per_second']:8.1f} "
            f"{row['audio_seconds_per_second']:9.0f} {row['tflops']:8.3g} {100 * row['fraction_of_peak']:6.1f}% "
            f"{100 * row['padding']:5.1f}% {memory} {syncs:>5s}")


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    config = base_config(args)
    scale = 0.1 if args.tiny else 1.0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else None
    print(f"# {name}, torch {torch.__version__}, cuDNN {cudnn}; config_{args.system}.sh's model"
          f"{' (tiny)' if args.tiny else ''}: {config.rnn_type} {config.rnn_layers}x{config.rnn_hidden_size}, "
          f"conv {config.conv_channels}, {config.features}; lengths mean {MEAN_SECONDS * scale:g} s, "
          f"max {LONGEST_SECONDS * scale:g} s", flush=True)
    if args.ddp:
        import torch.distributed as dist
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29518")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    peaks = {}
    for amp in args.amps:
        dtype, label = peak_dtype(device, AUTOCAST_DTYPES[amp])
        # The peak at its full default size even with --tiny: it is the machine's, not the step's. A 256-cube
        # matmul lasts ~0.1 ms on a 2-core CPU, too short to time: inside the container check's image on a
        # Zen 5 VM the tiny step read 1.99-2.06x "of peak" against it; on a 2-core Xeon with AMX a 256-cube
        # bf16 matmul ran at 55% of the 1024-cube rate. 1024 costs under 10 ms a repeat on a CPU.
        peaks[amp] = (matmul_peak(device, dtype, tf32=label == "tf32"), label)
        print(f"matmul peak {label:5s} {peaks[amp][0] / 1e12:8.3f} TFLOP/s", flush=True)

    num_features = make_plan(config).feature_spec.num_features
    # Unsorted lengths from the whole distribution: each implementation's handling of padding is exercised.
    parity_batch = batch_of(durations(4 if args.tiny else 8, np.random.default_rng(args.seed), scale), num_features,
                            device, torch.Generator().manual_seed(args.seed))
    checks = parity(config, args.rnn_impls, args.amps, device, parity_batch)
    for check in checks:
        print(f"parity {check['rnn_impl']:>8s} vs padded, {check['amp']:>4s}: max relative difference "
              f"{check['max_relative_difference']:.2e} ({check['worst']}), tolerance {check['tolerance']:g}: "
              f"{'ok' if check['ok'] else 'FAIL'}", flush=True)

    print(f"{'rnn_impl':>8s} {'amp':>5s} {'batch':>5s} {'ms/step':>8s} {'utt/s':>8s} {'audio s/s':>9s} "
          f"{'TFLOP/s':>8s} {'of peak':>7s} {'pad':>6s} {'mem GiB':>7s} {'MiB/aud s':>9s} {'syncs':>5s}", flush=True)
    rows = []
    for batch_size in args.batch_sizes:
        batches = make_batches(batch_size, args.steps, num_features, device, args.seed, scale)
        frames = [int(n) for b in batches for n in b.feature_lengths]
        print(f"# batch {batch_size}: {len(batches)} batches of utterances of {sum(frames) / len(frames) / 100:.2f} s "
              f"on average (longest {max(frames) / 100:.2f} s)", flush=True)
        for amp in args.amps:
            for impl in args.rnn_impls:
                row = {"rnn_impl": impl, "amp": amp, "batch_size": batch_size}
                if time.perf_counter() - start > args.budget_s:
                    row["status"] = f"skipped: past --budget_s {args.budget_s:g}"
                elif impl in CUDA_ONLY_RNN_IMPLS and device.type != "cuda":
                    row["status"] = "skipped: needs CUDA (its parity ran above, on one stream)"
                else:
                    try:
                        row.update(measure_row(replace(config, batch_size=batch_size, amp=amp, rnn_impl=impl),
                                               args, batches, peaks))
                    except torch.cuda.OutOfMemoryError:
                        row["status"] = "out of memory"
                    except RuntimeError as error:   # e.g. a cuDNN error of one implementation: report, go on
                        row["status"] = f"error: {str(error).splitlines()[0][:120]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                print(row_text(row), flush=True)
        del batches
    seconds = time.perf_counter() - start
    ok = all(c["ok"] for c in checks) and any(r["status"] == "ok" for r in rows)
    print(f"{seconds:.0f} s; {'ALL PARITY CHECKS PASSED' if all(c['ok'] for c in checks) else 'PARITY FAILED'}; "
          f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} rows ran", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "torch": torch.__version__, "cudnn": cudnn, "system": args.system, "tiny": args.tiny,
            "ddp": args.ddp, "steps": args.steps, "warmup": args.warmup,
            "matmul_peak_tflops": {amp: {"tflops": p / 1e12, "precision": label} for amp, (p, label) in peaks.items()},
            "parity": checks, "rows": rows, "seconds": seconds}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
