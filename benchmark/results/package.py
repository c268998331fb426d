"""The official MLPerf submission layout: read it, and write one from a results/<system> folder.

Usage:
  python -m benchmark.results.package write results/CPU --out submission [--org ds2perf] [--division closed]
  python -m benchmark.results.report submission/closed/ds2perf        # score it (any package, any benchmark)

Layout (as mlperf_logging's result_summarizer and package_checker read it):
  <division>/<org>/systems/<system>.json                       the system description
  <division>/<org>/results/<system>/<benchmark>/result_*.txt   the logs of one benchmark on that system
  <division>/<org>/results/<system>/<benchmark>/scaling.json   optional {"scaling_factor": x}

What the official tools make of a deepspeech2 package (mlperf-logging 4.1.68): system_desc_checker checks
systems/*.json like any other; package_checker prints "Skipping benchmark: deepspeech2" and then SUCCESS,
having checked nothing of it; result_summarizer and compliance_checker crash (no closed_deepspeech2.yaml),
and rcp_checker stops on KeyError 'deepspeech2'. Ours fills the gap: `write` refuses a description the
official checker rejects, and `benchmark.results.report` on the package runs the compliance checker with
our rules on every log, scores by the summarizer's own function and tests convergence against our RCPs.
`write` never overwrites: it fails if the system's folder exists in the package, and builds it in a
temporary folder renamed into place.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmark.mlperf_log import BENCHMARK_NAME
from benchmark.results import logs, system_desc


@dataclass
class Entry:
    """One <org>/results/<system>/<benchmark> folder of a package."""
    name: str            # <division>/<org>/<system>/<benchmark>
    folder: Path
    benchmark: str
    system: str
    description_path: Path


def _benchmark(folder_name):
    """The summarizer's alias: folder 'mask' is maskrcnn."""
    return "maskrcnn" if folder_name == "mask" else folder_name


def find_entries(root):
    """Entries of the package under `root` (a package root, a division or an organization folder); [] when
    `root` holds no <org>/results/<system>/<benchmark>/result_*.txt with a systems/ folder beside results/."""
    root = Path(root)
    entries = []
    for log in sorted(root.glob(f"**/results/*/*/{logs.RESULT_PATTERN}")):
        folder = log.parent
        org = folder.parent.parent.parent
        if not (org / "systems").is_dir() or any(e.folder == folder for e in entries):
            continue
        system = folder.parent.name
        division = org.parent.name
        entries.append(Entry(f"{division}/{org.name}/{system}/{folder.name}", folder, _benchmark(folder.name), system,
                             org / "systems" / f"{system}.json"))
    return entries


def write_package(system_folder, out, org="ds2perf", division="closed"):
    """Writes <out>/<division>/<org>/{systems/<system>.json, results/<system>/deepspeech2/result_*.txt} from
    a results/<system> folder; returns the benchmark folder written. ValueError on anything that would make
    an invalid or overwritten package."""
    system_folder = Path(system_folder)
    system = system_folder.resolve().name
    paths = logs.find_systems(system_folder).get(system)
    if not paths:
        raise ValueError(f"{system_folder}: no {logs.RESULT_PATTERN}")
    foreign = sorted({run.benchmark for run in map(logs.summarize_run, paths)} - {BENCHMARK_NAME})
    if foreign:
        raise ValueError(f"{system_folder}: logs of {', '.join(map(str, foreign))}; only {BENCHMARK_NAME} is written")
    desc = system_desc.read_description(system_folder)
    if desc is None:
        raise ValueError(f"{system_folder}: no {system_desc.DESCRIPTION_FILE}")
    desc = {**desc, "submitter": org, "division": division, "system_name": desc.get("system_name") or system}
    org_dir = Path(out) / division / org
    target = org_dir / "results" / system / BENCHMARK_NAME
    description = org_dir / "systems" / f"{system}.json"
    if target.exists() or description.exists():
        raise ValueError(f"{target} or {description} exists: a package is never overwritten")
    org_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".package.", dir=org_dir))
    try:
        (staging / "systems").mkdir()
        (staging / "systems" / f"{system}.json").write_text(json.dumps(desc, indent=2) + "\n")
        valid, reasons = system_desc.check(staging / "systems" / f"{system}.json")
        if not valid:
            raise ValueError(f"{system_folder}/{system_desc.DESCRIPTION_FILE} fails mlperf_logging's "
                             "system_desc_checker: " + "; ".join(reasons))
        bench = staging / "results" / system / BENCHMARK_NAME
        bench.mkdir(parents=True)
        for path in paths:
            shutil.copy2(path, bench / path.name)
        for sub in ("systems", "results"):   # merge into the package (other systems may be there already)
            for item in (staging / sub).iterdir():
                (org_dir / sub).mkdir(exist_ok=True)
                os.replace(item, org_dir / sub / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmark.results.package", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("command", choices=("write",))
    parser.add_argument("system_folder", metavar="SYSTEM_FOLDER", help="a results/<system> folder")
    parser.add_argument("--out", required=True, help="the package root")
    parser.add_argument("--org", default="ds2perf", help="organization (default: %(default)s)")
    parser.add_argument("--division", default="closed", choices=("closed", "open"))
    args = parser.parse_args(argv)
    try:
        target = write_package(args.system_folder, args.out, args.org, args.division)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {target} and {target.parents[2] / 'systems' / (target.parent.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
