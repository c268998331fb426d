"""Download and prepare LibriSpeech (OpenSLR resource 12): archives -> 16 kHz WAVs -> one CSV per subset.

Usage:
    python -m benchmark.prepare.librispeech [--data_dir /tmp/librispeech_data] [--subsets LIST]
                                         [--mirror URL] [--jobs N] [--remove_archives]

For each subset (default: all seven, the 960 training hours plus dev and test):
  1. download DIR/archives/<subset>.tar.gz from the mirror, resuming an interrupted transfer (HTTP Range),
     and check its size and md5 against the table below; an archive that fails is never extracted;
  2. extract DIR/LibriSpeech/<subset>/ (all or nothing);
  3. convert every FLAC to a 16 kHz mono 16-bit WAV with sox, in parallel (DIR/wav/<subset>/...);
  4. write DIR/<subset>.csv: `wav_filename,wav_filesize,transcript`, paths relative to DIR (so DIR can be
     moved), sorted by file name, transcripts in upper-case A-Z, apostrophe and space.
Bad files are reported, counted and left out of the manifest (see benchmark/prepare/convert.py and
DIR/<subset>.problems.txt); a fatal problem (md5 mismatch, truncated archive, full disk) stops with exit 1.

A subset that yields no usable utterance is fatal too (no manifest written). One preparation per DIR at a
time (DIR/.prepare.lock): a second one stops at once with exit 1, naming the process that holds it.
Idempotent: a subset whose CSV exists (with rows) is skipped, so a second run does nothing. Every step writes to a
temporary name and renames, so after kill -9 at any point a re-run resumes and writes the same manifests.
Disk: about 60 GB of archives (deleted as each subset is extracted with --remove_archives), 62 GB of FLAC
and 110 GB of WAV for the default subsets.
"""
import argparse
import csv
from dataclasses import dataclass
import os
from pathlib import Path
import sys

from benchmark.data.manifest import ManifestError, read_manifest
from benchmark.prepare.convert import FatalDataError, prepare_subset, preparation_lock
from benchmark.prepare.download import download, extract_tar

DEFAULT_DATA_DIR = Path("/tmp/librispeech_data")  # as in the TensorFlow deep_speech tool
DEFAULT_MIRROR = "https://www.openslr.org/resources/12"
OTHER_MIRRORS = ("https://us.openslr.org/resources/12", "https://openslr.elda.org/resources/12",
                 "https://openslr.magicdatatech.com/resources/12")


@dataclass(frozen=True)
class Archive:
    subset: str
    filename: str
    size: int       # bytes
    md5: str


# OpenSLR's md5sum.txt for resource 12; sizes as served (the same values are in Kaldi's
# egs/librispeech/s5/local/download_and_untar.sh and several independent download scripts).
ARCHIVES = {a.subset: a for a in (
    Archive("dev-clean", "dev-clean.tar.gz", 337926286, "42e2234ba48799c1f50f24a7926300a1"),
    Archive("dev-other", "dev-other.tar.gz", 314305928, "c8d0bcc9cca99d4f8b62fcc847357931"),
    Archive("test-clean", "test-clean.tar.gz", 346663984, "32fa31d27d2e1cad72775fee3f4849a9"),
    Archive("test-other", "test-other.tar.gz", 328757843, "fb5a50374b501bb3bac4815ee91d3135"),
    Archive("train-clean-100", "train-clean-100.tar.gz", 6387309499, "2a93770f6d5c6c964bc36631d331a522"),
    Archive("train-clean-360", "train-clean-360.tar.gz", 23049477885, "c0e676e450a7ff2f54aeade5171606fa"),
    Archive("train-other-500", "train-other-500.tar.gz", 30593501606, "d1a0fd59409feb2c614ce4d30c387708"),
)}
DEFAULT_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
                   "test-clean", "test-other")


def read_archive_table(path):
    """A CSV `subset,filename,size,md5` (for a private mirror with other archives) -> {subset: Archive}."""
    table = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["subset", "filename", "size", "md5"]:
            raise FatalDataError(f"{path}:1: expected header subset,filename,size,md5, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                table[row["subset"]] = Archive(row["subset"], row["filename"], int(row["size"]), row["md5"].lower())
            except (TypeError, AttributeError, ValueError):
                raise FatalDataError(f"{path}:{line}: expected subset,filename,size (an integer),md5") from None
            name = row["filename"]
            # The file name is joined to DIR/archives/ and the mirror's URL: a path would write elsewhere.
            if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
                raise FatalDataError(f"{path}:{line}: filename {name!r} must be a plain file name (no '/', no "
                                     "'..', not hidden): the archive is saved as DIR/archives/<filename>")
    return table


def prepare(data_dir, subsets=DEFAULT_SUBSETS, mirror=DEFAULT_MIRROR, jobs=None, archives=None,
            remove_archives=False, report=print):
    """Download, extract, convert and write manifests. Returns {subset: convert.Summary or None if skipped}."""
    data_dir = Path(data_dir)
    archives = ARCHIVES if archives is None else archives
    unknown = [s for s in subsets if s not in archives]
    if unknown:
        raise FatalDataError(f"unknown subset(s) {', '.join(unknown)}; known: {', '.join(archives)}")
    if all((data_dir / f"{s}.csv").is_file() and _prepared(data_dir / f"{s}.csv", report) for s in subsets):
        for subset in subsets:   # manifests are written atomically: reading them needs no lock
            report(f"{data_dir / f'{subset}.csv'}: already prepared, nothing to do")
        return {subset: None for subset in subsets}
    with preparation_lock(data_dir):   # one preparation per folder: a second one stops here, saying why
        return _prepare_locked(data_dir, subsets, mirror, jobs, archives, remove_archives, report)


def _prepared(csv_path, report):
    """True when csv_path is a manifest with at least one row (an older version left header-only ones)."""
    if not csv_path.is_file():
        return False
    try:
        if read_manifest(csv_path):
            return True
    except ManifestError as error:
        report(f"{csv_path}: unusable ({error}); preparing it again")
        return False
    report(f"{csv_path}: holds no utterance; preparing it again")
    return False


def _prepare_locked(data_dir, subsets, mirror, jobs, archives, remove_archives, report):
    summaries = {}
    for subset in subsets:
        csv_path = data_dir / f"{subset}.csv"
        if _prepared(csv_path, report):
            report(f"{csv_path}: already prepared, nothing to do")
            summaries[subset] = None
            continue
        flac_dir = data_dir / "LibriSpeech" / subset
        if not flac_dir.is_dir():
            archive = archives[subset]
            path = download(f"{mirror.rstrip('/')}/{archive.filename}", data_dir / "archives" / archive.filename,
                            size=archive.size, md5=archive.md5, report=report)
            extract_tar(path, f"LibriSpeech/{subset}", flac_dir)
            if remove_archives:
                path.unlink()
        summaries[subset] = prepare_subset(flac_dir, data_dir / "wav" / subset, csv_path, jobs=jobs,
                                           desc=f"convert {subset}", report=report)
    return summaries


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag, and the module docstring kept as written below them."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmark.prepare.librispeech", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=_HelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder for archives/, LibriSpeech/ (FLAC), wav/ and the <subset>.csv manifests")
    parser.add_argument("--subsets", default=",".join(DEFAULT_SUBSETS),
                        help=f"comma-separated subsets to prepare, from: {', '.join(ARCHIVES)}")
    parser.add_argument("--mirror", default=DEFAULT_MIRROR,
                        help="base URL holding <subset>.tar.gz; other OpenSLR mirrors: " + ", ".join(OTHER_MIRRORS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel sox conversions")
    parser.add_argument("--remove_archives", action="store_true",
                        help="delete each archive once extracted (saves about 60 GB; a lost FLAC tree then "
                             "needs a new download)")
    parser.add_argument("--archive_table", type=Path, default=None,
                        help="CSV subset,filename,size,md5 replacing the built-in OpenSLR table (a private "
                             "mirror with repackaged archives)")
    args = parser.parse_args(argv)
    if args.jobs <= 0:
        parser.error(f"--jobs must be positive, got {args.jobs}")
    args.subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    if not args.subsets:
        parser.error("--subsets is empty")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        archives = read_archive_table(args.archive_table) if args.archive_table else ARCHIVES
        summaries = prepare(args.data_dir, args.subsets, args.mirror, args.jobs, archives, args.remove_archives)
    except FatalDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a table or folder we cannot read or create
        print(f"error: {error}", file=sys.stderr)
        return 1
    left_out = sum(len(s.problems) for s in summaries.values() if s)
    if left_out:
        print(f"done, but {left_out} files were left out of the manifests (listed in DIR/<subset>.problems.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
