"""One system per machine: the MLPerf system description of this machine, generated from the machine itself,
its identity, its system name, and the results folder a run on it may land in.

Usage:
  python -m benchmark.results.system_desc                          # this machine's description (JSON)
  python -m benchmark.results.system_desc --accelerators 8 --nodes 2
  python -m benchmark.results.system_desc --folder-for results     # the results/<system> folder of a run here
  python -m benchmark.results.system_desc --folder-for results --write   # ...and write its system_desc.json
  python -m benchmark.results.system_desc --check results/CPU/system_desc.json   # the official checker's verdict

The description has the 33 fields of mlperf_logging's system_desc_checker, from /proc/cpuinfo,
/proc/meminfo, /sys/block, /etc/os-release, nvidia-smi and the installed packages' versions (read without
importing torch). Its *identity* is the part that decides whether two runs ran on the same system: nodes,
processors, processor model, cores, vCPUs, memory, accelerator model, count and memory, framework. Each log
records the identity (Key.MACHINE). The system name is derived from it: CPU_<processor>_<vcpus>c for a run
on the CPU, <n>x<accelerator> on GPUs (plus _<nodes>nodes). A results folder belongs to the machine its
system_desc.json describes: `--folder-for` picks results/<name>, or results/<name>_<hash of the identity>
when that folder already describes another machine, and never a folder without a description that holds
logs (the published results/CPU predates generated descriptions: its logs are from the machine its
hand-written system_desc.json describes, and no run elsewhere is put beside them).
`--write` creates the description on a system's first run (atomically, mode 0644), after the official
checker (training 4.1.0) accepts it. Exit status: 0, 1 the checker rejects it, 2 bad arguments or a
SYSTEM_NAME folder that describes another machine.

Only the standard library is needed (dry runs use it), except for --check/--write (mlperf_logging).
"""
import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DESCRIPTION_FILE = "system_desc.json"
CHECKER_RULESET = "4.1.0"   # the ruleset our logs follow (benchmark.results.compliance.RULESET)
IDENTITY_FIELDS = ("number_of_nodes", "host_processors_per_node", "host_processor_model_name",
                   "host_processor_core_count", "host_processor_vcpu_count", "host_memory_capacity",
                   "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity", "framework")
INTEGER_FIELDS = ("number_of_nodes", "host_processors_per_node", "accelerators_per_node")   # result_summarizer int()s them
NOT_REPORTED = "not reported"


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpuinfo():
    """(model name, sockets, cores per socket, cache, MHz, flags) from /proc/cpuinfo."""
    fields = {}
    sockets = set()
    for line in _read("/proc/cpuinfo").splitlines():
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name == "physical id":
            sockets.add(value)
        fields.setdefault(name, value)
    model = _processor_model(fields.get("model name") or platform.processor() or "unknown",
                             fields.get("cpu family"), fields.get("model"))
    return (model, max(len(sockets), 1),
            fields.get("cpu cores"), fields.get("cache size"), fields.get("cpu MHz"), fields.get("flags", "").split())


def _processor_model(name, family, model):
    """The processor's name, with its CPUID family and model where the name gives no model number. Virtual
    machines often report a bare "AMD EPYC" or "Intel(R) Xeon(R) CPU @ 2.20GHz" for several generations
    (a Zen 4 and a Zen 5 VM both say "AMD EPYC", and train at different speeds and even WERs): without the
    family and model they would be taken for one system and their runs mixed in one folder."""
    if re.search(r"\d", _slug(name)) or family is None or model is None:
        return name
    return f"{name} (family {family}, model {model})"


def _vcpus():
    try:
        return len(os.sched_getaffinity(0))   # the CPUs this process may use (a container may have fewer)
    except AttributeError:
        return os.cpu_count() or 1


def _memory_gib():
    m = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    return round(int(m.group(1)) / 2**20) if m else None


def _storage():
    """(type, capacity) of the machine's disks (/sys/block; loop, ram and zram devices left out)."""
    kinds, total = set(), 0
    for device in sorted(Path("/sys/block").glob("*")):
        if re.match(r"(loop|ram|zram|dm-|md)", device.name):
            continue
        size = _read(device / "size").strip()
        total += int(size) * 512 if size.isdigit() else 0
        if device.name.startswith("vd"):
            kinds.add("virtio block device")
        elif device.name.startswith("nvme"):
            kinds.add("NVMe SSD")
        else:
            kinds.add("HDD" if _read(device / "queue" / "rotational").strip() == "1" else "SSD")
    return (", ".join(sorted(kinds)) or NOT_REPORTED), (f"{round(total / 1e9)} GB" if total else NOT_REPORTED)


def _nvidia_smi(query):
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return []


def _gpus():
    """[{name, memory_mib, clock_mhz, pcie_gen, pcie_width, driver}] from nvidia-smi (empty without one;
    details "not reported" where its detailed query fails)."""
    details = [[p.strip() for p in line.split(",")] for line in
               _nvidia_smi("memory.total,clocks.max.sm,pcie.link.gen.max,pcie.link.width.max,driver_version")]
    gpus = []
    for i, name in enumerate(_nvidia_smi("name")):
        values = details[i] if i < len(details) and len(details[i]) == 5 else [NOT_REPORTED] * 5
        gpus.append(dict(zip(("memory_mib", "clock_mhz", "pcie_gen", "pcie_width", "driver"), values), name=name.strip()))
    return gpus


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_cuda():
    """torch's CUDA version from its version.py, without importing torch."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if not spec or not spec.origin:
        return None
    m = re.search(r"^cuda\s*(?::\s*\S+)?\s*=\s*'([^']+)'", _read(Path(spec.origin).parent / "version.py"), re.M)
    return m.group(1) if m else None


def _os_name():
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)', _read("/etc/os-release"), re.M)
    return m.group(1) if m else platform.system()


def _slug(text):
    text = re.sub(r"\((R|TM|C)\)|\bCPU\b|\bProcessor\b|@.*$|\bNVIDIA\b|\bTesla\b", " ", text, flags=re.I)
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "unknown"


def describe(accelerators=0, nodes=1, submitter="ds2perf", division="closed"):
    """This machine's MLPerf system description (every system_desc_checker field; strings, as in MLPerf's
    own system JSON files). `accelerators`: GPUs a run uses per node (0: a CPU run)."""
    model, sockets, cores, cache, mhz, flags = _cpuinfo()
    vcpus = _vcpus()
    memory = _memory_gib()
    storage_type, storage_capacity = _storage()
    gpus = _gpus()[:accelerators] if accelerators else []
    accelerators = min(accelerators, len(gpus)) if accelerators else 0
    gpu = gpus[0] if gpus else None
    torch, cuda = _version("torch"), _torch_cuda()
    framework = f"PyTorch {torch}" if torch else "PyTorch (not installed)"
    if accelerators and cuda:
        framework += f", CUDA {cuda}"
    software = [f"Python {platform.python_version()}"] + [
        f"{name} {version}" for name in ("mlperf-logging", "nvidia-dali-cuda120", "nvidia-dali-cuda110", "numpy")
        if (version := _version(name))] + [f"Linux {platform.release()}"]
    if gpu and gpu["driver"] != NOT_REPORTED:
        software.append(f"NVIDIA driver {gpu['driver']}")
    notes = ["generated by benchmark.results.system_desc from /proc/cpuinfo, /proc/meminfo, /sys/block"
             + (", nvidia-smi" if gpu else "")]
    if "hypervisor" in flags:
        notes.append("virtual machine (the CPU reports a hypervisor)")
    if vcpus != (os.cpu_count() or vcpus):
        notes.append(f"{vcpus} of the machine's {os.cpu_count()} logical CPUs available to the run")
    na = "N/A"
    desc = {
        "submitter": submitter, "division": division, "status": "Available on-premise",
        "system_name": None,
        "number_of_nodes": str(nodes), "host_processors_per_node": str(sockets),
        "host_processor_model_name": model, "host_processor_core_count": str(cores or vcpus),
        "host_processor_vcpu_count": str(vcpus),
        "host_processor_frequency": f"{float(mhz):.0f} MHz (at generation)" if mhz else NOT_REPORTED,
        "host_processor_caches": cache or NOT_REPORTED, "host_processor_interconnect": NOT_REPORTED,
        "host_memory_capacity": f"{memory} GiB" if memory else NOT_REPORTED,
        "host_storage_type": storage_type, "host_storage_capacity": storage_capacity,
        "host_networking": na if nodes == 1 else NOT_REPORTED,
        "host_networking_topology": na if nodes == 1 else NOT_REPORTED,
        "host_memory_configuration": NOT_REPORTED,
        "accelerators_per_node": str(accelerators),
        "accelerator_model_name": gpu["name"] if gpu else na,
        "accelerator_host_interconnect": (f"PCIe Gen{gpu['pcie_gen']} x{gpu['pcie_width']}"
                                          if gpu["pcie_gen"] != NOT_REPORTED else NOT_REPORTED) if gpu else na,
        "accelerator_frequency": (f"{gpu['clock_mhz']} MHz" if gpu["clock_mhz"] != NOT_REPORTED else NOT_REPORTED)
                                 if gpu else na,
        "accelerator_on-chip_memories": NOT_REPORTED if gpu else na,
        "accelerator_memory_configuration": NOT_REPORTED if gpu else na,
        "accelerator_memory_capacity": f"{round(int(gpu['memory_mib']) / 1024)} GiB" if gpu and gpu["memory_mib"].isdigit() else (NOT_REPORTED if gpu else na),
        "accelerator_interconnect": NOT_REPORTED if gpu else na,
        "accelerator_interconnect_topology": NOT_REPORTED if gpu else na,
        "cooling": NOT_REPORTED,
        "hw_notes": "; ".join(notes),
        "framework": framework,
        "other_software_stack": ", ".join(software),
        "operating_system": _os_name(),
        "sw_notes": "ds2perf (run_and_time.sh); the recipe of each run is in its config_<n>.sh and log",
    }
    desc["system_name"] = system_name(desc)
    return desc


def identity(desc):
    """The fields that make two descriptions the same system."""
    return {k: str(desc.get(k)) for k in IDENTITY_FIELDS}


def identity_hash(desc):
    return hashlib.sha256(json.dumps(identity(desc), sort_keys=True).encode()).hexdigest()[:8]


def system_name(desc):
    """CPU_<processor>_<vcpus>c, or <n>x<accelerator> (with _<nodes>nodes beyond one node)."""
    if desc["accelerators_per_node"] not in ("0", 0):
        name = f"{desc['accelerators_per_node']}x{_slug(desc['accelerator_model_name'])}"
    else:
        name = f"CPU_{_slug(desc['host_processor_model_name'])}_{desc['host_processor_vcpu_count']}c"
    nodes = str(desc["number_of_nodes"])
    return name if nodes == "1" else f"{name}_{nodes}nodes"


def differences(a, b):
    """'field: A != B' for each identity field in which two descriptions differ."""
    ia, ib = identity(a), identity(b)
    return [f"{k}: {ia[k]!r} != {ib[k]!r}" for k in IDENTITY_FIELDS if ia[k] != ib[k]]


def read_description(folder):
    """The system_desc.json of a results folder, or None; ValueError when unreadable."""
    path = Path(folder) / DESCRIPTION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable system description ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def folder_for(results_dir, desc, name=None):
    """(folder, created): where a run described by `desc` lands. `name` (SYSTEM_NAME) forces a folder,
    which must then describe this machine; ValueError otherwise."""
    results_dir = Path(results_dir)
    candidates = [name] if name else [desc["system_name"], f"{desc['system_name']}_{identity_hash(desc)}"]
    for candidate in candidates:
        folder = results_dir / candidate
        existing = read_description(folder)
        if existing is None:
            if any(folder.glob("result_*.txt")):
                if name:
                    raise ValueError(f"{folder} holds logs but no {DESCRIPTION_FILE}: it cannot be shown to be "
                                     "this machine's; choose another SYSTEM_NAME")
                continue
            return folder, True
        if not differences(existing, desc):
            return folder, False
        if name:
            raise ValueError(f"{folder}/{DESCRIPTION_FILE} describes another machine ("
                             + "; ".join(differences(existing, desc)) + "): a run here never lands there")
    raise ValueError(f"{results_dir}: {', '.join(candidates)} all describe other machines")


# ------------------------------------------------------------------------------------------- checking
class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage().strip())


def check(path, ruleset=CHECKER_RULESET):
    """(valid, reasons) of a system description file: mlperf_logging's system_desc_checker (training,
    `ruleset`), plus what it does not say: every missing field (its status check hides them) and the
    integer fields result_summarizer converts with int()."""
    from mlperf_logging.system_desc_checker import system_desc_checker
    handler = _Messages()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        valid = system_desc_checker.check_system_desc(str(path), "training", ruleset)[0]
    except (OSError, ValueError) as error:
        return False, [f"{path}: {error}"]
    finally:
        root.removeHandler(handler)
    reasons = [m for m in handler.messages if "failed" in m]
    data = json.loads(Path(path).read_text())
    for field in INTEGER_FIELDS:
        if not str(data.get(field, "")).strip().isdigit():
            valid = False
            reasons.append(f"{field} {data.get(field)!r} is not a whole number (result_summarizer int()s it)")
    return valid, reasons


def write_description(folder, desc):
    """Writes folder/system_desc.json atomically (0644) if the official checker accepts it; returns
    (valid, reasons) and writes nothing when it does not."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".system_desc.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(desc, f, indent=2)
            f.write("\n")
        valid, reasons = check(tmp)
        if valid:
            os.chmod(tmp, 0o644)
            os.replace(tmp, folder / DESCRIPTION_FILE)
        return valid, reasons
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmark.results.system_desc", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--accelerators", type=int, default=0, help="GPUs a run uses per node (0: a CPU run)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes a run uses")
    parser.add_argument("--folder-for", metavar="RESULTS_DIR", help="print the folder a run here lands in")
    parser.add_argument("--name", metavar="SYSTEM_NAME", help="with --folder-for: that folder, which must "
                        "describe this machine")
    parser.add_argument("--write", action="store_true", help="with --folder-for: write the folder's "
                        f"{DESCRIPTION_FILE} if it has none")
    parser.add_argument("--check", metavar="FILE", help="the official checker's verdict on a description")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.check:
        valid, reasons = check(args.check)
        print(f"{'PASS' if valid else 'FAIL'}  {args.check} (mlperf_logging system_desc_checker, training "
              f"{CHECKER_RULESET})")
        for reason in reasons:
            print(f"      - {reason}")
        return 0 if valid else 1
    if args.accelerators < 0 or args.nodes < 1:
        print("error: --accelerators must be >= 0 and --nodes >= 1", file=sys.stderr)
        return 2
    desc = describe(args.accelerators, args.nodes)
    if not args.folder_for:
        print(json.dumps(desc, indent=2))
        return 0
    if args.name and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        print(f"error: SYSTEM_NAME='{args.name}': letters, digits, '.', '_' and '-' only", file=sys.stderr)
        return 2
    try:
        folder, new = folder_for(args.folder_for, desc, args.name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.write and new:
        desc["system_name"] = folder.name
        valid, reasons = write_description(folder, desc)
        if not valid:
            print(f"error: the system description of {folder} fails mlperf_logging's checker: "
                  + "; ".join(reasons), file=sys.stderr)
            return 1
    print(folder.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
