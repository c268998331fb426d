"""CSV manifests `wav_filename,wav_filesize,transcript`, as the deep_speech tool wrote them.

`wav_filename` may be absolute or relative; a relative path is resolved against the folder holding the
CSV, so a prepared data folder can be moved or mounted elsewhere. Each Utterance remembers its manifest and
line, so the preflight (benchmark/preflight.py) can name the row of a bad file. Manifests are written
atomically (unique temporary file, fsync, rename), so a killed writer never leaves a half manifest behind,
with mode 0666 less the umask, so the other users of a shared data folder can read them.
"""
import csv
from dataclasses import dataclass, field
import io
import os
from pathlib import Path

from benchmark.files import readable, temporary_beside

HEADER = ["wav_filename", "wav_filesize", "transcript"]
WAV_HEADER_BYTES = 44
BYTES_PER_SECOND = 16000 * 2  # 16 kHz mono 16-bit
WINDOW_SAMPLES = 320          # one 20 ms analysis window at 16 kHz (benchmark/features.py): the shortest usable clip


@dataclass(frozen=True)
class Utterance:
    path: Path
    size: int          # bytes of the WAV file, a cheap proxy for duration (SortaGrad, filters)
    transcript: str
    manifest: str = field(default=None, compare=False)   # the CSV it came from and its line there
    line: int = field(default=None, compare=False)

    @property
    def duration(self):
        """Seconds of audio, from the size of a 16 kHz mono 16-bit WAV."""
        return max(self.size - WAV_HEADER_BYTES, 0) / BYTES_PER_SECOND


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and line."""


def read_manifest(csv_path):
    """One CSV -> list of Utterance, in file order. Raises ManifestError naming file and line."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: manifest not found")
    base = csv_path.resolve().parent
    utterances = []
    raw = csv_path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ManifestError(f"{csv_path}:{line}: byte {raw[error.start:error.start + 1]!r} is not UTF-8 "
                            "(manifests are UTF-8 text)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != HEADER:
        raise ManifestError(f"{csv_path}:1: expected header {','.join(HEADER)}, got {header}")
    manifest = str(csv_path)
    start = reader.line_num + 1   # a row's first physical line (a quoted transcript may span lines)
    for row in reader:
        line_number, start = start, reader.line_num + 1
        if len(row) != 3:
            raise ManifestError(f"{csv_path}:{line_number}: expected 3 fields, got {len(row)}")
        name, size, transcript = row
        try:
            size = int(size)
        except ValueError:
            raise ManifestError(f"{csv_path}:{line_number}: wav_filesize {size!r} is not an integer") from None
        path = Path(name)
        utterances.append(Utterance(path if path.is_absolute() else base / path, size, transcript,
                                    manifest, line_number))
    return utterances


def read_manifests(csv_paths):
    """Several manifests (a list, or one comma-separated string) -> one list. Raises if it is empty."""
    if isinstance(csv_paths, (str, os.PathLike)):
        csv_paths = [p for p in str(csv_paths).split(",") if p]
    utterances = []
    for csv_path in csv_paths:
        utterances.extend(read_manifest(csv_path))
    if not utterances:
        raise ManifestError(f"{','.join(map(str, csv_paths))}: no utterances in manifest")
    return utterances


def write_manifest(csv_path, utterances, relative_to=None):
    """Write utterances atomically; paths are written relative to `relative_to` when given."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(csv_path)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(HEADER)
            for u in utterances:
                path = os.path.relpath(u.path, relative_to) if relative_to is not None else str(u.path)
                writer.writerow([path, u.size, u.transcript])
            f.flush()
            os.fsync(f.fileno())
            readable(f.fileno())
        os.replace(tmp, csv_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def filter_by_duration(utterances, max_duration=None, min_duration=0.0):
    """Utterances whose duration lies in [min_duration, max_duration] (None: no upper bound)."""
    return [u for u in utterances
            if u.duration >= min_duration and (max_duration is None or u.duration <= max_duration)]
