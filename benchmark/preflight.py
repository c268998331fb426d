"""Check a run's inputs before init_start: a run starts clean or not at all, and a result number is spent
only on a run that really started.

    python -m benchmark.train ... --check_only true    # every check below, then exit: 0 ok, 2 not
    (run_and_time.sh and run.sub do this before they reserve results/<system>/result_<n>.txt)

benchmark.train calls `check_run(config)` after the configuration is validated and before any MLPerf
log line is written. What it checks (flags and the run plan's backend/device are checked by
benchmark/config.py and benchmark/plan.py; this module does the data):
  - every manifest row: the WAV exists and its RIFF header says 16 kHz mono 16-bit PCM; the data chunk
    holds at least one 320-sample analysis window and fits in the file; the row's wav_filesize equals the
    file's size (the duration, hence SortaGrad order and --max_duration, is derived from it); the
    transcript uses only the alphabet of benchmark/text.py;
  - the evaluation set has at least one word (else WER is 0/0 every epoch);
  - the training set left by --max_duration is not empty.
Only headers are read, never audio: one open, stat and 64-byte read per row, about 10 s for LibriSpeech's
281,000 training rows on 2 cores (measure/preflight_speed.py), with a progress bar on long manifests.
A bad row is a PreflightError naming manifest, line and WAV (train.py: exit status 2, no log file);
with --skip_bad_utterances true such rows are dropped instead, printed (the first MAX_PRINTED), counted,
and the count is logged as the `skipped_utterances` event of the run.
"""
from dataclasses import dataclass, field
import os
import struct
import sys

from tqdm import tqdm

from benchmark.config import ConfigError
from benchmark.data.manifest import WINDOW_SAMPLES, filter_by_duration, read_manifests
from benchmark.text import invalid_chars

SAMPLE_RATE, CHANNELS, BITS = 16000, 1, 16
PCM = 1                       # WAVE_FORMAT_PCM
HEAD_BYTES = 64               # RIFF + fmt + data headers of a plain WAV, and then some
PROGRESS_FROM = 20_000        # rows; shorter manifests are checked in well under a second
MAX_PRINTED = 20


class PreflightError(ConfigError):
    """An input no run can use (exit status 2, before init_start); the message names file and line."""


@dataclass(frozen=True)
class BadRow:
    utterance: object         # benchmark.data.manifest.Utterance
    why: str

    def __str__(self):
        u = self.utterance
        return f"{u.manifest}:{u.line}: {u.path}: {self.why}"


@dataclass
class Checked:
    """What check_run found: the usable utterances and the rows it dropped (--skip_bad_utterances)."""
    train: list
    eval: list
    skipped: dict = field(default_factory=dict)   # {"train": n, "eval": n}

    @property
    def skipped_total(self):
        return sum(self.skipped.values())


def _chunks(head, fd, size):
    """(id, offset of its data, its size) of the RIFF chunks after `WAVE`: from `head` while it lasts,
    then by reading 8-byte chunk headers from the file (WAVs with LIST or other chunks first)."""
    offset = 12
    while offset + 8 <= size:
        header = head[offset:offset + 8] if offset + 8 <= len(head) else os.pread(fd, 8, offset)
        if len(header) < 8:
            return
        chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
        yield chunk_id, offset + 8, chunk_size
        offset += 8 + chunk_size + (chunk_size & 1)   # chunks are word-aligned


def wav_problem(path, wav_filesize):
    """Why the WAV at `path` cannot be used for a row that says `wav_filesize`, or None when it can.

    Reads the header only (the RIFF chunk, `fmt `, the `data` chunk's size); the audio is never decoded.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return f"cannot open ({error.strerror})"
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEAD_BYTES, 0)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return f"not a WAV file (no RIFF/WAVE header; {size} bytes)"
        fmt = data = None
        for chunk_id, offset, chunk_size in _chunks(head, fd, size):
            if chunk_id == b"fmt ":
                raw = head[offset:offset + 16] if offset + 16 <= len(head) else os.pread(fd, 16, offset)
                if len(raw) < 16:
                    return "truncated fmt chunk"
                fmt = struct.unpack("<HHIIHH", raw)
            elif chunk_id == b"data":
                data = (offset, chunk_size)
                break
    except OSError as error:
        return f"cannot read ({error.strerror})"
    finally:
        os.close(fd)
    if fmt is None or data is None:
        return f"no {'fmt' if fmt is None else 'data'} chunk in the WAV header"
    audio_format, channels, rate, _, _, bits = fmt
    if (audio_format, channels, rate, bits) != (PCM, CHANNELS, SAMPLE_RATE, BITS):
        kind = "PCM" if audio_format == PCM else f"format {audio_format:#x}, not PCM"
        return (f"{rate} Hz, {channels} channel(s), {bits}-bit {kind}: expected 16000 Hz mono 16-bit PCM "
                "(prepare the data with benchmark.prepare)")
    offset, data_bytes = data
    if offset + data_bytes > size:
        return (f"truncated: the header announces {data_bytes // 2} samples, the file holds "
                f"{max(size - offset, 0) // 2}")
    if data_bytes // 2 < WINDOW_SAMPLES:
        return f"{data_bytes // 2} samples: shorter than one {WINDOW_SAMPLES}-sample analysis window"
    if wav_filesize != size:
        return (f"wav_filesize {wav_filesize} but the file has {size} bytes (the duration is derived from "
                "wav_filesize: re-prepare the manifest)")
    return None


def row_problem(utterance):
    """Why a manifest row cannot be trained or evaluated on, or None."""
    bad = invalid_chars(utterance.transcript)
    if bad:
        return f"transcript characters outside the alphabet A-Z, apostrophe, space: {''.join(bad)!r}"
    return wav_problem(utterance.path, utterance.size)


def check_rows(utterances, what, skip, report=print):
    """(usable utterances, bad rows) of one set; PreflightError on the first bad row unless `skip`."""
    good, bad = [], []
    rows = tqdm(utterances, desc=f"preflight {what}", unit="row", mininterval=1.0, file=sys.stderr,
                disable=len(utterances) < PROGRESS_FROM)
    for u in rows:
        why = row_problem(u)
        if why is None:
            good.append(u)
            continue
        row = BadRow(u, why)
        if not skip:
            raise PreflightError(f"{row}\n  (fix or remove the row, or add --skip_bad_utterances true to "
                                 "drop such rows and log how many)")
        bad.append(row)
        if len(bad) <= MAX_PRINTED:
            rows.write(f"preflight: skipping {row}", file=sys.stderr)
    if bad:
        report(f"preflight: skipped {len(bad)} bad {what} row(s) of {len(utterances)} (--skip_bad_utterances)")
    return good, bad


def check_run(config, report=print):
    """Read and check the manifests of `config`. Returns Checked; raises PreflightError (or ManifestError
    for a manifest that cannot be parsed at all), before anything is logged."""
    skip = config.skip_bad_utterances
    train = [] if config.eval_only else read_manifests(config.train_data_dir)
    evaluation = read_manifests(config.eval_data_dir)
    train, bad_train = check_rows(train, "train", skip, report)
    evaluation, bad_eval = check_rows(evaluation, "eval", skip, report)
    if not evaluation:
        raise PreflightError(f"--eval_data_dir {config.eval_data_dir}: every row was bad; nothing to evaluate on")
    if not sum(len(u.transcript.split()) for u in evaluation):
        raise PreflightError(f"--eval_data_dir {config.eval_data_dir}: {len(evaluation)} utterance(s) but no "
                             "word in their transcripts: the WER (errors / reference words) would be 0/0")
    if not config.eval_only:
        if not train:
            raise PreflightError(f"--train_data_dir {config.train_data_dir}: every row was bad")
        if config.max_duration:
            kept = filter_by_duration(train, config.max_duration)
            if not kept:
                shortest = min(u.duration for u in train)
                raise PreflightError(f"--max_duration {config.max_duration}: keeps none of the {len(train)} "
                                     f"training utterances (the shortest is {shortest:.2f} s)")
            train = kept
    skipped = {"train": len(bad_train), "eval": len(bad_eval)} if skip else {}
    return Checked(train, evaluation, skipped)
