"""How long the preflight takes on a LibriSpeech-sized manifest (960 h: 281,241 training rows).

Usage:
  python measure/preflight_speed.py                    # 281,000 rows in a temporary folder, then removed
  python measure/preflight_speed.py --rows 50000 --keep /tmp/pf   # smaller; keep the folder

Builds, in a temporary folder, a few real 16 kHz WAVs (sox tones of 2-16 s) and ROWS symlinks to them in a
LibriSpeech-like tree (1,000 per folder), each a manifest row of its own with the right wav_filesize; then
times, with the project's own code, (1) benchmark.preflight.check_run on that manifest (what the training
runs before init_start) and (2) the whole `python -m benchmark.train ... --check_only true` command the
launchers run (interpreter and torch import, the plan, the preflight). Prints both figures; the goal is
under 60 s on 2 cores. The symlinks' directory entries are in the page cache (just made), as on a machine
where the data was just prepared; a cold cache adds one metadata read per file.
"""
import argparse
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmark.config import TrainConfig  # noqa: E402  (path set up above: runs as a plain script)
from benchmark.data.manifest import Utterance, write_manifest  # noqa: E402
from benchmark.preflight import check_run  # noqa: E402

WAV_SECONDS = (2.0, 6.35, 12.3, 16.0)
PER_FOLDER = 1000


def build(folder, rows):
    """ROWS symlinks to len(WAV_SECONDS) real WAVs, and train.csv / dev.csv over them."""
    sources = []
    for seconds in WAV_SECONDS:
        path = folder / f"tone_{seconds}.wav"
        subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "synth", str(seconds),
                        "sine", "440"], check=True)
        sources.append((path, path.stat().st_size))
    utterances = []
    for i in range(rows):
        sub = folder / "wav" / str(i // PER_FOLDER)
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True)
        target, size = sources[i % len(sources)]
        link = sub / f"{i}.wav"
        os.symlink(target, link)
        utterances.append(Utterance(link, size, "A TRANSCRIPT OF SOME WORDS"))
    write_manifest(folder / "train.csv", utterances, relative_to=folder)
    write_manifest(folder / "dev.csv", utterances[:2000], relative_to=folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", type=int, default=281_000, help="training manifest rows")
    parser.add_argument("--keep", type=Path, default=None, help="build in this (new) folder and keep it")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be positive, got {args.rows}")
    if args.keep and args.keep.exists():
        parser.error(f"--keep {args.keep}: exists; give a new folder")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="preflight_speed."))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        build(folder, args.rows)
        built = time.perf_counter() - start
        print(f"built {args.rows} rows (symlinks to {len(WAV_SECONDS)} WAVs) in {built:.1f} s", flush=True)
        config = TrainConfig(train_data_dir=str(folder / "train.csv"), eval_data_dir=str(folder / "dev.csv"))
        start = time.perf_counter()
        checked = check_run(config)
        in_process = time.perf_counter() - start
        assert len(checked.train) == args.rows, len(checked.train)
        print(f"preflight check_run: {in_process:.1f} s for {args.rows + 2000} rows "
              f"({(args.rows + 2000) / in_process:,.0f} rows/s)", flush=True)
        command = [sys.executable, "-m", "benchmark.train", f"--train_data_dir={folder / 'train.csv'}",
                   f"--eval_data_dir={folder / 'dev.csv'}", "--num_gpus=0", "--check_only=true"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        whole = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"--check_only failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        print(f"python -m benchmark.train --check_only true: {whole:.1f} s "
              f"({os.cpu_count()} cores; goal < 60 s)", flush=True)
        print(done.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
