import os

# Shared 2-core CI machines: OpenMP threads spin briefly, then sleep (see scripts/threads.sh); set before torch loads.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")   # bounded OpenMP spin, as scripts/threads.sh

import csv
import subprocess

import pytest

TINY_SENTENCES = ["THE CAT SAT ON THE MAT", "A DOG RAN IN THE PARK", "HELLO WORLD THIS IS A TEST",
                  "SPEECH RECOGNITION IS FUN", "IT'S A SUNNY DAY", "WE LIKE TO TRAIN MODELS",
                  "THE QUICK BROWN FOX", "JUMPS OVER THE LAZY DOG"]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """16 real espeak-ng utterances (two voices) as 16 kHz WAV with train.csv and dev.csv manifests."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    rows = []
    for i, sentence in enumerate(TINY_SENTENCES * 2):
        raw, wav = root / f"raw{i}.wav", root / f"utt{i}.wav"
        subprocess.run(["espeak-ng", "-v", ["en-us", "en-gb"][i % 2], "-w", str(raw), sentence.lower()], check=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
        raw.unlink()
        rows.append([wav.name, wav.stat().st_size, sentence])
    for name, subset in (("train.csv", rows), ("dev.csv", rows[:6])):
        with open(root / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["wav_filename", "wav_filesize", "transcript"])
            writer.writerows(subset)
    return root
