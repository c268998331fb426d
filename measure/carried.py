"""Install, on a bare machine without a package index, what the bundle of scripts/gpu_bundle.py carries.

    carried = install(Path(".gpu_bundle"), Path("/tmp/ds2perf-acceptance"), sys.executable)   # or CarriedError
    subprocess.run(cmd, env=carried.environment())    # PATH, PYTHONPATH and DS2_FORTUNES_DIR for the run

System packages: every .deb of BUNDLE/debs is unpacked with `dpkg-deb -x` into WORK/prefix (apt is never
run, nothing of the image is overwritten). WORK/bin gets one small wrapper per program (espeak-ng, sox,
flac) that sets LD_LIBRARY_PATH to the prefix's library folders and ESPEAK_DATA_PATH to its voice data for
that program alone, so the Python processes (PyTorch) never load the carried libraries. sox finds its
format plugins (FLAC among them) only in the folder compiled into libsox, /usr/lib/x86_64-linux-gnu/sox:
where the image has no such folder, a symbolic link to the prefix's is made there (the one path written
outside WORK); where it has one, it is kept and used. `ldd` then checks that every carried program and
plugin finds all its libraries. The prose for the synthetic corpus is the prefix's fortunes folder
(DS2_FORTUNES_DIR, read by benchmark/prepare/prose.py).
Python: BUNDLE/bundle.json lists the distributions with a rule each: `pin` (requirements.txt's) is
installed unless this Python has exactly that version, `missing` (what the pins require) only where this
Python has none. They are installed with `pip install --no-index --no-deps --target WORK/site` from
BUNDLE/wheels and put first on PYTHONPATH (shadowing the image's copies); the image's own torch, numpy,
scipy and pandas are used as they are. Then each pin's module is imported and `pip check` must report no
unmet requirement of the carried distributions.
"""
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import re
import shutil
import subprocess

TOOLS = ("espeak-ng", "sox", "flac")
SOX_PLUGIN_DIR = Path("/usr/lib/x86_64-linux-gnu/sox")   # compiled into Debian's libsox.so.3
# exec -a: the program sees the name it was called by, as when it is on PATH itself (sox prints it in
# `sox --version`, which goes into the corpus fingerprint).
WRAPPER = """#!/bin/bash
# {tool} from the carried .deb files (measure/carried.py): its libraries and data, for this program alone.
LD_LIBRARY_PATH={libraries}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} ESPEAK_DATA_PATH={data} exec -a {tool} {real} "$@"
"""


class CarriedError(RuntimeError):
    """The bundle cannot be installed here; the message says what is missing or wrong."""


@dataclass
class Carried:
    """What install() did: the folders and the report (every list and dict goes into the summary)."""
    bin_dir: str = ""
    site: str = ""
    fortunes_dir: str = ""
    debs: list = field(default_factory=list)          # .deb files unpacked
    tools: dict = field(default_factory=dict)         # program -> its --version line (through the wrapper)
    sox_plugins: str = ""                             # what was done about SOX_PLUGIN_DIR
    installed: dict = field(default_factory=dict)     # distribution -> version installed into site
    from_image: dict = field(default_factory=dict)    # distribution -> the image's version, kept
    notes: list = field(default_factory=list)

    def environment(self, base=None):
        """`base` (default os.environ) with the carried programs, Python packages and prose first."""
        env = dict(os.environ if base is None else base)
        if self.bin_dir:
            env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
            env["DS2_FORTUNES_DIR"] = self.fortunes_dir
        if self.site:
            env["PYTHONPATH"] = self.site + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
        return env

    def env_file_text(self):
        """The same settings as a shell file to source (for other scripts in the same job)."""
        lines = ["# made by measure/carried.py: source it to use the carried programs and Python packages"]
        if self.bin_dir:
            lines += [f'export PATH="{self.bin_dir}:$PATH"', f'export DS2_FORTUNES_DIR="{self.fortunes_dir}"']
        if self.site:
            lines.append(f'export PYTHONPATH="{self.site}${{PYTHONPATH:+:$PYTHONPATH}}"')
        return "\n".join(lines) + "\n"


def _run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def _is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


# ------------------------------------------------------------------------------------ system packages
def unpack_debs(debs_dir, prefix):
    debs = sorted(Path(debs_dir).glob("*.deb"))
    if not debs:
        raise CarriedError(f"{debs_dir}: no .deb files (make the bundle with scripts/gpu_bundle.py)")
    if shutil.which("dpkg-deb") is None:
        raise CarriedError("dpkg-deb not found: unpacking the carried .deb files needs a Debian or Ubuntu image")
    Path(prefix).mkdir(parents=True, exist_ok=True)
    for deb in debs:
        done = _run(["dpkg-deb", "-x", str(deb), str(prefix)])
        if done.returncode != 0:
            raise CarriedError(f"dpkg-deb -x {deb}: {done.stderr.strip()}")
    return [d.name for d in debs]


def library_dirs(prefix):
    """Every folder of the prefix holding a shared library (libpulse keeps one in a subfolder)."""
    return sorted({str(p.parent) for p in Path(prefix).rglob("*.so*")
                   if p.is_file() and not p.is_symlink() and _is_elf(p)})


def write_wrappers(prefix, bin_dir):
    """One wrapper per carried program in bin_dir. Returns {tool: wrapper path} and the voice data folder."""
    # ESPEAK_DATA_PATH names the folder holding espeak-ng-data/ (the voices' one, with phontab; not the docs')
    data = next((p.parent.parent for p in Path(prefix).rglob("espeak-ng-data/phontab")), None)
    if data is None:
        raise CarriedError(f"{prefix}: no espeak-ng-data folder (the bundle lacks espeak-ng-data)")
    libraries = ":".join(library_dirs(prefix))
    Path(bin_dir).mkdir(parents=True, exist_ok=True)
    wrappers = {}
    for tool in TOOLS:
        real = Path(prefix) / "usr" / "bin" / tool
        if not real.is_file():
            raise CarriedError(f"{real}: missing (the bundle lacks the package of {tool})")
        wrapper = Path(bin_dir) / tool
        wrapper.write_text(WRAPPER.format(tool=tool, libraries=libraries, data=data, real=real))
        wrapper.chmod(0o755)
        wrappers[tool] = wrapper
    return wrappers, libraries


def link_sox_plugins(prefix, system_dir=SOX_PLUGIN_DIR):
    """Make sox's fixed plugin folder show the carried plugins where the image has none. Returns a note."""
    carried = Path(prefix) / SOX_PLUGIN_DIR.relative_to("/")   # where the .deb puts them
    if not carried.is_dir():
        raise CarriedError(f"{carried}: missing (the bundle lacks libsox-fmt-base, sox's FLAC format)")
    if os.path.islink(system_dir) and Path(os.readlink(system_dir)) == carried:
        return f"{system_dir} -> {carried} (already linked)"
    if os.path.lexists(system_dir):
        if not (Path(system_dir) / "libsox_fmt_flac.so").exists():
            raise CarriedError(f"{system_dir} exists without libsox_fmt_flac.so: sox could not write FLAC")
        return f"{system_dir}: this machine's own, kept"
    try:
        Path(system_dir).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(carried, system_dir)
    except OSError as error:
        raise CarriedError(f"cannot link {system_dir} -> {carried} ({error.strerror}): sox reads its FLAC format "
                           "from that folder only (run as root on a bare machine)") from None
    return f"{system_dir} -> {carried} (linked)"


def check_libraries(prefix, libraries, system_dir=SOX_PLUGIN_DIR):
    """ldd of every carried program and sox plugin, with the wrappers' library path: [problems]."""
    if shutil.which("ldd") is None:
        return []   # nothing to check with; the programs' --version runs below still load every library
    files = [Path(prefix) / "usr" / "bin" / tool for tool in TOOLS] + sorted(Path(system_dir).glob("libsox_fmt_*.so"))
    env = dict(os.environ, LD_LIBRARY_PATH=libraries)
    problems = []
    for path in files:
        missing = re.findall(r"^\s*(\S+) => not found", _run(["ldd", str(path)], env).stdout, re.M)
        problems += [f"{path}: {name} not found" for name in missing]
    return problems


def tool_versions(wrappers):
    versions = {}
    for tool, wrapper in wrappers.items():
        done = _run([str(wrapper), "--version"])
        text = (done.stdout or done.stderr).strip().splitlines()
        if done.returncode != 0 or not text:
            raise CarriedError(f"{tool} --version failed through {wrapper} (status {done.returncode}): "
                               f"{done.stderr.strip()[-500:]}")
        versions[tool] = text[0].strip()
    return versions


# ----------------------------------------------------------------------------------------------- Python
def needs_install(requirement, have):
    return have is None or (requirement["rule"] == "pin" and have != requirement["version"])


def install_wheels(requirements, wheels_dir, site, python):
    """pip install --no-index --no-deps --target site of the requirements this Python lacks. Returns
    ({name: spec installed}, {name: version kept from the image})."""
    wanted, kept = {}, {}
    image, _ = probe_python(python, requirements, import_modules=False)
    for r in requirements:
        have = image[r["name"]]
        if needs_install(r, have):
            wanted[r["name"]] = r["spec"]
        else:
            kept[r["name"]] = have
    if wanted:
        if _run([python, "-m", "pip", "--version"]).returncode != 0:
            raise CarriedError(f"{python} has no pip: the carried wheels cannot be installed")
        Path(site).mkdir(parents=True, exist_ok=True)
        # No pip configuration of the image's (an index, a constraints file pinning other versions, --user)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
        done = _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-deps",
                     "--upgrade", "--find-links", str(wheels_dir), "--target", str(site),
                     *[name + spec for name, spec in wanted.items()]], env)
        if done.returncode != 0:
            raise CarriedError(f"pip install from {wheels_dir} failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return wanted, kept


# Run by the Python being checked: argv[1] = JSON {"names": [...], "modules": [...]}; prints versions, problems.
CHECK_SCRIPT = """
import importlib, importlib.metadata, json, sys
wanted, versions, problems = json.loads(sys.argv[1]), {}, []
for module in wanted["modules"]:
    try:
        importlib.import_module(module)
    except Exception as error:
        problems.append(f"import {module}: {type(error).__name__}: {error}")
for name in wanted["names"]:
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        versions[name] = None
print(json.dumps({"versions": versions, "problems": problems}))
"""


def probe_python(python, requirements, env=None, import_modules=True):
    """({distribution: version or None}, [import problems]) as `python` sees them in `env`."""
    wanted = {"names": [r["name"] for r in requirements],
              "modules": [r["module"] for r in requirements if r["module"]] if import_modules else []}
    done = _run([python, "-c", CHECK_SCRIPT, json.dumps(wanted)], env)
    if done.returncode != 0:
        raise CarriedError(f"{python} could not report its Python packages: {done.stderr.strip()[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["versions"], result["problems"]


def check_python(requirements, python, env):
    """Import each pin's module with the site first on the path and run pip check: (versions, [problems])."""
    versions, problems = probe_python(python, requirements, env)
    for r in requirements:
        have = versions[r["name"]]
        if have is None or (r["rule"] == "pin" and have != r["version"]):
            problems.append(f"{r['name']}: {have or 'absent'} after the install, wanted {r['spec'] or 'any'}")
    names = {re.sub(r"[-_.]+", "-", r["name"]).lower() for r in requirements}
    check = _run([python, "-m", "pip", "check"], env)
    problems += [line for line in check.stdout.splitlines()
                 if line.split() and re.sub(r"[-_.]+", "-", line.split()[0]).lower() in names]
    return versions, problems


# ------------------------------------------------------------------------------------------------ all
def install(bundle, work, python, sox_plugin_dir=SOX_PLUGIN_DIR):
    """Install the bundle for `python`; WORK/prefix, WORK/bin, WORK/site. Returns Carried; CarriedError."""
    bundle, work = Path(bundle), Path(work)
    manifest_path = bundle / "bundle.json"
    if not manifest_path.is_file():
        raise CarriedError(f"{manifest_path}: missing. Make the bundle here first (scripts/gpu_bundle.py) and name "
                           f"{bundle.name} in the device tool's carry")
    manifest = json.loads(manifest_path.read_text())
    carried = Carried()
    prefix = work / "prefix"
    carried.debs = unpack_debs(bundle / "debs", prefix)
    wrappers, libraries = write_wrappers(prefix, work / "bin")
    carried.bin_dir = str(work / "bin")
    carried.sox_plugins = link_sox_plugins(prefix, sox_plugin_dir)
    problems = check_libraries(prefix, libraries, sox_plugin_dir)
    if problems:
        raise CarriedError("carried programs miss libraries: " + "; ".join(problems))
    carried.tools = tool_versions(wrappers)
    fortunes = prefix / "usr" / "share" / "games" / "fortunes"
    if not fortunes.is_dir():
        raise CarriedError(f"{fortunes}: missing (the bundle lacks the fortunes packages)")
    carried.fortunes_dir = str(fortunes)
    wanted, carried.from_image = install_wheels(manifest["python"], bundle / "wheels", work / "site", python)
    if wanted:
        carried.site = str(work / "site")
    versions, problems = check_python(manifest["python"], python, carried.environment())
    if problems:
        raise CarriedError("Python packages: " + "; ".join(problems))
    carried.installed = {name: versions[name] for name in wanted}
    carried.notes = [f"not carried (the image's own are used): {', '.join(manifest.get('not_carried', []))}"]
    return carried
