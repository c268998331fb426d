"""Fill .gpu_bundle/ with what the GPU acceptance run (measure/gpu_acceptance.py) must bring to a bare GPU machine.

Usage (here, on the Debian/Ubuntu x86-64 machine that ran scripts/setup.sh, with apt and PyPI reachable):
  .venv/bin/python scripts/gpu_bundle.py                    # fills .gpu_bundle/ (ignored by git), prints the sizes
  .venv/bin/python scripts/gpu_bundle.py --python_versions 3.12 --out /tmp/bundle

The GPU machines reach no package index, and a job brings at most 64 MiB: the working tree plus the paths it
carries. So this downloads, into one folder (replaced as a whole, never left half-written):
  debs/    the .deb files of espeak-ng and its voice data, sox with its FLAC format (libsox-fmt-base), flac
           and the fortunes prose (fortunes, fortunes-min), at the versions installed here, the ones that
           made the README's corpus fingerprint (where an update replaced one in the archive, the archive's,
           with a warning); and every package holding a shared library that their
           programs and sox's format plugins link to (ldd over every ELF file of the unpacked packages,
           mapped to packages by dpkg -S), except glibc, libgcc and libstdc++, which every image with
           Python and PyTorch has. measure/gpu_acceptance.py unpacks them with dpkg-deb -x into a private
           prefix: apt is never run there.
  wheels/  the Python distributions the run needs that a CUDA PyTorch image may lack: requirements.txt's
           pins of mlperf-logging, jiwer, soundfile, tqdm and pyyaml, and what they require, at the versions
           of this .venv, for CPython 3.10-3.13 on manylinux x86-64 (compiled ones once per version).
           Not carried: torch (the image's CUDA build is the one to test), numpy, scipy, pandas and
           matplotlib (in such images, and each too large to carry), NVIDIA DALI (~480 MB installed).
  bundle.json  what is there: packages and versions, the Python requirements with the rule for each
           (pin: installed unless the image has that version; missing: installed only where absent),
           sizes, where and when it was made.
Then it prints the sizes of the bundle and of the working tree that travels with it (tracked files and
untracked files git does not ignore) and exits 1 when the two exceed the 64 MiB a job can bring.
On the device tool: name `.gpu_bundle` in `carry` (see `python measure/gpu_acceptance.py --help`).
"""
import argparse
from dataclasses import asdict, dataclass
import datetime
import importlib.metadata
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".gpu_bundle"
TRANSFER_LIMIT = 64 * 2 ** 20   # bytes a device job brings: tree + carried paths
DEB_ROOTS = ("espeak-ng", "espeak-ng-data", "sox", "libsox-fmt-base", "flac", "fortunes", "fortunes-min")
PRESENT_EVERYWHERE = frozenset({"libc6", "libgcc-s1", "libstdc++6"})   # never carried
# requirements.txt's pins carried (distribution -> the module the run imports); their requirements follow.
CARRIED_PINS = {"mlperf-logging": "mlperf_logging", "jiwer": "jiwer", "soundfile": "soundfile", "tqdm": "tqdm",
                "pyyaml": "yaml"}
FROM_THE_IMAGE = frozenset({"torch", "numpy", "scipy", "pandas", "matplotlib"})
PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")
# pip matches manylinux_2_N tags exactly: every glibc up to 2.39 (Ubuntu 24.04) is accepted there.
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"] + [
    f"manylinux_2_{n}_x86_64" for n in range(5, 40)]


class BundleError(RuntimeError):
    """Something the bundle cannot be made without; the message says what to do."""


@dataclass
class Deb:
    package: str
    version: str
    file: str       # name in debs/
    bytes: int


@dataclass
class Requirement:
    name: str
    version: str     # the version carried (this .venv's)
    rule: str        # "pin": install unless the image has exactly this version; "missing": only where absent
    spec: str        # what pip installs: "==version" for pins, the requirers' specifier for the others
    module: str = ""   # a module to import as a check (pins only)


def run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise BundleError(f"{' '.join(map(str, cmd))} failed (status {done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


# ------------------------------------------------------------------------------------------ .deb files
def installed_version(package):
    """The version dpkg has installed here; BundleError when it is not installed."""
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", package], capture_output=True, text=True)
    status, _, version = done.stdout.rpartition(" ")
    if done.returncode != 0 or "installed" not in status.split():
        raise BundleError(f"the Debian package {package} is not installed here: run scripts/setup.sh first (the "
                          "bundle carries the versions installed here, which made the README's corpus)")
    return version


def candidate_version(package):
    """The version `apt-get download PACKAGE` would fetch."""
    match = re.search(r"Candidate:\s*(\S+)", run(["apt-cache", "policy", package]))
    if not match or match.group(1) == "(none)":
        raise BundleError(f"apt has no version of {package} to download: run apt-get update")
    return match.group(1)


def apt_download(wanted, folder, report=print):
    """Download {package: version} with apt-get into folder, one call; a version the archive no longer has
    (superseded by an update) is replaced by apt's candidate, with a warning. Returns {package: (version, path)}."""
    def download(specs):
        before = set(Path(folder).glob("*.deb"))
        done = subprocess.run(["apt-get", "download", "-q", *specs], cwd=folder, capture_output=True, text=True)
        return done, set(Path(folder).glob("*.deb")) - before

    done, new = download([f"{p}={v}" for p, v in wanted.items()])
    if done.returncode != 0:   # one spec apt cannot fetch fails the whole call: one at a time
        got = {}
        for package, version in wanted.items():
            done, new = download([f"{package}={version}"])
            if done.returncode != 0:
                candidate = candidate_version(package)
                report(f"  warning: {package} {version} (installed here) is no longer in the archive; "
                       f"carrying {candidate}")
                done, new = download([f"{package}={candidate}"])
                version = candidate
                if done.returncode != 0:
                    raise BundleError(f"apt-get download {package}={candidate} failed: {done.stderr.strip()}")
            got[package] = (version, new.pop())
        return got
    by_name = {path.name.split("_", 1)[0]: path for path in new}
    return {package: (version, by_name[package]) for package, version in wanted.items()}


def elf_files(root):
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    yield path


def linked_libraries(paths):
    """The host paths ldd resolves every shared library of `paths` to (transitively)."""
    found = set()
    for path in paths:
        done = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
        found.update(m.group(1) for m in re.finditer(r"=>\s+(/\S+)", done.stdout))
    return found


def owning_packages(paths):
    """{library path: its Debian package or None}, by one dpkg-query; merged-/usr machines register either
    spelling of a path (/lib/... or /usr/lib/...), so both are asked."""
    spellings = {}
    for path in paths:
        real = os.path.realpath(path)
        for candidate in (path, real, real.removeprefix("/usr"), "/usr" + path.removeprefix("/usr")):
            spellings.setdefault(candidate, path)
    done = subprocess.run(["dpkg-query", "-S", *spellings], capture_output=True, text=True)
    owners = dict.fromkeys(paths)
    for line in done.stdout.splitlines():
        packages, _, where = line.rpartition(": ")
        if where in spellings and packages and not line.startswith("diversion"):
            owners[spellings[where]] = owners[spellings[where]] or packages.split(",")[0].split(":")[0].strip()
    return owners


def collect_debs(folder, fetch=apt_download, roots=DEB_ROOTS, report=print):
    """Fetch the root packages and every package holding a library they link to, into folder. Returns [Deb].

    `fetch({package: version}, folder)` -> {package: (version fetched, .deb path)}; one call per round."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    debs, todo, seen, owners = [], list(roots), set(roots), {}
    with tempfile.TemporaryDirectory(prefix="ds2perf-bundle-") as scratch:
        while todo:
            fetched = fetch({package: installed_version(package) for package in todo}, folder)
            todo = []
            for package, (version, path) in fetched.items():
                name = f"{package}_{re.sub(r'[^A-Za-z0-9.+~-]', '_', version)}_{Path(path).name.rsplit('_', 1)[-1]}"
                path = Path(path).rename(folder / name)
                debs.append(Deb(package, version, name, path.stat().st_size))
                report(f"  {name} ({path.stat().st_size / 2**20:.2f} MiB)")
                unpacked = Path(scratch) / package
                run(["dpkg-deb", "-x", str(path), str(unpacked)])
                libraries = sorted(linked_libraries(elf_files(unpacked)))
                owners |= owning_packages([library for library in libraries if library not in owners])
                for library in libraries:
                    owner = owners[library]
                    if owner is None:
                        raise BundleError(f"{library} (needed by {package}) belongs to no Debian package here")
                    if owner not in seen and owner not in PRESENT_EVERYWHERE:
                        seen.add(owner)
                        todo.append(owner)
    return debs


# ---------------------------------------------------------------------------------------------- wheels
def requirement_pins(requirements_file=ROOT / "requirements.txt"):
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", Path(requirements_file).read_text(), re.M))
    return {name.lower(): version for name, version in pins.items()}


REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*\(?([^;)]*)\)?")


def python_requirements(requirements_file=ROOT / "requirements.txt"):
    """[Requirement]: the carried pins, then what they require (at this environment's versions)."""
    pins = requirement_pins(requirements_file)
    missing = sorted(set(CARRIED_PINS) - set(pins))
    if missing:
        raise BundleError(f"{requirements_file} pins no version of {', '.join(missing)}")
    found = {name: Requirement(name, pins[name], "pin", f"=={pins[name]}", module)
             for name, module in CARRIED_PINS.items()}
    todo = list(CARRIED_PINS)
    while todo:
        for text in importlib.metadata.requires(todo.pop(0)) or []:
            if "extra ==" in text:
                continue
            name, spec = REQUIREMENT.match(text).groups()
            name, spec = name.lower().replace("_", "-"), spec.replace(" ", "")
            if name in FROM_THE_IMAGE:
                continue
            if name in found:
                if spec and found[name].rule == "missing" and spec not in found[name].spec.split(","):
                    found[name].spec = ",".join(filter(None, (found[name].spec, spec)))
                continue
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:   # its marker excludes this Python: not needed here
                continue
            found[name] = Requirement(name, version, "missing", spec)
            todo.append(name)
    return list(found.values())


def download_wheels(requirements, folder, python_versions=PYTHON_VERSIONS, report=print):
    """Binary wheels of `requirements` for each CPython version into folder (pure ones once). Where a
    dependency has no wheel of the carried version for some Python, the newest one its requirers accept."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def pip_download(version, specs):
        return subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
             *[arg for p in PLATFORMS for arg in ("--platform", p)], "-d", str(folder), *specs],
            capture_output=True, text=True)

    for version in python_versions:
        report(f"  CPython {version}: {' '.join(f'{r.name}=={r.version}' for r in requirements)}")
        if pip_download(version, [f"{r.name}=={r.version}" for r in requirements]).returncode == 0:
            continue
        for r in requirements:   # find which one has no such wheel
            if pip_download(version, [f"{r.name}=={r.version}"]).returncode == 0:
                continue
            if r.rule == "pin":
                raise BundleError(f"no wheel of {r.name}=={r.version} (requirements.txt) for CPython {version} on "
                                  "manylinux x86-64: drop that version with --python_versions, or change the pin")
            done = pip_download(version, [f"{r.name}{r.spec}"])
            if done.returncode != 0:
                raise BundleError(f"no wheel of {r.name}{r.spec} for CPython {version}: {done.stderr[-800:]}")
            report(f"  CPython {version}: no wheel of {r.name} {r.version}; carrying the newest {r.name}{r.spec}")
    return sorted(p.name for p in folder.glob("*.whl"))


# ----------------------------------------------------------------------------------------------- sizes
def folder_bytes(folder):
    return sum(p.lstat().st_size for p in Path(folder).rglob("*") if p.is_file() or p.is_symlink())


def tree_bytes(root=ROOT):
    """Bytes of what a device job sends besides carried paths: tracked files and untracked ones not ignored."""
    names = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root).split("\0")
    return sum((Path(root) / n).lstat().st_size for n in set(names) if n and os.path.lexists(Path(root) / n))


def write_manifest(folder, debs, requirements, wheels, python_versions):
    manifest = {
        "made_by": "scripts/gpu_bundle.py", "made_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "made_on": _os_name(), "python_versions": list(python_versions),
        "debs": [asdict(d) for d in debs], "python": [asdict(r) for r in requirements], "wheels": wheels,
        "not_carried": sorted(FROM_THE_IMAGE) + ["nvidia-dali (~480 MB installed)"],
    }
    path = Path(folder) / "bundle.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _os_name():
    try:
        return re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        return "unknown"


def replace_folder(new, target):
    """Put the finished folder `new` in place of `target` (the old one removed only after)."""
    target = Path(target)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    Path(new).rename(target)
    shutil.rmtree(old, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the bundle folder (default .gpu_bundle)")
    parser.add_argument("--python_versions", default=",".join(PYTHON_VERSIONS),
                        help="CPython versions to fetch compiled wheels for (comma-separated)")
    args = parser.parse_args(argv)
    versions = [v for v in args.python_versions.split(",") if v]
    out = args.out.resolve()
    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        print(f"gpu_bundle: .deb files (the versions installed here) into {staging / 'debs'}")
        debs = collect_debs(staging / "debs")
        requirements = python_requirements()
        print(f"gpu_bundle: Python wheels into {staging / 'wheels'}")
        wheels = download_wheels(requirements, staging / "wheels", versions)
        write_manifest(staging, debs, requirements, wheels, versions)
    except BundleError as error:
        print(f"gpu_bundle: error: {error}", file=sys.stderr)
        shutil.rmtree(staging, ignore_errors=True)
        return 2
    replace_folder(staging, out)
    bundle = folder_bytes(out)
    tree = tree_bytes()
    total = tree + bundle
    print(f"gpu_bundle: {out}: {len(debs)} .deb files {folder_bytes(out / 'debs') / 2**20:.1f} MiB, "
          f"{len(wheels)} wheels {folder_bytes(out / 'wheels') / 2**20:.1f} MiB")
    print(f"gpu_bundle: bundle {bundle / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
          f"{total / 2**20:.1f} MiB of the {TRANSFER_LIMIT / 2**20:.0f} MiB a device job brings"
          + ("" if total <= TRANSFER_LIMIT else ": TOO LARGE"))
    return 0 if total <= TRANSFER_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
