"""The shared converter on bad input: every problem is named, counted and left out; odd formats normalized."""
from pathlib import Path
import subprocess
import sys
import wave

import pytest
import soundfile

from benchmark.prepare.convert import prepare_subset, scan_tree
from benchmark.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
CHAPTER = Path("19") / "198"


def sox_tone(path, seconds=1.0, rate=16000, channels=1, bits=16, kind="sine"):
    subprocess.run(["sox", "-R", "-n", "-r", str(rate), "-c", str(channels), "-b", str(bits), str(path),
                    "synth", str(seconds), kind, "440"], check=True)


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory):
    """A LibriSpeech-layout chapter holding one example of every bad input, and some good ones."""
    root = tmp_path_factory.mktemp("bad") / "LibriSpeech" / "dev-clean"
    chapter = root / CHAPTER
    chapter.mkdir(parents=True)
    name = lambda i, ext="flac": chapter / f"19-198-{i:04d}.{ext}"
    sox_tone(name(0))                                                 # good
    name(1).write_bytes(bytes(range(256)) * 40)                       # not audio at all
    sox_tone(chapter / "long.flac", seconds=3.0, kind="pinknoise")   # noise: FLAC cannot shrink it
    name(2).write_bytes((chapter / "long.flac").read_bytes()[:40000])  # FLAC cut short
    (chapter / "long.flac").unlink()
    sox_tone(name(3, "wav"), seconds=2.0)
    name(3, "wav").write_bytes(name(3, "wav").read_bytes()[:20000])   # WAV cut short (header says 2 s)
    with wave.open(str(name(4, "wav")), "wb") as empty:               # header only: no samples
        empty.setnchannels(1), empty.setsampwidth(2), empty.setframerate(16000)
    sox_tone(name(6))                                                 # no transcript line
    sox_tone(name(7))                                                 # transcript outside the alphabet
    sox_tone(name(8, "wav"), seconds=1.5, rate=44100, channels=2)     # CD audio: normalized, kept
    sox_tone(name(9), seconds=1.0, rate=8000, bits=24)                # 8 kHz 24-bit: normalized, kept
    sox_tone(name(11))
    sox_tone(name(11, "wav"))                                         # the same utterance twice
    (chapter / "19-198.trans.txt").write_text("\n".join([
        "19-198-0000 CHAPTER ONE", "19-198-0001 NOT AUDIO", "19-198-0002 CUT FLAC", "19-198-0003 CUT WAV",
        "19-198-0004 EMPTY", "19-198-0005 NO AUDIO FOR THIS LINE", "19-198-0007 CAFÉ AU LAIT 42",
        "19-198-0008 mixed   case is fine", "19-198-0009 EIGHT KILOHERTZ", "19-198-0010",
        "19-198-0000 SAME ID AGAIN", "19-198-0011 TWICE"]) + "\n")
    return root


EXPECTED_PROBLEMS = {
    "19-198-0001.flac": "unreadable audio",
    "19-198-0002.flac": "corrupt audio",
    "19-198-0003.wav": "corrupt audio",
    "19-198-0004.wav": "empty audio",
    "19-198.trans.txt:6": "transcript without audio",
    "19-198-0006.flac": "audio without transcript",
    "19-198-0007.flac": "characters outside the alphabet",
    "19-198.trans.txt:10": "malformed transcript line",
    "19-198.trans.txt:11": "duplicate transcript line",
    "19-198-0011.wav": "duplicate audio",
}


def test_every_bad_input_is_named_counted_and_left_out(bad_tree, tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "LibriSpeech").mkdir(parents=True)
    (data_dir / "LibriSpeech" / "dev-clean").symlink_to(bad_tree, target_is_directory=True)
    process = subprocess.run([sys.executable, "-m", "benchmark.prepare.librispeech", "--data_dir", str(data_dir),
                              "--subsets", "dev-clean", "--jobs", "2"], cwd=REPO, capture_output=True, text=True)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output  # per-file problems are not fatal
    for where, kind in EXPECTED_PROBLEMS.items():
        assert any(where in line and kind in line for line in output.splitlines()), (where, kind, output)
    assert f"left out {len(EXPECTED_PROBLEMS)} files" in output
    assert "normalized 2 files" in output
    listed = (data_dir / "dev-clean.problems.txt").read_text().splitlines()
    assert len(listed) == len(EXPECTED_PROBLEMS) + 2
    assert "CAFÉ" not in (data_dir / "dev-clean.csv").read_text()
    kept = {u.path.name: u for u in read_manifest(data_dir / "dev-clean.csv")}
    assert sorted(kept) == ["19-198-0000.wav", "19-198-0008.wav", "19-198-0009.wav", "19-198-0011.wav"]
    assert kept["19-198-0008.wav"].transcript == "MIXED CASE IS FINE"
    for utterance, seconds in ((kept["19-198-0008.wav"], 1.5), (kept["19-198-0009.wav"], 1.0)):
        info = soundfile.info(str(utterance.path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - seconds) < 0.01 and abs(utterance.duration - seconds) < 0.01


def test_rerun_reports_the_same_problems_and_converts_nothing_twice(bad_tree, tmp_path):
    messages = []
    first = prepare_subset(bad_tree, tmp_path / "wav", tmp_path / "dev-clean.csv", jobs=1, report=messages.append)
    manifest = (tmp_path / "dev-clean.csv").read_bytes()
    second = prepare_subset(bad_tree, tmp_path / "wav", tmp_path / "dev-clean.csv", jobs=1, report=messages.append)
    assert first.converted == len(first.utterances) + 4  # the four unreadable files are tried each run...
    assert second.converted == 4                          # ...the good ones only once
    assert [str(p) for p in first.problems] == [str(p) for p in second.problems]
    assert (tmp_path / "dev-clean.csv").read_bytes() == manifest


def test_scan_pairs_audio_with_transcripts(bad_tree, tmp_path):
    items, problems = scan_tree(bad_tree, tmp_path / "wav")
    assert [i.utterance_id for i in items] == ["19-198-0000", "19-198-0001", "19-198-0002", "19-198-0003",
                                               "19-198-0004", "19-198-0008", "19-198-0009", "19-198-0011"]
    assert all(i.target.parent == tmp_path / "wav" / CHAPTER and i.target.suffix == ".wav" for i in items)
    assert len(problems) == 6  # the rest are found when the audio is decoded


def test_missing_source_folder_is_fatal(tmp_path):
    from benchmark.prepare.convert import FatalDataError
    with pytest.raises(FatalDataError, match="source folder not found"):
        prepare_subset(tmp_path / "nope", tmp_path / "wav", tmp_path / "x.csv", report=lambda *_: None)
