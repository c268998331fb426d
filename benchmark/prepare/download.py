"""Resumable, verified downloads and safe extraction of tar.gz archives.

download(): bytes go to `<file>.part`; an interrupted transfer (connection cut, kill -9) resumes from the
part's size with an HTTP Range request; a dropped connection is retried a few times before giving up. The
finished part is checked for size and md5 and only then renamed to its final name, so an archive under
its final name has always passed its checksum. A failing one is kept as `<file>.bad` for inspection and
never extracted; the next run downloads it again.

extract_tar(): extracts into a temporary folder beside the destination and renames the wanted folder into
place only when the whole archive has been read, so a truncated or corrupt archive, a full disk or a kill
leaves no half-extracted subset behind.
"""
import errno
import gzip
import hashlib
import http.client
import os
from pathlib import Path
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zlib

from tqdm import tqdm

from benchmark.prepare.convert import FatalDataError

CHUNK_BYTES = 1 << 20
# The OS cannot store our output: fatal for the whole run.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES})


def md5_of(path, desc=None):
    """md5 hex digest of a file, with a progress bar when `desc` is given."""
    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=desc,
                                     disable=desc is None, mininterval=1.0) as progress:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
            progress.update(len(block))
    return digest.hexdigest()


def _fetch(url, part, size, timeout):
    """One attempt: append to `part` from its current size until the server ends the body.

    Network errors propagate (the caller retries); failing to write the part is fatal at once.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after offset: the part is already the whole file
            return
        raise
    with response:
        if offset and response.status != 206:  # the server ignored Range: start again from zero
            offset = 0
        length = response.headers.get("Content-Length")
        total = size if size is not None else (offset + int(length) if length else None)
        try:
            with open(part, "ab" if offset else "wb") as out, \
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=f"download {part.name[:-5]}",
                         mininterval=1.0) as progress:
                while block := response.read1(CHUNK_BYTES):  # what has arrived, not a full MB
                    out.write(block)
                    progress.update(len(block))
        except OSError as error:
            if error.filename == str(part) or error.errno in WRITE_ERRNOS:
                raise FatalDataError(f"{part}: cannot write ({error.strerror}); the partial download is kept, "
                                     "free space and re-run to resume") from None
            raise


def download(url, dest, size=None, md5=None, retries=5, timeout=60, report=print):
    """Fetch `url` to `dest` (resuming `dest.part`), verify size and md5. Raises FatalDataError."""
    dest = Path(dest)
    if dest.is_file():
        return dest  # only ever renamed into place after passing its checks
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 2):
        try:
            _fetch(url, part, size, timeout)
            have = part.stat().st_size if part.exists() else 0
            if size is None or have >= size:
                break
            problem = f"connection ended at {have} of {size} bytes"
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise FatalDataError(f"{url}: HTTP {error.code} {error.reason}") from None
            problem = f"HTTP {error.code} {error.reason}"
        except (OSError, http.client.HTTPException) as error:  # reset, timeout, cut body, refused
            problem = f"{type(error).__name__}: {error}"
        if attempt > retries:
            raise FatalDataError(f"{url}: {problem}; gave up after {attempt} attempts; {part} is kept, re-run "
                                 "to resume") from None
        report(f"{url}: {problem}; resuming (attempt {attempt + 1} of {retries + 1})")
        time.sleep(min(2 ** (attempt - 1), 30) * 0.5)
    have = part.stat().st_size
    problem = None
    if size is not None and have != size:
        problem = f"size {have} bytes, expected {size}"
    elif md5 is not None:
        actual = md5_of(part, desc=f"md5 {dest.name}")
        if actual != md5:
            problem = f"md5 {actual}, expected {md5}"
    if problem:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise FatalDataError(f"{url}: {problem}; not extracted, kept as {bad}; the next run downloads it again "
                             "(use another --mirror if this repeats)")
    os.replace(part, dest)
    dest.with_name(dest.name + ".bad").unlink(missing_ok=True)
    return dest


class _Progress:
    """File wrapper that reports bytes read to a tqdm bar (for a streamed archive)."""

    def __init__(self, f, progress):
        self.f, self.progress = f, progress

    def read(self, n=-1):
        block = self.f.read(n)
        self.progress.update(len(block))
        return block


def _plain_members(tar, root):
    """The members of a streamed archive, refusing what filter="data" would (stricter: links too).

    For Pythons without extraction filters. LibriSpeech archives hold only folders and regular files.
    """
    root = os.path.realpath(root)
    for member in tar:
        target = os.path.realpath(os.path.join(root, member.name))
        if not (member.isfile() or member.isdir()) or os.path.commonpath([root, target]) != root:
            raise tarfile.TarError(f"refusing member {member.name!r}: not a plain file or folder inside the archive")
        yield member


def extract_tar(archive, member_dir, dest):
    """Extract `member_dir` (e.g. "LibriSpeech/dev-clean") of a tar.gz to `dest`, all or nothing.

    Other top-level files of the archive's first folder (README, SPEAKERS.TXT ...) are copied beside
    `dest` when absent. Raises FatalDataError for a truncated/corrupt archive or a write error.
    """
    archive, dest = Path(archive), Path(dest)
    tmp = dest.parent / f".extract-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a killed extraction
    tmp.mkdir(parents=True)
    try:
        with open(archive, "rb") as raw, tqdm(total=archive.stat().st_size, unit="B", unit_scale=True,
                                              desc=f"extract {archive.name}", mininterval=1.0) as progress:
            with tarfile.open(fileobj=_Progress(raw, progress), mode="r|gz") as tar:
                if hasattr(tarfile, "data_filter"):   # extraction filters: Python >= 3.11.4
                    tar.extractall(tmp, filter="data")
                else:   # Debian 12's python3 is 3.11.2: extractall() has no filter argument
                    tar.extractall(tmp, members=_plain_members(tar, tmp))
        extracted = tmp / member_dir
        if not extracted.is_dir():
            raise FatalDataError(f"{archive}: has no folder {member_dir}; is it the right archive?")
        for extra in extracted.parent.iterdir():
            if extra.is_file() and not (dest.parent / extra.name).exists():
                shutil.copy2(extra, dest.parent / extra.name)
        os.replace(extracted, dest)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise FatalDataError(f"{archive}: truncated or corrupt archive ({error}); nothing extracted; delete "
                             "it and re-run to download it again") from None
    except OSError as error:
        raise FatalDataError(f"{dest}: cannot extract ({error.strerror or error}); nothing extracted, free "
                             "space and re-run") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
