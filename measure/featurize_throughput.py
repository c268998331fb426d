"""Featurization throughput of every data backend on the same files, in one run: seconds of audio per second.

Usage:
  python measure/featurize_throughput.py --manifest data/synthetic/train.csv [--limit 600] [--workers 1]
      [--batch_size 32] [--features spectrogram|logmel] [--n_mels 80] [--repeats 3] [--backends torch,dali_cpu]

Each backend reads, decodes, featurizes and pads the same duration-sorted batches (as the sampler cuts
them) and the batches are consumed as the training loop would (on the training device). The torch
DataLoader gets `--workers` worker processes, DALI `--workers` threads; each pass is timed after one
warm-up pass (files in the page cache, pipelines built), and the best of `--repeats` passes is reported.
dali_gpu runs when CUDA is available. Prints a table and each backend's ratio to the torch DataLoader, and
the CPU seconds each backend spends per minute of audio (a cost that neighbours on a shared machine do not
distort as much as wall time).
Run it nice'd on shared machines: `nice -n 10 ...`.
"""
import argparse
import os
import resource
from pathlib import Path
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GOMP_SPINCOUNT", "20000")   # bounded OpenMP spin, as scripts/threads.sh

import soundfile  # noqa: E402
import torch  # noqa: E402

from benchmark.config import TrainConfig  # noqa: E402
from benchmark.data.backends import BACKENDS, dali_available  # noqa: E402
from benchmark.data.manifest import read_manifests  # noqa: E402
from benchmark.data.sampler import eval_batches  # noqa: E402
from benchmark.features import SAMPLE_RATE, FeatureSpec  # noqa: E402
from benchmark.plan import make_plan  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--manifest", required=True, help="manifest CSV(s) of 16 kHz WAV/FLAC files, comma-separated")
    parser.add_argument("--limit", type=int, default=600, help="use the first N utterances (0: all)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes = DALI threads")
    parser.add_argument("--batch_size", type=int, default=32, help="utterances per batch")
    parser.add_argument("--features", choices=["spectrogram", "logmel"], default="spectrogram", help="feature kind")
    parser.add_argument("--n_mels", type=int, default=80, help="mel bins for --features logmel")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per backend (best is reported)")
    parser.add_argument("--backends", default="",
                        help="comma-separated subset of torch,dali_cpu,dali_gpu (default: all available)")
    args = parser.parse_args(argv)
    for name in ("workers", "batch_size", "repeats", "n_mels"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.limit < 0:
        parser.error(f"--limit must not be negative, got {args.limit}")
    return args


def available_backends():
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return [name for name in ("torch", "dali_cpu", "dali_gpu") if not BACKENDS[name].unavailable(device_type)]


def make(backend, utterances, spec, workers):
    """The backend's evaluation loader, from the run plan of a config with these data flags."""
    config = TrainConfig(data_backend=backend, num_workers=workers, features=spec.kind, n_mels=spec.n_mels)
    return make_plan(config).build_loader(utterances, train=False)


def cpu_seconds():
    """User + system CPU time of this process and its reaped children (DataLoader workers exit per pass)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_pass(loader, batches):
    """(wall seconds, CPU seconds, frames) to produce every batch on its device (GPU work synchronized)."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    frames = 0
    for batch in loader.batches(batches):
        frames += int(batch.feature_lengths.sum())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, cpu_seconds() - cpu_start, frames


def measure(backend, utterances, spec, workers, batches, repeats):
    loader = make(backend, utterances, spec, workers)
    _, _, frames = one_pass(loader, batches)   # warm-up: page cache, worker start-up, pipeline build
    passes = []
    for _ in range(repeats):
        seconds, cpu, again = one_pass(loader, batches)
        if again != frames:
            raise RuntimeError(f"{backend}: {again} frames in a pass after {frames} in the warm-up")
        passes.append((seconds, cpu))
    seconds, cpu = min(passes)
    return seconds, cpu, frames


def main(argv=None):
    args = parse_args(argv)
    utterances = read_manifests(args.manifest)
    if args.limit:
        utterances = utterances[:args.limit]
    # Real durations from the headers (the manifest's size is only a WAV proxy; FLAC is compressed).
    durations = [soundfile.info(str(u.path)).frames / SAMPLE_RATE for u in utterances]
    audio_seconds = sum(durations)
    batches = eval_batches(durations, args.batch_size)
    spec = FeatureSpec(args.features, args.n_mels)
    wanted = [b for b in args.backends.split(",") if b] or available_backends()
    missing = [b for b in wanted if b not in available_backends()]
    if missing:
        sys.exit(f"error: --backends {','.join(missing)} not available here (have {','.join(available_backends())})")
    if "dali_gpu" not in available_backends():
        print("note: dali_gpu skipped (" + ("no CUDA device" if dali_available() else "DALI not installed") + ")")
    print(f"{len(utterances)} utterances, {audio_seconds / 60:.1f} min of audio, {len(batches)} batches of "
          f"<= {args.batch_size}, features {spec.kind} ({spec.num_features}), {args.workers} worker(s)/thread(s), "
          f"{os.cpu_count()} CPUs, best of {args.repeats}")
    results = {}
    for backend in wanted:
        results[backend] = measure(backend, utterances, spec, args.workers, batches, args.repeats)
    base = results.get("torch", (None,))[0]
    # CPU s per audio min: what featurizing costs in cores, robust to neighbours on a shared machine.
    print(f"\n{'backend':<10} {'workers':>7} {'seconds':>8} {'audio s/s':>10} {'frames/s':>10} "
          f"{'CPU s/audio min':>16} {'vs torch':>9}")
    for backend, (seconds, cpu, frames) in results.items():
        ratio = f"{base / seconds:8.2f}x" if base else "      n/a"
        print(f"{backend:<10} {args.workers:>7} {seconds:8.3f} {audio_seconds / seconds:10.0f} "
              f"{frames / seconds:10.0f} {60 * cpu / audio_seconds:16.3f} {ratio:>9}")


if __name__ == "__main__":
    main()
