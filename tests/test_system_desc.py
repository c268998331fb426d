"""benchmark.results.system_desc (one system per machine) and benchmark.results.package (the official layout)."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.results import package, report, system_desc
from mlperf_run_logs import write_run_log

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "results" / "CPU"
FIELDS_OF_THE_CHECKER = 33


def test_the_description_is_generated_from_this_machine_and_passes_the_official_checker(tmp_path):
    desc = system_desc.describe()
    assert len(desc) == FIELDS_OF_THE_CHECKER and all(isinstance(v, str) for v in desc.values())
    cpuinfo = Path("/proc/cpuinfo").read_text()
    reported = re.search(r"^model name\s*: (.*)$", cpuinfo, re.M).group(1)
    assert desc["host_processor_model_name"] in (reported, system_desc._processor_model(
        reported, *(re.search(rf"^{field}\s*: (.*)$", cpuinfo, re.M).group(1) for field in ("cpu family", "model"))))
    assert desc["host_processor_vcpu_count"] == str(len(__import__("os").sched_getaffinity(0)))
    assert desc["host_memory_capacity"].endswith(" GiB") and desc["accelerators_per_node"] == "0"
    assert desc["framework"].startswith("PyTorch 2.13.0")
    assert desc["system_name"] == f"CPU_{system_desc._slug(desc['host_processor_model_name'])}_{desc['host_processor_vcpu_count']}c"
    folder = tmp_path / desc["system_name"]
    assert system_desc.write_description(folder, desc) == (True, [])
    assert json.loads((folder / "system_desc.json").read_text()) == desc
    assert (folder / "system_desc.json").stat().st_mode & 0o777 == 0o644


def test_generations_that_report_the_same_bare_name_are_different_systems():
    # Seen here: a Zen 4 VM (family 25, model 17) and a Zen 5 VM (family 26, model 2), both "AMD EPYC".
    zen4, zen5 = (system_desc._processor_model("AMD EPYC", family, model) for family, model in (("25", "17"), ("26", "2")))
    assert (zen4, zen5) == ("AMD EPYC (family 25, model 17)", "AMD EPYC (family 26, model 2)")
    assert system_desc._slug(zen4) != system_desc._slug(zen5)
    assert system_desc._processor_model("Intel(R) Xeon(R) CPU @ 2.20GHz", "6", "85").endswith("(family 6, model 85)")
    # A name that gives the model number already says which processor it is.
    assert system_desc._processor_model("AMD EPYC 9654 96-Core Processor", "25", "17") == "AMD EPYC 9654 96-Core Processor"
    base = system_desc.describe()
    a, b = (dict(base, host_processor_model_name=name) for name in (zen4, zen5))
    assert system_desc.differences(a, b) == [f"host_processor_model_name: {zen4!r} != {zen5!r}"]


def test_the_checker_verdicts_the_published_description_and_bad_ones(tmp_path):
    valid, reasons = system_desc.check(PUBLISHED / "system_desc.json")
    assert valid, reasons
    old = json.loads((PUBLISHED / "system_desc.json").read_text())
    (tmp_path / "onprem.json").write_text(json.dumps(dict(old, status="onprem")))   # as first published
    valid, reasons = system_desc.check(tmp_path / "onprem.json")
    assert not valid and "non valid value: onprem" in reasons[0]
    broken = {k: v for k, v in old.items() if k != "cooling"} | {"accelerators_per_node": "N/A"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    valid, reasons = system_desc.check(tmp_path / "broken.json")
    assert not valid and "Missing field cooling" in reasons[0] and "accelerators_per_node 'N/A'" in reasons[1]
    assert system_desc.write_description(tmp_path / "S", broken)[0] is False
    assert not (tmp_path / "S" / "system_desc.json").exists() and not list((tmp_path / "S").iterdir())


def test_gpus_name_the_system(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\ncase \"$1\" in --query-gpu=name) echo 'NVIDIA H200'; echo 'NVIDIA H200' ;;\n"
                    "*) echo '143771, 1980, 5, 16, 570.1'; echo '143771, 1980, 5, 16, 570.1' ;; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    desc = system_desc.describe(accelerators=2, nodes=2)
    assert desc["system_name"] == "2xH200_2nodes"
    assert (desc["accelerator_model_name"], desc["accelerator_memory_capacity"]) == ("NVIDIA H200", "140 GiB")
    assert desc["accelerator_host_interconnect"] == "PCIe Gen5 x16" and "NVIDIA driver 570.1" in desc["other_software_stack"]
    assert system_desc.describe(accelerators=0)["system_name"].startswith("CPU_")   # a CPU run on a GPU machine


def test_a_folder_belongs_to_the_machine_its_description_describes(tmp_path):
    desc = system_desc.describe()
    name = desc["system_name"]
    assert system_desc.folder_for(tmp_path, desc) == (tmp_path / name, True)
    system_desc.write_description(tmp_path / name, desc)
    assert system_desc.folder_for(tmp_path, desc) == (tmp_path / name, False)
    other = dict(desc, host_memory_capacity="512 GiB")
    hashed = tmp_path / f"{name}_{system_desc.identity_hash(other)}"
    assert system_desc.folder_for(tmp_path, other) == (hashed, True)
    with pytest.raises(ValueError, match="describes another machine .*host_memory_capacity"):
        system_desc.folder_for(tmp_path, other, name)
    legacy = tmp_path / "OLD"
    write_run_log(legacy / "result_1.txt", [0.29])
    with pytest.raises(ValueError, match="holds logs but no system_desc.json"):
        system_desc.folder_for(tmp_path, desc, "OLD")


# ------------------------------------------------------------------------------------------- package
def test_a_package_is_written_in_the_official_layout_and_scored_from_it(tmp_path):
    target = package.write_package(PUBLISHED, tmp_path / "pkg")
    org = tmp_path / "pkg" / "closed" / "ds2perf"
    assert target == org / "results" / "CPU" / "deepspeech2"
    assert sorted(p.name for p in target.iterdir()) == [f"result_{n}.txt" for n in range(1, 6)]
    assert all((target / p.name).read_bytes() == p.read_bytes() for p in PUBLISHED.glob("result_*.txt"))
    desc = json.loads((org / "systems" / "CPU.json").read_text())
    assert desc["division"] == "closed" and desc["submitter"] == "ds2perf"
    assert system_desc.check(org / "systems" / "CPU.json")[0]
    assert sorted(p.name for p in org.iterdir()) == ["results", "systems"]   # no staging left
    built = report.build_report(org)[0]
    [(name, system)] = built["systems"].items()
    assert name == "closed/ds2perf/CPU/deepspeech2" and round(system["score"]["score_minutes"], 3) == 7.657
    assert system["description_check"]["valid"] and system["rcp"]["passed"]
    with pytest.raises(ValueError, match="never overwritten"):
        package.write_package(PUBLISHED, tmp_path / "pkg")


def test_the_official_package_checker_skips_deepspeech2_while_ours_scores_it(tmp_path):
    package.write_package(PUBLISHED, tmp_path / "pkg")
    org = tmp_path / "pkg" / "closed" / "ds2perf"
    proc = subprocess.run([sys.executable, "-m", "mlperf_logging.package_checker", str(org), "training", "4.1.0",
                           "--log_output", str(tmp_path / "pc.log")], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "Skipping benchmark: deepspeech2" in out and "SUCCESS" in out   # it checked nothing of ours
    proc = subprocess.run([sys.executable, "-m", "mlperf_logging.result_summarizer", str(org), "training", "4.1.0",
                           "--csv", str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0 and "closed_deepspeech2.yaml" in proc.stdout + proc.stderr


def test_write_refuses_a_folder_without_a_valid_description(tmp_path):
    folder = tmp_path / "S"
    shutil.copytree(PUBLISHED, folder)
    (folder / "system_desc.json").unlink()
    with pytest.raises(ValueError, match="no system_desc.json"):
        package.write_package(folder, tmp_path / "pkg")
    (folder / "system_desc.json").write_text(json.dumps({"status": "onprem"}))
    with pytest.raises(ValueError, match="fails mlperf_logging's system_desc_checker"):
        package.write_package(folder, tmp_path / "pkg")
    assert not list((tmp_path / "pkg" / "closed" / "ds2perf").glob("results/*"))
