"""How long the training loop waits for batches, per data backend: the real training on a sample of a corpus.

Usage:
  nice -n 10 python measure/data_wait.py --manifest data/synthetic/train.csv          # torch and dali_cpu
  python measure/data_wait.py --manifest ... --utterances 800 --backends dali_cpu --system CPU

For each backend it runs `python -m benchmark.train` as `SYSTEM=<system> ./run_and_time.sh` would launch it
(config_<system>.sh's flags and process count, via measure/system_recipe.py), for one epoch over
--utterances utterances drawn from --manifest (seeded), then reads the epoch's `data_wait_seconds` and
`train_throughput` events from its MLPerf log: the fraction of the epoch the loop spent waiting for the
loader, at the rate the model trains here. Evaluation runs on a few utterances and is not part of the
figure. Backends run one after the other on the same sample; the page cache is warm after the first
(read the files once beforehand, or compare the later ones). The aim (issue 17): under 2%.
"""
import argparse
import csv
import os
from pathlib import Path
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.data.backends import BACKENDS  # noqa: E402
from benchmark.data.manifest import read_manifests  # noqa: E402
from benchmark.mlperf_log import Key, read_log, timed_region  # noqa: E402
from measure.system_recipe import system_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_sample(utterances, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["wav_filename", "wav_filesize", "transcript"])
        writer.writerows([str(Path(u.path).resolve()), u.size, u.transcript] for u in utterances)


def run_epoch(recipe, backend, train_csv, eval_csv, folder, extra):
    """One epoch of benchmark.train with `backend`; returns (data wait fraction, epoch seconds, utt/s)."""
    run = len(list(folder.glob("run_*.txt"))) + 1
    log_file = folder / f"run_{run}.txt"
    flags = {**recipe.flags, "train_data_dir": str(train_csv), "eval_data_dir": str(eval_csv), "max_epochs": "1",
             "data_backend": backend, "log_every": "0"}
    argv = [f"--{name}={value}" for name, value in flags.items()] + [
        f"--log_file={log_file}", f"--output_dir={folder / f'run_{run}'}", "--target_wer=0.01", "--num_gpus=0", *extra]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={recipe.nproc}"]
    done = subprocess.run(launcher + ["-m", "benchmark.train", *argv], cwd=ROOT, capture_output=True, text=True)
    records, _ = read_log(log_file)
    by_key = {r.key: r for r in records}
    # The run stops with status aborted after its one epoch (the target is out of reach), as intended;
    # torchrun then exits 1. Anything else (no epoch logged, no run_stop, a log that breaks the one rule of
    # benchmark.mlperf_log.timed_region) is a failure.
    region = timed_region(records)
    if Key.DATA_WAIT_SECONDS not in by_key or not region.valid or region.stop is None:
        raise SystemExit(f"error: the {backend} run logged no epoch (exit status {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    wait = by_key[Key.DATA_WAIT_SECONDS]
    seconds = wait.metadata["epoch_seconds"]
    samples = by_key[Key.TRAIN_SAMPLES].value   # an older tree's log may lack train_throughput
    return wait.metadata["fraction"], seconds, samples / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--manifest", required=True, help="training manifest CSV(s) to sample from")
    parser.add_argument("--utterances", type=int, default=800, help="utterances in the sample (one epoch)")
    parser.add_argument("--backends", default="torch,dali_cpu", help="data backends to compare, in this order")
    parser.add_argument("--system", default="CPU", help="config_<SYSTEM>.sh whose recipe and NPROC to run")
    parser.add_argument("--seed", type=int, default=1, help="which utterances are drawn")
    parser.add_argument("extra", nargs="*", help="more benchmark.train flags after --, e.g. -- --num_workers=2")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    for name in backends:
        if name not in BACKENDS:
            parser.error(f"--backends: {name!r} is not one of {','.join(BACKENDS)}")
    recipe = system_recipe(args.system)
    utterances = read_manifests(args.manifest)
    if args.utterances > len(utterances):
        parser.error(f"--utterances {args.utterances}: the manifest has {len(utterances)}")
    sample = random.Random(args.seed).sample(utterances, args.utterances)
    print(f"# {os.cpu_count()} cores; config_{args.system}.sh, {recipe.nproc} process(es); one epoch of "
          f"{len(sample)} utterances ({sum(u.duration for u in sample) / 3600:.2f} h) from {args.manifest}",
          flush=True)
    print(f"{'backend':9s} {'epoch s':>8s} {'utt/s':>7s} {'data wait':>9s}", flush=True)
    with tempfile.TemporaryDirectory(prefix="data_wait.") as folder:
        folder = Path(folder)
        write_sample(sample, folder / "train.csv")
        write_sample(sample[:16], folder / "eval.csv")
        for backend in backends:
            fraction, seconds, rate = run_epoch(recipe, backend, folder / "train.csv", folder / "eval.csv", folder,
                                                args.extra)
            print(f"{backend:9s} {seconds:8.1f} {rate:7.2f} {100 * fraction:8.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
