"""An offline spoken corpus in the LibriSpeech layout, voiced by espeak-ng, prepared like LibriSpeech.

Usage:
    python -m benchmark.prepare.synthetic --data_dir DIR [--hours 12] [--eval_hours 0.5] [--speakers 40]
                                       [--seed 1] [--jobs N]

Writes `DIR/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` with
`<speaker>-<chapter>.trans.txt` for subsets train, dev and test, then runs the same converter as
LibriSpeech (benchmark/prepare/convert.py): 16 kHz mono 16-bit WAVs under `DIR/wav/<subset>/` and manifests
`DIR/train.csv`, `DIR/dev.csv`, `DIR/test.csv` with paths relative to DIR. Finally it writes
`DIR/fingerprint.json`: a sha256 over the manifests and every WAV's bytes, with the espeak-ng and sox
versions and the arguments, so a result can name the exact corpus it was trained on.

What is in it:
- Text: real English prose from the Debian package `fortunes` (benchmark/prepare/prose.py), split into
  sentences of 3-25 words, normalized to the LibriSpeech alphabet, unique. Each sentence is used once,
  except when --hours asks for more train audio than the text holds (about 20 h): then train sentences
  are reused by other speakers. No sentence of dev or test occurs in train.
- Speakers: --speakers distinct pairs of an espeak-ng English voice (en-us, en-gb, en-gb-scotland, ...)
  and a variant (+m1..+m7, +f1..+f5, +klatt..), each with its own pitch (-p 25..75) and rate (-s 145..195
  words/min), all drawn from --seed.
- Dev and test speakers are SEEN in training (every dev/test utterance is read by a speaker who also
  reads train sentences; only the sentences are new). This is deliberate: a prototype found that espeak
  voices unseen in training stay near 72% WER, because a handful of synthetic voices does not teach
  speaker invariance, while the CPU benchmark's target is WER <= 0.30 on dev. Results on this corpus
  therefore measure sentence generalization, not speaker generalization.
- Sizes: --hours of train audio, --eval_hours each for dev and test (default 12 and 0.5). Durations are
  planned from a model of espeak-ng's speaking time, so real sizes land within a few percent; the real
  hours are printed and stored in fingerprint.json.

Deterministic: the same --seed, --hours, --eval_hours, --speakers and the same espeak-ng and sox versions
give byte-identical audio and manifests (the fingerprint says so); --jobs does not change the output.
One synthesis per DIR at a time (DIR/.prepare.lock; a second one stops at once, exit 1).
Idempotent: a complete corpus is not touched again; a killed run resumes (each FLAC and WAV is written to a
temporary name and renamed, existing files are kept). A DIR made with other arguments is refused.
"""
import argparse
from dataclasses import dataclass
import hashlib
import json
import multiprocessing
import os
from pathlib import Path
import random
import shutil
import subprocess
import sys
import time

import soundfile
from tqdm import tqdm

from benchmark.prepare import prose
from benchmark.files import write_atomic
from benchmark.prepare.convert import FatalDataError, prepare_subset, preparation_lock

SUBSETS = ("train", "dev", "test")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
          "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
PITCH_RANGE = (25, 75)          # espeak-ng -p, 0..99, default 50
RATE_RANGE = (145, 195)         # espeak-ng -s, words per minute, default 175
UTTERANCES_PER_CHAPTER = 40
CHAPTER_BASE = {"train": 1000, "dev": 2000, "test": 3000}   # chapter ids say which subset they belong to


@dataclass(frozen=True)
class Speaker:
    speaker_id: int
    voice: str
    variant: str
    pitch: int
    rate: int


@dataclass(frozen=True)
class PlannedUtterance:
    subset: str
    speaker: Speaker
    chapter_id: int
    index: int
    spoken: str
    transcript: str

    @property
    def utterance_id(self):
        return f"{self.speaker.speaker_id}-{self.chapter_id}-{self.index:04d}"

    def flac_path(self, data_dir):
        return (Path(data_dir) / self.subset / str(self.speaker.speaker_id) / str(self.chapter_id)
                / f"{self.utterance_id}.flac")


def estimated_seconds(transcript, spoken, rate):
    """espeak-ng speaking time, fitted on 150 sentences across voices and rates (about 6% error each)."""
    pauses = sum(spoken.count(mark) for mark in ",;:")
    return 0.48 + 0.0495 * len(transcript) * 175 / rate + 0.28 * pauses


def make_speakers(count, rng):
    """`count` distinct voice+variant pairs, each with its own pitch and rate."""
    pairs = [(voice, variant) for voice in VOICES for variant in VARIANTS]
    if not 1 <= count <= len(pairs):
        raise ValueError(f"--speakers must be between 1 and {len(pairs)}, got {count}")
    return [Speaker(100 + i, voice, variant, rng.randint(*PITCH_RANGE), rng.randint(*RATE_RANGE))
            for i, (voice, variant) in enumerate(rng.sample(pairs, count))]


def plan_corpus(sentences, speakers, seed, hours, eval_hours):
    """Deterministic plan: {subset: [PlannedUtterance]} with dev/test sentences disjoint from train."""
    rng = random.Random(seed)
    order = list(sentences)
    rng.shuffle(order)
    mean_rate = sum(RATE_RANGE) / 2
    eval_sets, position = {}, 0
    for subset in ("dev", "test"):  # reserve evaluation sentences first, so train never sees them
        chosen, seconds = [], 0.0
        while seconds < eval_hours * 3600 and position < len(order):
            spoken, transcript = order[position]
            chosen.append(order[position])
            seconds += estimated_seconds(transcript, spoken, mean_rate)
            position += 1
        eval_sets[subset] = chosen
    train_pool = order[position:]
    if not train_pool:
        raise ValueError(f"--eval_hours {eval_hours} uses all {len(order)} sentences; nothing left for train")
    assignments = {"train": []}
    speaker_order = list(speakers)
    rng.shuffle(speaker_order)
    seconds, n = 0.0, 0
    while seconds < hours * 3600:  # round-robin speakers; cycle the text when more hours are asked for
        spoken, transcript = train_pool[n % len(train_pool)]
        speaker = speaker_order[n % len(speaker_order)]
        assignments["train"].append((speaker, spoken, transcript))
        seconds += estimated_seconds(transcript, spoken, speaker.rate)
        n += 1
    seen = sorted({speaker for speaker, _, _ in assignments["train"]}, key=lambda s: s.speaker_id)
    for subset in ("dev", "test"):
        assignments[subset] = [(rng.choice(seen), spoken, transcript) for spoken, transcript in eval_sets[subset]]
    plan = {}
    for subset in SUBSETS:
        per_speaker = {}
        for speaker, spoken, transcript in assignments[subset]:
            per_speaker.setdefault(speaker, []).append((spoken, transcript))
        plan[subset] = [
            PlannedUtterance(subset, speaker, CHAPTER_BASE[subset] + k // UTTERANCES_PER_CHAPTER,
                             k % UTTERANCES_PER_CHAPTER, spoken, transcript)
            for speaker in sorted(per_speaker, key=lambda s: s.speaker_id)
            for k, (spoken, transcript) in enumerate(per_speaker[speaker])]
    return plan


def synthesize(utterance, data_dir):
    """espeak-ng -> sox -> FLAC (16 kHz mono 16-bit, like LibriSpeech), atomically. Returns seconds of audio."""
    target = utterance.flac_path(data_dir)
    if target.is_file():
        return None
    speaker = utterance.speaker
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # pid: see convert._write_wav
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        speech = subprocess.run(["espeak-ng", "-v", f"{speaker.voice}+{speaker.variant}", "-p", str(speaker.pitch),
                                 "-s", str(speaker.rate), "--stdout"],
                                input=utterance.spoken.encode(), capture_output=True)
        if speech.returncode != 0 or len(speech.stdout) <= 44:
            raise FatalDataError(f"{target}: espeak-ng failed: {speech.stderr.decode(errors='replace').strip()}")
        encoded = subprocess.run(["sox", "-R", "-V2", "-t", "wav", "-", "-r", "16000", "-c", "1", "-b", "16",
                                  "-t", "flac", str(tmp)], input=speech.stdout, capture_output=True)
        if encoded.returncode != 0:
            raise FatalDataError(f"{target}: sox failed: {encoded.stderr.decode(errors='replace').strip()}")
        os.replace(tmp, target)
    except OSError as error:
        raise FatalDataError(f"{target}: cannot write ({error.strerror or error}); re-run to resume") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return soundfile.info(str(target)).duration


def _synthesize_job(job):
    return synthesize(*job)


def synthesize_all(plan, data_dir, jobs):
    """Synthesize every missing FLAC in parallel. Returns (seconds of audio made, wall seconds)."""
    todo = [(u, data_dir) for subset in SUBSETS for u in plan[subset] if not u.flac_path(data_dir).is_file()]
    for subset in SUBSETS:  # temporaries of a killed run
        for tmp in (Path(data_dir) / subset).glob("*/*/*.flac.*.tmp"):
            tmp.unlink()
    start, made = time.perf_counter(), 0.0
    if todo:
        with multiprocessing.Pool(jobs) as pool, tqdm(total=len(todo), desc="synthesize", unit="utt",
                                                       mininterval=1.0) as progress:
            for seconds in pool.imap_unordered(_synthesize_job, todo, chunksize=4):
                made += seconds or 0.0
                progress.update()
    return made, time.perf_counter() - start


def write_transcripts(plan, data_dir):
    """One `<speaker>-<chapter>.trans.txt` per chapter, written atomically and only when it changes."""
    chapters = {}
    for subset in SUBSETS:
        for u in plan[subset]:
            chapters.setdefault(u.flac_path(data_dir).parent, []).append(f"{u.utterance_id} {u.transcript}")
    for folder, lines in chapters.items():
        path = folder / f"{folder.parent.name}-{folder.name}.trans.txt"
        text = "\n".join(lines) + "\n"
        if path.is_file() and path.read_text() == text:
            continue
        write_atomic(path, text)


def tool_versions():
    """espeak-ng and sox versions: the corpus is only reproducible with the same ones."""
    versions = {}
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise FatalDataError(f"{tool} not found on PATH; install it with scripts/setup.sh")
        output = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
        versions[tool] = output.split("Data at")[0].strip() if tool == "espeak-ng" else output.strip()
    return versions


def fingerprint(data_dir, corpus_args, versions):
    """sha256 over arguments, tool versions, the manifests and every WAV they list, in manifest order."""
    from benchmark.data.manifest import read_manifest
    digest = hashlib.sha256(json.dumps({"args": corpus_args, "versions": versions}, sort_keys=True).encode())
    subsets = {}
    for subset in SUBSETS:
        csv_path = Path(data_dir) / f"{subset}.csv"
        digest.update(csv_path.read_bytes())
        utterances = read_manifest(csv_path)
        for u in utterances:
            digest.update(u.path.read_bytes())
        subsets[subset] = {"utterances": len(utterances), "hours": round(sum(u.duration for u in utterances) / 3600, 4)}
    return {"sha256": digest.hexdigest(), "args": corpus_args, "versions": versions, "subsets": subsets}


def _write_json(path, value):
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def _complete(data_dir, corpus_args):
    """The fingerprint of a complete corpus made with corpus_args in data_dir, else None."""
    args_path, fingerprint_path = data_dir / "corpus_args.json", data_dir / "fingerprint.json"
    if args_path.is_file() and fingerprint_path.is_file() and json.loads(args_path.read_text()) == corpus_args:
        return json.loads(fingerprint_path.read_text())
    return None


def build(data_dir, hours=12.0, eval_hours=0.5, speakers=40, seed=1, jobs=None, report=print):
    """Make (or finish) the corpus in data_dir. Returns the fingerprint dict."""
    data_dir = Path(data_dir)
    corpus_args = {"hours": hours, "eval_hours": eval_hours, "speakers": speakers, "seed": seed}
    versions = tool_versions()
    done = _complete(data_dir, corpus_args)
    if done:   # fingerprint.json is written last and atomically: a complete corpus needs no lock to be read
        report(f"{data_dir}: corpus already complete ({done['sha256'][:16]}), nothing to do")
        return done
    # One preparation per folder: two started into one new folder used to remove each other's temporaries.
    with preparation_lock(data_dir):
        return _build_locked(data_dir, corpus_args, versions, jobs, report)


def _build_locked(data_dir, corpus_args, versions, jobs, report):
    hours, eval_hours, speakers, seed = (corpus_args[k] for k in ("hours", "eval_hours", "speakers", "seed"))
    args_path, fingerprint_path = data_dir / "corpus_args.json", data_dir / "fingerprint.json"
    if args_path.is_file():
        previous = json.loads(args_path.read_text())
        if previous != corpus_args:
            raise FatalDataError(f"{data_dir} holds a corpus made with {previous}, not {corpus_args}; "
                                 "use another --data_dir or delete that one")
    else:
        _write_json(args_path, corpus_args)
    if fingerprint_path.is_file():
        done = json.loads(fingerprint_path.read_text())
        report(f"{data_dir}: corpus already complete ({done['sha256'][:16]}), nothing to do")
        return done
    rng = random.Random(seed)
    plan = plan_corpus(prose.load_sentences(), make_speakers(speakers, rng), seed, hours, eval_hours)
    jobs = jobs or os.cpu_count()
    made, wall = synthesize_all(plan, data_dir, jobs)
    if made:
        report(f"synthesized {made / 3600:.3f} h of audio in {wall / 60:.2f} min on {jobs} jobs: "
               f"{made / 3600 / (wall / 60):.3f} audio-hours per minute")
    write_transcripts(plan, data_dir)
    for subset in SUBSETS:
        summary = prepare_subset(data_dir / subset, data_dir / "wav" / subset, data_dir / f"{subset}.csv",
                                 jobs=jobs, desc=f"convert {subset}", report=report)
        if summary.problems or len(summary.utterances) != len(plan[subset]):
            raise FatalDataError(f"{data_dir / subset}: {len(summary.problems)} files failed to convert; "
                                 "a synthetic corpus must be complete (see the problems list)")
    result = fingerprint(data_dir, corpus_args, versions)
    _write_json(fingerprint_path, result)
    report(f"{data_dir}: " + ", ".join(f"{s} {v['utterances']} utterances {v['hours']:.2f} h"
                                       for s, v in result["subsets"].items()) + f"; sha256 {result['sha256']}")
    return result


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag, and the module docstring kept as written below them."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmark.prepare.synthetic", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=_HelpFormatter)
    parser.add_argument("--data_dir", required=True, type=Path,
                        help="folder for the corpus: FLAC tree, wav/, train.csv, dev.csv, test.csv, fingerprint.json")
    parser.add_argument("--hours", type=float, default=12.0, help="hours of train audio (approximate, within a few %%)")
    parser.add_argument("--eval_hours", type=float, default=0.5, help="hours of audio for each of dev and test")
    parser.add_argument("--speakers", type=int, default=40,
                        help=f"number of distinct voices (1..{len(VOICES) * len(VARIANTS)}); dev/test use voices seen in train")
    parser.add_argument("--seed", type=int, default=1, help="seed for sentence order, speakers and their pitch and rate")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel synthesis and conversion processes")
    args = parser.parse_args(argv)
    for flag in ("hours", "eval_hours", "jobs"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        build(args.data_dir, args.hours, args.eval_hours, args.speakers, args.seed, args.jobs)
    except (FatalDataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
