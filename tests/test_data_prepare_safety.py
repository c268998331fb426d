"""Data preparation that starts clean or not at all: clips shorter than a window, subsets with nothing usable,
archive tables that name paths, two preparations of one folder, files other users can read.

The real command lines run on small LibriSpeech-layout trees made with sox (no download: the FLAC tree is
already extracted, as a re-run finds it).
"""
import os
from pathlib import Path
import signal
import stat
import subprocess
import sys

import pytest

from benchmark.data.manifest import read_manifest, write_manifest
from benchmark.prepare import librispeech
from benchmark.prepare.convert import FatalDataError, preparation_lock
from test_data_convert import sox_tone

REPO = Path(__file__).resolve().parents[1]
CHAPTER = Path("19") / "198"


def chapter_tree(root, clips):
    """LibriSpeech/dev-clean/19/198 under root with {index: seconds or bytes} clips and their transcripts."""
    chapter = root / "LibriSpeech" / "dev-clean" / CHAPTER
    chapter.mkdir(parents=True)
    lines = []
    for index, clip in clips.items():
        path = chapter / f"19-198-{index:04d}.flac"
        if isinstance(clip, bytes):
            path.write_bytes(clip)
        else:
            sox_tone(path, seconds=clip)
        lines.append(f"19-198-{index:04d} CLIP NUMBER {'I' * (index + 1)}")
    (chapter / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def prepare_cli(data_dir, *extra):
    return subprocess.run([sys.executable, "-m", "benchmark.prepare.librispeech", "--data_dir", str(data_dir),
                           "--subsets", "dev-clean", "--jobs", "2", *extra], cwd=REPO, capture_output=True, text=True)


def test_a_clip_shorter_than_one_window_is_left_out(tmp_path):
    """Before: a 10 ms clip (160 samples) was kept; no feature frame can be computed from it."""
    data_dir = chapter_tree(tmp_path / "data", {0: 1.0, 1: 0.01, 2: 0.025})
    done = prepare_cli(data_dir)
    assert done.returncode == 0, done.stderr
    kept = [u.path.name for u in read_manifest(data_dir / "dev-clean.csv")]
    assert kept == ["19-198-0000.wav", "19-198-0002.wav"]   # 25 ms = 400 samples: one window, kept
    assert "19-198-0001.flac: too short (160 samples at 16 kHz" in done.stdout + done.stderr


@pytest.mark.parametrize("clips", [{0: b"not audio " * 50, 1: 0.01}, {}], ids=["all bad", "empty"])
def test_a_subset_without_a_usable_utterance_fails_and_leaves_no_manifest(tmp_path, clips):
    """Before: a header-only manifest, exit 0, and every later run said 'already prepared, nothing to do'."""
    data_dir = chapter_tree(tmp_path / "data", clips)
    for _ in range(2):   # the second run fails the same way: nothing was taken for prepared
        done = prepare_cli(data_dir)
        assert done.returncode == 1 and "no usable utterance" in done.stderr, done.stdout + done.stderr
        assert "no manifest written" in done.stderr and not (data_dir / "dev-clean.csv").exists()


def test_a_header_only_manifest_of_an_older_version_is_prepared_again(tmp_path):
    data_dir = chapter_tree(tmp_path / "data", {0: 1.0})
    write_manifest(data_dir / "dev-clean.csv", [])
    done = prepare_cli(data_dir)
    assert done.returncode == 0 and "holds no utterance; preparing it again" in done.stdout, done.stderr
    assert len(read_manifest(data_dir / "dev-clean.csv")) == 1


@pytest.mark.parametrize("name", ["../outside.tar.gz", "sub/dev-clean.tar.gz", "..", ".hidden.tar.gz", "",
                                  "/tmp/abs.tar.gz", "a\\b.tar.gz"])
def test_the_archive_table_accepts_only_plain_file_names(tmp_path, name):
    """Before: `../` in a file name wrote the archive outside --data_dir."""
    table = tmp_path / "table.csv"
    table.write_text(f"subset,filename,size,md5\ndev-clean,{name},10,{'0' * 32}\n")
    with pytest.raises(FatalDataError, match=f"{table}:2: filename .* must be a plain file name"):
        librispeech.read_archive_table(table)
    done = prepare_cli(tmp_path / "data", "--archive_table", str(table))
    assert done.returncode == 1 and "plain file name" in done.stderr
    assert not (tmp_path / "outside.tar.gz").exists() and not (tmp_path / "data").exists()


def test_a_second_preparation_of_one_folder_stops_at_once_naming_the_first(tmp_path):
    """Before: two syntheses started into one new folder removed each other's temporaries ('cannot write')."""
    data_dir = chapter_tree(tmp_path / "data", {0: 1.0})
    with preparation_lock(data_dir):   # this test process is "the first preparation"
        done = prepare_cli(data_dir)
        assert done.returncode == 1 and f"another preparation (pid {os.getpid()}) is writing" in done.stderr
        synth = subprocess.run([sys.executable, "-m", "benchmark.prepare.synthetic", "--data_dir", str(data_dir),
                                "--hours", "0.001"], cwd=REPO, capture_output=True, text=True)
        assert synth.returncode == 1 and "another preparation" in synth.stderr, synth.stderr
        assert not (data_dir / "dev-clean.csv").exists() and not (data_dir / "train").exists()
    # A holder killed with -9 frees the folder (the kernel drops its lock), even while a worker it forked
    # lives on, as sox/espeak pool workers outlive a killed preparation by their last file. Before (flock,
    # shared with forked children): the re-run after a kill said "another preparation" until they ended.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    worker = int(holder.stdout.readline().split()[1])
    try:
        assert prepare_cli(data_dir).returncode == 1
        holder.kill()
        holder.wait()
        os.kill(worker, 0)   # the orphaned worker is still alive...
        done = prepare_cli(data_dir)
        assert done.returncode == 0, done.stderr   # ...and the folder is free
    finally:
        holder.kill()
        os.kill(worker, signal.SIGKILL)


HOLDER = """
import os, sys, time
from benchmark.prepare.convert import preparation_lock
with preparation_lock(sys.argv[1]):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print("worker", child, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_manifests_and_problem_lists_are_readable_by_others(tmp_path, umask):
    """Before: manifests were mode 0600 (mkstemp's), unreadable on a shared data folder."""
    data_dir = chapter_tree(tmp_path / "data", {0: 1.0, 1: 0.01})
    done = subprocess.run(["bash", "-c", f"umask {umask:03o} && exec \"$0\" -m benchmark.prepare.librispeech "
                           f"--data_dir {data_dir} --subsets dev-clean --jobs 1", sys.executable], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ("dev-clean.csv", "dev-clean.problems.txt"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o666 & ~umask, name
    wav = next((data_dir / "wav").rglob("*.wav"))
    assert stat.S_IMODE(wav.stat().st_mode) == 0o666 & ~umask
