"""Check the DALI GPU pipeline on real files: same features as DALI CPU and the reference, and its throughput.

Usage:
  python measure/gpu_dali_check.py --manifest data/synthetic/dev.csv [--limit 256] [--batch_size 32]
      [--threads 4] [--repeats 3]

For each feature kind (spectrogram, logmel 80): builds the dali_cpu pipeline, compares every utterance
with benchmark.features.compute_features (max abs difference <= 1e-3 after normalization, identical
frame counts), then does the same for dali_gpu against dali_cpu and the reference, runs one epoch with
speed perturbation (0.9, 1.1) on the GPU, and prints the throughput (seconds of audio per second) of
dali_cpu and dali_gpu on the same batches. On a machine without CUDA the GPU part is skipped with a
message, the CPU part still runs. Exit status 0 when every check passed, 1 otherwise (2: bad arguments or
DALI not installed).
"""
import argparse
import os
from pathlib import Path
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GOMP_SPINCOUNT", "20000")   # bounded OpenMP spin, as scripts/threads.sh

import soundfile  # noqa: E402
import torch  # noqa: E402

from benchmark.data.backends import dali_available  # noqa: E402
from benchmark.data.manifest import read_manifests  # noqa: E402
from benchmark.data.sampler import eval_batches  # noqa: E402
from benchmark.data.torch_loader import load_audio  # noqa: E402
from benchmark.features import SAMPLE_RATE, FeatureSpec, compute_features  # noqa: E402

TOLERANCE = 1e-3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--manifest", required=True, help="manifest CSV(s) of 16 kHz WAV/FLAC files, comma-separated")
    parser.add_argument("--limit", type=int, default=256, help="use the first N utterances (0: all)")
    parser.add_argument("--batch_size", type=int, default=32, help="utterances per batch")
    parser.add_argument("--threads", type=int, default=4, help="DALI CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per backend (best is reported)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    return args


def compare(name, batches, index_batches, utterances, spec, against=None):
    """Max abs difference to the reference (and to `against`'s batches); False when a check failed."""
    worst_ref, worst_other, ok = 0.0, 0.0, True
    for n, (batch, indices) in enumerate(zip(batches, index_batches)):
        batch = batch.to("cpu")
        for k, i in enumerate(indices):
            ref = compute_features(load_audio(utterances[i].path), spec)
            length = int(batch.feature_lengths[k])
            if length != ref.shape[1]:
                print(f"  FAIL {name}: {utterances[i].path}: {length} frames, reference {ref.shape[1]}")
                ok = False
                continue
            worst_ref = max(worst_ref, (batch.features[k, :, :length] - ref).abs().max().item())
            if batch.features[k, :, length:].any():
                print(f"  FAIL {name}: {utterances[i].path}: padding is not zero")
                ok = False
        if against is not None:
            other = against[n]
            if not torch.equal(other.feature_lengths, batch.feature_lengths):
                print(f"  FAIL {name}: batch {n} lengths differ from dali_cpu")
                ok = False
            else:
                worst_other = max(worst_other, (other.features - batch.features).abs().max().item())
    ok = ok and worst_ref <= TOLERANCE and worst_other <= TOLERANCE
    versus = f", vs dali_cpu {worst_other:.2e}" if against is not None else ""
    print(f"  {name:<9} max |diff| vs reference {worst_ref:.2e}{versus}: {'ok' if ok else 'FAIL'}")
    return ok


def throughput(loader, index_batches, audio_seconds, repeats):
    """Seconds of audio per second, best of `repeats` passes after a warm-up pass (page cache, build)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for batch in loader.batches(index_batches):
            batch.feature_lengths.sum().item()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return audio_seconds / min(times[1:])


def main(argv=None):
    args = parse_args(argv)
    if not dali_available():
        print("error: NVIDIA DALI is not installed (pip install -r requirements-dali.txt)", file=sys.stderr)
        return 2
    from benchmark.data.dali_loader import DaliLoader
    utterances = read_manifests(args.manifest)
    if args.limit:
        utterances = utterances[:args.limit]
    durations = [soundfile.info(str(u.path)).frames / SAMPLE_RATE for u in utterances]
    index_batches = eval_batches(durations, args.batch_size)
    audio_seconds = sum(durations)
    has_gpu = torch.cuda.is_available()
    print(f"{len(utterances)} utterances, {audio_seconds / 60:.1f} min of audio, {len(index_batches)} batches; "
          f"DALI threads {args.threads}; " + (f"GPU {torch.cuda.get_device_name()}" if has_gpu else "no GPU"))
    if not has_gpu:
        print("GPU part SKIPPED: torch.cuda.is_available() is False on this machine; checking dali_cpu only")
    ok, rows = True, []
    for spec in (FeatureSpec("spectrogram"), FeatureSpec("logmel", 80)):
        print(f"{spec.kind} ({spec.num_features} features):")
        cpu = DaliLoader(utterances, spec, "cpu", workers=args.threads)
        cpu_batches = list(cpu.batches(index_batches))
        ok &= compare("dali_cpu", cpu_batches, index_batches, utterances, spec)
        row = {"features": f"{spec.kind}{spec.num_features}",
               "dali_cpu": throughput(cpu, index_batches, audio_seconds, args.repeats)}
        if has_gpu:
            gpu = DaliLoader(utterances, spec, "cuda", workers=args.threads, on_gpu=True)
            gpu_batches = [b.to("cpu") for b in gpu.batches(index_batches)]
            ok &= compare("dali_gpu", gpu_batches, index_batches, utterances, spec, against=cpu_batches)
            first = next(iter(gpu.batches(index_batches[:1])))
            if not (first.features.is_cuda and first.targets.is_cuda):
                print("  FAIL dali_gpu: batch is not on the GPU")
                ok = False
            perturbed = DaliLoader(utterances, spec, "cuda", workers=args.threads, on_gpu=True,
                                   speed_perturbation=(0.9, 1.1))
            frames = sum(int(b.feature_lengths.sum()) for b in perturbed.batches(index_batches))
            plain = sum(int(b.feature_lengths.sum()) for b in cpu_batches)
            print(f"  dali_gpu with speed perturbation (0.9, 1.1): {frames} frames vs {plain} unperturbed "
                  f"({frames / plain:.3f}x)")
            row["dali_gpu"] = throughput(gpu, index_batches, audio_seconds, args.repeats)
        rows.append(row)
    print(f"\n{'features':<14} {'dali_cpu audio s/s':>19} {'dali_gpu audio s/s':>19} {'gpu/cpu':>8}")
    for row in rows:
        gpu = row.get("dali_gpu")
        print(f"{row['features']:<14} {row['dali_cpu']:19.0f} " +
              (f"{gpu:19.0f} {gpu / row['dali_cpu']:7.1f}x" if gpu else f"{'skipped (no GPU)':>19} {'':>8}"))
    print("\nALL CHECKS PASSED" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
