"""The espeak-ng corpus: layout, manifests, disjoint sentences, seen speakers, determinism, resume."""
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import pytest
import soundfile

from benchmark.prepare import prose, synthetic
from benchmark.prepare.convert import FatalDataError
from benchmark.data.manifest import read_manifest
from benchmark.text import invalid_chars

TINY = dict(hours=0.004, eval_hours=0.002, speakers=6, seed=3)   # about 15 s of train audio, 7 s per eval set
REPO = Path(__file__).resolve().parents[1]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("synthetic")
    result = synthetic.build(data_dir, jobs=2, report=quiet, **TINY)
    return data_dir, result


def test_layout_is_librispeech(corpus):
    data_dir, _ = corpus
    for subset in synthetic.SUBSETS:
        flacs = sorted((data_dir / subset).rglob("*.flac"))
        assert flacs, subset
        for flac in flacs:
            speaker, chapter = flac.parent.parent.name, flac.parent.name
            assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}\.flac", flac.name)
            trans = flac.parent / f"{speaker}-{chapter}.trans.txt"
            ids = [line.split()[0] for line in trans.read_text().splitlines()]
            assert flac.stem in ids
            info = soundfile.info(str(flac))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_manifests_list_16k_mono_wavs_with_valid_transcripts(corpus):
    data_dir, result = corpus
    for subset in synthetic.SUBSETS:
        csv_path = data_dir / f"{subset}.csv"
        assert csv_path.read_text().splitlines()[0] == "wav_filename,wav_filesize,transcript"
        rows = csv_path.read_text().splitlines()[1:]
        assert all(not os.path.isabs(row.split(",")[0]) for row in rows)  # relative to DIR
        utterances = read_manifest(csv_path)
        assert len(utterances) == result["subsets"][subset]["utterances"] > 0
        for u in utterances:
            assert u.path.is_file() and u.path.stat().st_size == u.size
            info = soundfile.info(str(u.path))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert 0.5 < u.duration < 15
            assert u.transcript and not invalid_chars(u.transcript)
    train_hours = result["subsets"]["train"]["hours"]
    assert TINY["hours"] * 0.7 < train_hours < TINY["hours"] * 2.5


def test_dev_test_sentences_unseen_but_speakers_seen(corpus):
    data_dir, _ = corpus
    manifests = {s: read_manifest(data_dir / f"{s}.csv") for s in synthetic.SUBSETS}
    sentences = {s: {u.transcript for u in us} for s, us in manifests.items()}
    speakers = {s: {u.path.name.split("-")[0] for u in us} for s, us in manifests.items()}
    assert not sentences["train"] & sentences["dev"]
    assert not sentences["train"] & sentences["test"]
    assert not sentences["dev"] & sentences["test"]
    assert speakers["dev"] <= speakers["train"] and speakers["test"] <= speakers["train"]


def test_same_seed_same_corpus_other_seed_other_corpus(corpus, tmp_path):
    _, result = corpus
    again = synthetic.build(tmp_path / "again", jobs=1, report=quiet, **TINY)  # --jobs does not matter
    assert again["sha256"] == result["sha256"]
    other = synthetic.build(tmp_path / "other", jobs=2, report=quiet, **dict(TINY, seed=4))
    assert other["sha256"] != result["sha256"]


def test_second_run_does_nothing_and_killed_run_resumes(corpus, tmp_path):
    data_dir, result = corpus
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    messages = []
    assert synthetic.build(copy, jobs=2, report=messages.append, **TINY)["sha256"] == result["sha256"]
    assert "nothing to do" in messages[-1]
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before
    # What a kill -9 leaves: no fingerprint, a missing FLAC, a missing WAV, a half-written temporary.
    (copy / "fingerprint.json").unlink()
    flac = sorted((copy / "train").rglob("*.flac"))[0]
    flac.unlink()
    wav = sorted((copy / "wav" / "dev").rglob("*.wav"))[0]
    wav.unlink()
    wav.with_name(wav.name + ".12345.tmp").write_bytes(b"RIFF")
    (copy / "train.csv").unlink()
    assert synthetic.build(copy, jobs=2, report=quiet, **TINY)["sha256"] == result["sha256"]
    assert flac.is_file() and wav.is_file() and not wav.with_name(wav.name + ".12345.tmp").exists()


def test_other_arguments_in_same_dir_are_refused(corpus):
    data_dir, _ = corpus
    with pytest.raises(FatalDataError, match="corpus made with"):
        synthetic.build(data_dir, report=quiet, **dict(TINY, seed=5))


def test_command_line_help_and_bad_flags():
    run = lambda *args: subprocess.run([sys.executable, "-m", "benchmark.prepare.synthetic", *args],
                                       capture_output=True, text=True, cwd=REPO)
    helped = run("--help")
    assert helped.returncode == 0
    for flag in ("--data_dir", "--hours", "--eval_hours", "--speakers", "--seed", "--jobs"):
        assert flag in helped.stdout
    assert "SEEN" in helped.stdout or "seen" in helped.stdout
    bad = run("--data_dir", "/tmp/unused", "--hours", "0")
    assert bad.returncode == 2 and "--hours must be positive" in bad.stderr


def test_speakers_are_distinct_and_reproducible():
    import random
    speakers = synthetic.make_speakers(40, random.Random(1))
    assert len({(s.voice, s.variant) for s in speakers}) == 40
    assert speakers == synthetic.make_speakers(40, random.Random(1))
    assert all(synthetic.PITCH_RANGE[0] <= s.pitch <= synthetic.PITCH_RANGE[1] for s in speakers)
    with pytest.raises(ValueError, match="--speakers"):
        synthetic.make_speakers(10_000, random.Random(1))


@pytest.mark.parametrize("raw, transcript", [
    ("A banker is a fellow who lends you his umbrella.", "A BANKER IS A FELLOW WHO LENDS YOU HIS UMBRELLA"),
    ("Mr. Smith said \"don't\" -- twice?", None),                      # dash used as punctuation
    ("Mr. Smith said, \"don't go\" in 1901.", "MISTER SMITH SAID DON'T GO IN NINETEEN OH ONE"),
    ("It costs 45 % & 3rd place, 'quoted' well-known.", "IT COSTS FORTY FIVE PERCENT AND THIRD PLACE QUOTED WELL KNOWN"),
    ("UNIX is a trademark of someone.", None),                         # acronym: spelled or read?
    ("It is 3.14 or so, they say.", None),                             # decimal
    ("print $x; if (a < b) {return}", None),                           # code
    ("Timesharing, n: an access method.", None),                       # stray letter
    ("Too short.", None),
    ("Ein Käse ist nicht gut für dich.", None),                        # foreign letters
])
def test_sentence_normalization(raw, transcript):
    normalized = prose.normalize_sentence(raw)
    assert (normalized[1] if normalized else None) == transcript
    if normalized:
        spoken_words = re.sub(r"[,.;:?!]", "", normalized[0]).upper().split()
        assert spoken_words == transcript.split()  # the voice says exactly the transcript


def test_number_words():
    assert prose.number_words(0) == "zero"
    assert prose.number_words(213) == "two hundred thirteen"
    assert prose.number_words(40_017) == "forty thousand seventeen"
    assert prose.ordinal_words(21) == "twenty first" and prose.ordinal_words(40) == "fortieth"


def test_fortunes_give_thousands_of_unique_sentences():
    sentences = prose.load_sentences()
    transcripts = [t for _, t in sentences]
    assert len(transcripts) > 10_000 and len(set(transcripts)) == len(transcripts)
    assert all(prose.MIN_WORDS <= len(t.split()) <= prose.MAX_WORDS and not invalid_chars(t) for t in transcripts)


def test_throughput_benchmark_prints_both_figures():
    process = subprocess.run([sys.executable, "measure/data_throughput.py", "--hours", "0.003", "--jobs", "2"],
                             cwd=REPO, capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    figures = re.findall(r"([\d.]+) audio-hours per minute", process.stdout)
    assert len(figures) == 2 and all(float(f) > 0 for f in figures), process.stdout
