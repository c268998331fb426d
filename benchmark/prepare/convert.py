"""Shared preparation step: a LibriSpeech-layout tree -> 16 kHz mono 16-bit WAVs and one CSV manifest.

Input: `SOURCE/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` (or .wav) and
`<speaker>-<chapter>.trans.txt` with lines `<utterance id> <TRANSCRIPT>`. Output: the same tree under
WAV_DIR with .wav files, and a manifest `wav_filename,wav_filesize,transcript` sorted by file name, with
paths relative to the manifest's folder (see manifest.py), written atomically.

Conversion uses sox (in parallel, one process per file), with `-R` so dither is repeatable and the same
input always gives the same bytes. Each WAV is written to a temporary name and renamed, so a killed run
leaves only complete WAVs, and a re-run converts only what is missing.

Bad input (decided here, used by both LibriSpeech and the synthetic corpus):
- Per-file problems are printed with the file and what is wrong, counted in the summary, listed in
  `<manifest>.problems.txt`, and left out of the manifest: unreadable or corrupt audio, truncated audio,
  empty audio, a transcript line with no audio, audio with no transcript line, a malformed or duplicate
  transcript line, a transcript with characters outside the alphabet (after upper-casing, which is
  harmless).
- Audio that is readable but not 16 kHz mono 16-bit (another rate, stereo, 24-bit) is converted like every
  file (sox resamples and averages channels), kept in the manifest, and counted as "normalized" in the
  summary, so it never passes silently.
- Audio shorter than one 320-sample analysis window (20 ms) is left out as "too short": no feature frame
  can be computed from it (the preflight would refuse it before training).
- A subset that yields no usable utterance (every file bad, or an empty folder) is fatal: no manifest is
  written, so a later run does not take a header-only manifest for a prepared subset.
- Failing to write output (full disk, quota, file size limit, permissions) is fatal: FatalDataError names the
  file and the cause; everything already converted stays and a re-run continues from there.
- One preparation per data folder at a time: `preparation_lock(DIR)` (a POSIX lock on DIR/.prepare.lock,
  held by the preparing process, not its workers, until it exits) makes a second one stop at once, saying which process holds the folder; so only
  a killed run's temporaries are ever removed as stale. Manifests, problem lists and JSON are written
  through unique temporary names (benchmark/files.py), readable by others (0666 less the umask).
"""
from collections import Counter
import contextlib
from dataclasses import dataclass
import errno
import fcntl
import multiprocessing
import os
from pathlib import Path
import re
import subprocess
import wave

import soundfile
from tqdm import tqdm

from benchmark.data.manifest import Utterance, WAV_HEADER_BYTES, WINDOW_SAMPLES, write_manifest
from benchmark.files import write_atomic
from benchmark.text import invalid_chars

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".flac", ".wav")
# sox warnings that describe the conversion, not damaged input.
_BENIGN_SOX_WARNINGS = re.compile(r"clipped|dither")
MAX_PRINTED = 50  # problems printed one by one; all of them go to <manifest>.problems.txt


class FatalDataError(RuntimeError):
    """A problem that stops preparation (cannot write output, bad archive); the message names the file."""


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str       # short category, counted in the summary
    detail: str = ""

    def __str__(self):
        return f"{self.path}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Item:
    utterance_id: str
    source: Path
    target: Path
    transcript: str


@dataclass
class Summary:
    utterances: list          # Utterance, in manifest order
    problems: list            # Problem
    normalized: list          # Problem-like notes for files converted from another rate/channels/width
    converted: int = 0        # files converted in this run (0 on a re-run)

    @property
    def hours(self):
        return sum(u.duration for u in self.utterances) / 3600


def normalize_transcript(text):
    """Upper-case and collapse spaces (harmless); anything else is for the caller to reject."""
    return " ".join(text.upper().split())


def scan_tree(source_dir, wav_dir):
    """Pair transcript lines with audio files. Returns (items sorted by target path, problems)."""
    source_dir, wav_dir = Path(source_dir), Path(wav_dir)
    items, problems = [], []
    for folder, _, files in sorted(os.walk(source_dir)):
        folder = Path(folder)
        audio = {}
        for name in sorted(files):
            path = folder / name
            if path.suffix in AUDIO_SUFFIXES:
                if path.stem in audio:
                    problems.append(Problem(str(path), "duplicate audio", f"also {audio[path.stem].name}"))
                    continue
                audio[path.stem] = path
        transcripts = {}
        for name in sorted(f for f in files if f.endswith(".trans.txt")):
            trans_path = folder / name
            try:
                lines = trans_path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                problems.append(Problem(str(trans_path), "unreadable transcript file", str(error)))
                continue
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{trans_path}:{number}"
                parts = line.split(maxsplit=1)
                if len(parts) != 2:
                    problems.append(Problem(where, "malformed transcript line", "expected '<id> <TRANSCRIPT>'"))
                    continue
                utterance_id, text = parts
                if utterance_id in transcripts:
                    problems.append(Problem(where, "duplicate transcript line", utterance_id))
                    continue
                transcripts[utterance_id] = (where, normalize_transcript(text))
        for utterance_id, (where, text) in sorted(transcripts.items()):
            if utterance_id not in audio:
                problems.append(Problem(where, "transcript without audio", f"no {utterance_id}.flac or .wav"))
                continue
            bad = invalid_chars(text)
            if bad:
                problems.append(Problem(str(audio[utterance_id]), "characters outside the alphabet",
                                        f"{''.join(bad)!r} in {where}"))
                continue
            source = audio[utterance_id]
            target = wav_dir / source.relative_to(source_dir).with_suffix(".wav")
            items.append(Item(utterance_id, source, target, text))
        for stem in sorted(set(audio) - set(transcripts)):
            problems.append(Problem(str(audio[stem]), "audio without transcript"))
    items.sort(key=lambda item: item.target)
    return items, problems


def _write_wav(target, pcm):
    """Atomic WAV write; any OSError here is the output side failing, so it is fatal."""
    # The pid keeps two writers apart: a worker orphaned by kill -9 of its parent may still be finishing.
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(pcm)
        os.replace(tmp, target)
    except OSError as error:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise FatalDataError(f"{target}: cannot write ({error.strerror or error}); files already prepared are "
                             "kept, fix the cause (e.g. free disk space) and re-run") from None


def convert_file(source, target):
    """Convert one file. Returns (wav size in bytes, None | Problem(note) | Problem(error), ok flag)."""
    try:
        info = soundfile.info(str(source))
    except Exception as error:  # libsndfile raises its own error types for every unreadable file
        return 0, Problem(str(source), "unreadable audio", str(error).split(": ")[-1]), False
    if info.frames == 0:
        return 0, Problem(str(source), "empty audio"), False
    result = subprocess.run(["sox", "-R", "-V2", str(source), "-t", "raw", "-e", "signed-integer", "-b", "16",
                             "-c", "1", "-r", str(SAMPLE_RATE), "-"], capture_output=True)
    messages = [line for line in result.stderr.decode(errors="replace").splitlines()
                if line.strip() and not _BENIGN_SOX_WARNINGS.search(line)]
    if result.returncode != 0 or messages:
        kind = "corrupt audio" if result.stdout else "unreadable audio"
        detail = "; ".join(m.replace(f"`{source}'", "").replace(str(source), "").strip() for m in messages) or f"sox exit {result.returncode}"
        return 0, Problem(str(source), kind, detail), False
    frames = len(result.stdout) // 2
    if frames == 0:
        return 0, Problem(str(source), "empty audio"), False
    if frames < WINDOW_SAMPLES:
        return 0, Problem(str(source), "too short", f"{frames} samples at 16 kHz, less than one "
                                                    f"{WINDOW_SAMPLES}-sample analysis window"), False
    expected = info.frames * SAMPLE_RATE / info.samplerate
    if frames < expected - SAMPLE_RATE / 100:
        return 0, Problem(str(source), "truncated audio", f"decoded {frames} of {expected:.0f} samples"), False
    _write_wav(target, result.stdout)
    note = None
    if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.subtype != "PCM_16":
        note = Problem(str(source), "normalized", f"{info.samplerate} Hz, {info.channels} ch, {info.subtype}")
    return WAV_HEADER_BYTES + 2 * frames, note, True


def _convert_item(index_and_item):
    index, item = index_and_item
    size, note, ok = convert_file(item.source, item.target)
    return index, size, note, ok


def _remove_stale_temporaries(wav_dir):
    """Temporary WAVs of a run that was killed mid-write; their files get converted again."""
    for folder, _, files in os.walk(wav_dir):
        for name in files:
            if name.endswith(".tmp") and ".wav." in name:
                os.unlink(os.path.join(folder, name))


def prepare_subset(source_dir, wav_dir, csv_path, jobs=None, desc="convert", report=print):
    """Convert a LibriSpeech-layout tree and write its manifest. Returns a Summary.

    Files whose WAV already exists are not converted again. Raises FatalDataError on write errors.
    """
    source_dir, wav_dir, csv_path = Path(source_dir), Path(wav_dir), Path(csv_path)
    if not source_dir.is_dir():
        raise FatalDataError(f"{source_dir}: source folder not found")
    items, problems = scan_tree(source_dir, wav_dir)
    _remove_stale_temporaries(wav_dir)
    sizes = [None] * len(items)
    todo = []
    for index, item in enumerate(items):
        if item.target.is_file() and item.target.stat().st_size > WAV_HEADER_BYTES:
            sizes[index] = item.target.stat().st_size
        else:
            todo.append((index, item))
    for problem in problems[:MAX_PRINTED]:
        report(f"{desc}: {problem}")
    normalized = []
    jobs = jobs or os.cpu_count()
    with tqdm(total=len(todo), desc=desc, unit="file", mininterval=1.0, disable=not todo) as progress:
        pool = multiprocessing.Pool(jobs) if jobs > 1 and len(todo) > 1 else None
        try:
            results = pool.imap_unordered(_convert_item, todo, chunksize=8) if pool else map(_convert_item, todo)
            for index, size, note, ok in results:
                if ok:
                    sizes[index] = size
                    if note:
                        normalized.append(note)
                else:
                    problems.append(note)
                    if len(problems) <= MAX_PRINTED:
                        progress.write(f"{desc}: {note}")
                progress.update()
        finally:
            if pool:
                pool.terminate()  # on a fatal error: stop the other workers now...
                pool.join()
            _remove_stale_temporaries(wav_dir)  # ...and remove what they were half-way writing
    problems.sort(key=str)
    utterances = [Utterance(item.target, size, item.transcript)
                  for item, size in zip(items, sizes) if size is not None]
    if not utterances:
        # A header-only manifest would pass for a prepared subset ("already prepared") and fail every run.
        _write_problem_list(csv_path, problems, normalized)
        counts = Counter(p.kind for p in problems)
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no audio with a transcript"
        raise FatalDataError(f"{source_dir}: no usable utterance ({found}); no manifest written"
                             + (f" (see {csv_path.stem}.problems.txt)" if problems else ""))
    write_manifest(csv_path, utterances, relative_to=csv_path.parent)
    _write_problem_list(csv_path, problems, normalized)
    summary = Summary(utterances, problems, sorted(normalized, key=str), converted=len(todo))
    report(format_summary(csv_path, summary))
    return summary


def _write_problem_list(csv_path, problems, normalized):
    """`<manifest>.problems.txt` lists every left-out or normalized file; removed when there are none."""
    path = csv_path.with_name(csv_path.stem + ".problems.txt")
    lines = [str(p) for p in problems] + [str(n) for n in normalized]
    if not lines:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, "\n".join(lines) + "\n")


LOCK_NAME = ".prepare.lock"


@contextlib.contextmanager
def preparation_lock(data_dir):
    """Hold a lock on DIR/.prepare.lock while preparing DIR; FatalDataError at once if another process holds it.

    A POSIX record lock (fcntl.lockf), not flock: it belongs to this process alone, so the conversion and
    synthesis workers it forks do not hold it, and when this process dies (kill -9 too) the kernel drops it
    even while orphaned workers finish their last file (their temporaries carry their pid, see _write_wav).
    An flock would be shared with the forked workers and keep the folder locked until the last of them ended.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise FatalDataError(f"{path}: cannot lock ({error.strerror})") from None
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise FatalDataError(f"{data_dir}: another preparation (pid {holder}) is writing this folder; wait "
                                 "for it to finish (then this one has nothing to do), or use another --data_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)   # this process's only descriptor of the file: closing it releases the lock


def format_summary(csv_path, summary):
    """One paragraph: manifest, utterances, hours, and counts of each problem kind."""
    text = (f"{csv_path}: {len(summary.utterances)} utterances, {summary.hours:.2f} h "
            f"({summary.converted} converted in this run)")
    counts = Counter(p.kind for p in summary.problems)
    if counts:
        listed = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        text += f"\n  left out {sum(counts.values())} files: {listed} (see {csv_path.stem}.problems.txt)"
    if summary.normalized:
        text += (f"\n  normalized {len(summary.normalized)} files from another rate/channel count/sample width "
                 "(converted in this run; kept in the manifest)")
    return text
