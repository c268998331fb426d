"""kill -9 at random moments of data preparation and of training; the outcome must equal an uninterrupted run.

Usage:
  python measure/kill_resume_check.py                      # 10 + 10 kills, minutes on 2 cores
  python measure/kill_resume_check.py --kills 3 --hours 0.05 --epochs 4 --folder /tmp/krc   # quicker, kept

Preparation: a small synthetic corpus (python -m benchmark.prepare.synthetic, --hours of train audio) is
made once without interruption (the reference). Then the same command runs in a fresh folder and is killed
with SIGKILL at a random moment, drawn uniformly from (0.2 s, the reference's wall time), and started again,
until it completes; then the next trial starts in a fresh folder, until --kills kills have landed. Every
completed trial's train/dev/test manifests and fingerprint (sha256 over the manifests and every WAV's bytes)
must equal the reference's.

Training: a tiny model (the test suite's) trains --epochs epochs on that corpus without interruption (target
out of reach: run_stop aborted). Then the same command with --resume true is killed at random moments (drawn
from (1 s, the reference's wall time)) and started again, each time resuming after its last checkpoint, until
a run ends; trials repeat until --kills kills have landed. Every eval_accuracy (WER) and train_loss the resumed
runs logged for an epoch must equal the reference's for that epoch (one thread per process: CPU kernels are bitwise
deterministic, and a checkpoint restores weights, optimizer, schedule and RNG).

Prints one line per kill (moment, what was done by then) and a summary; exits 0 when every comparison held,
1 when one did not. Only the project's own commands run, as a user would type them.
"""
import argparse
import json
import os
from pathlib import Path
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmark.mlperf_log import Key, read_log  # noqa: E402  (path set up above: runs as a plain script)

TINY_MODEL = ["--features", "logmel", "--n_mels", "40", "--rnn_type", "gru", "--rnn_hidden_size", "32",
              "--rnn_layers", "2", "--conv_channels", "4", "--time_stride", "4", "--batch_size", "8",
              "--eval_batch_size", "32", "--num_threads", "1", "--num_workers", "0", "--log_every", "0",
              "--num_gpus", "0", "--learning_rate", "1e-2", "--target_wer", "0.01"]
MANIFESTS = ("train.csv", "dev.csv", "test.csv", "fingerprint.json")


def start(cmd, log):
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def kill_at(process, moment):
    """SIGKILL `process` `moment` seconds after now; False when it ended by itself first (then its
    returncode says how)."""
    try:
        process.wait(timeout=moment)
        return False
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return True


def corpus_state(folder):
    """What a preparation had done by a kill: FLACs synthesized, WAVs converted, manifests written."""
    count = lambda pattern: sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0
    return (f"{count('*/*/*/*.flac')} FLAC, {count('wav/*/*/*/*.wav')} WAV, "
            f"{sum((folder / m).is_file() for m in MANIFESTS)} of {len(MANIFESTS)} manifests/fingerprint")


def corpus_bytes(folder):
    return {m: (folder / m).read_bytes() for m in MANIFESTS}


def check_preparation(args, work, rng, log):
    prep = lambda folder: [sys.executable, "-m", "benchmark.prepare.synthetic", "--data_dir", str(folder),
                           "--hours", str(args.hours), "--eval_hours", str(args.eval_hours), "--speakers", "8",
                           "--seed", "3", "--jobs", str(args.jobs)]
    reference = work / "corpus_reference"
    began = time.perf_counter()
    if subprocess.run(prep(reference), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
        raise SystemExit(f"the uninterrupted preparation failed (see {log.name})")
    wall = time.perf_counter() - began
    expected = corpus_bytes(reference)
    print(f"preparation: uninterrupted {wall:.1f} s, sha256 "
          f"{json.loads(expected['fingerprint.json'])['sha256'][:16]}", flush=True)
    kills, trials, same, failures, external = 0, 0, [], 0, 0
    while kills < args.kills:
        trials += 1
        folder = work / f"corpus_trial{trials}"
        while True:
            moment = rng.uniform(0.2, wall)
            process = start(prep(folder), log) if kills < args.kills else None
            if process and kill_at(process, moment):
                kills += 1
                print(f"  prep kill {kills:2d} (trial {trials}) at {moment:5.2f} s: {corpus_state(folder)}", flush=True)
                continue
            if process is None:   # the last kill landed: finish this trial uninterrupted
                process = subprocess.run(prep(folder), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            if process.returncode == -signal.SIGTERM:   # not ours (see check_training): one more interruption
                external += 1
                print(f"  trial {trials}: the run was stopped by a SIGTERM from outside; re-running", flush=True)
                continue
            if process.returncode != 0:   # a re-run after a kill must not fail (e.g. a lock left behind)
                failures += 1
                print(f"  trial {trials}: the re-run FAILED with exit {process.returncode} (see {log.name})", flush=True)
                same.append(False)
                break
            equal = (folder / "fingerprint.json").is_file() and corpus_bytes(folder) == expected
            same.append(equal)
            print(f"  trial {trials} complete: manifests and fingerprint "
                  f"{'identical to' if equal else 'DIFFER from'} the uninterrupted preparation", flush=True)
            break
    return reference, {"kills": kills, "trials": trials, "identical": all(same), "failed_reruns": failures,
                       "external_sigterms": external, "uninterrupted_s": round(wall, 1)}


def wers_by_epoch(log_file, key=Key.EVAL_ACCURACY):
    """{epoch: [every `key` value logged for it]} (a resumed run may evaluate an epoch twice)."""
    found = {}
    for record in read_log(log_file)[0]:
        if record.key == key:
            found.setdefault(record.metadata[Key.EPOCH_NUM], []).append(record.value)
    return found


def check_training(args, work, corpus, rng, log):
    def train(name, *extra):
        return [sys.executable, "-m", "benchmark.train", "--train_data_dir", str(corpus / "train.csv"),
                "--eval_data_dir", str(corpus / "dev.csv"), "--max_epochs", str(args.epochs),
                "--log_file", str(work / f"{name}.txt"), "--model_dir", str(work / f"{name}_ckpt"),
                "--output_dir", str(work / name), *TINY_MODEL, *extra]
    began = time.perf_counter()
    done = subprocess.run(train("train_reference"), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - began
    if done.returncode != 3:   # 3: aborted at --max_epochs, the target being out of reach, as intended
        raise SystemExit(f"the uninterrupted training exited {done.returncode} (see {log.name})")
    expected = {epoch: values[0] for epoch, values in wers_by_epoch(work / "train_reference.txt").items()}
    losses = {epoch: values[0] for epoch, values in
              wers_by_epoch(work / "train_reference.txt", Key.TRAIN_LOSS).items()}
    print(f"training: uninterrupted {wall:.1f} s, {args.epochs} epochs, WER by epoch "
          + ", ".join(f"{e}: {w:.4f}" for e, w in sorted(expected.items())) + "; loss by epoch "
          + ", ".join(f"{e}: {v:.3f}" for e, v in sorted(losses.items())), flush=True)
    kills, trials, same, external = 0, 0, [], 0
    while kills < args.kills:
        trials += 1
        name = f"train_trial{trials}"
        while True:
            moment = rng.uniform(1.0, wall)
            process = start(train(name, "--resume", "true"), log)
            if kills < args.kills and kill_at(process, moment):
                kills += 1
                ckpts = sorted(p.name for p in (work / f"{name}_ckpt").glob("*.pt")) if (
                    work / f"{name}_ckpt").is_dir() else []
                print(f"  train kill {kills:2d} (trial {trials}) at {moment:5.2f} s: "
                      f"{len(wers_by_epoch(work / f'{name}.txt'))} epoch(s) evaluated, "
                      f"last checkpoint {ckpts[-1] if ckpts else 'none'}", flush=True)
                continue
            if process.poll() is None:   # kills done: let this run finish
                process.wait()
            if process.returncode in (128 + signal.SIGTERM, -signal.SIGTERM):   # handled, or before the handler
                # Not ours (we send SIGKILL only): another user's pkill on a shared machine. The run logged
                # run_stop aborted and exited; it is one more interruption to resume from, so go on.
                external += 1
                print(f"  trial {trials}: the run was stopped by a SIGTERM from outside; resuming", flush=True)
                continue
            if process.returncode != 3:
                raise SystemExit(f"{name} exited {process.returncode} after the kills (see {log.name})")
            got = wers_by_epoch(work / f"{name}.txt")
            got_losses = wers_by_epoch(work / f"{name}.txt", Key.TRAIN_LOSS)
            equal = set(got) == set(expected) and all(v == expected[e] for e, vs in got.items() for v in vs)
            equal_loss = set(got_losses) == set(losses) and all(
                v == losses[e] for e, vs in got_losses.items() for v in vs)
            same.append(equal and equal_loss)
            print(f"  trial {trials} complete: {sum(map(len, got.values()))} evaluations over {len(got)} epochs, "
                  f"WERs {'identical to' if equal else 'DIFFER from'} the uninterrupted run, training losses "
                  f"{'identical' if equal_loss else 'DIFFERENT'}", flush=True)
            break
    return {"kills": kills, "trials": trials, "identical": all(same), "uninterrupted_s": round(wall, 1),
            "external_sigterms": external, "wer_by_epoch": expected}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="kill -9s of preparation, and as many of training")
    parser.add_argument("--hours", type=float, default=0.2, help="synthetic train audio (hours)")
    parser.add_argument("--eval_hours", type=float, default=0.02, help="synthetic dev and test audio (hours each)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (the target is out of reach)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="preparation processes")
    parser.add_argument("--seed", type=int, default=15, help="seed of the kill moments")
    parser.add_argument("--folder", type=Path, default=None, help="work here (a new folder) and keep it")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.epochs < 1 or args.hours <= 0:
        parser.error("--kills, --epochs and --hours must be positive")
    if args.folder and args.folder.exists():
        parser.error(f"--folder {args.folder}: exists; give a new one")
    work = args.folder or Path(tempfile.mkdtemp(prefix="kill_resume."))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    began = time.perf_counter()
    try:
        with open(work / "commands.log", "w") as log:
            corpus, prep = check_preparation(args, work, rng, log)
            train = check_training(args, work, corpus, rng, log)
    finally:
        if not args.folder:
            shutil.rmtree(work, ignore_errors=True)
    summary = {"preparation": prep, "training": train, "seconds": round(time.perf_counter() - began, 1),
               "cores": len(os.sched_getaffinity(0))}
    print("SUMMARY " + json.dumps(summary))
    return 0 if prep["identical"] and train["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
