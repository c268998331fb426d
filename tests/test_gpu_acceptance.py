"""measure/gpu_acceptance.py rehearsed on the CPU, so no line of it runs for the first time on a GPU.

The bundle is made by scripts/gpu_bundle.py's own closure code (ldd over every carried ELF file, dpkg -S to
packages), its .deb files repacked offline from the packages installed here (the same files apt-get download
fetches), plus a tiny real wheel the venv lacks, so the install step unpacks real espeak-ng and sox, writes
their wrappers and pip-installs a wheel with --no-index. Then the script's five steps run as on a GPU:
environment, install, a tiny corpus through the carried programs (its fingerprint equal to the one the
system's programs give), the SYNTH_1GPU config through ./run_and_time.sh (tiny model, gloo, one epoch), the
compliance checker and the report.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import carried, gpu_acceptance  # noqa: E402
from scripts import gpu_bundle  # noqa: E402

PROBE = gpu_bundle.Requirement("ds2perf-probe", "1.0", "pin", "==1.0", "ds2perf_probe")


def repack_installed(wanted, folder, scratch):
    """gpu_bundle.apt_download's contract, offline: each installed package's files as a .deb."""
    fetched = {}
    for package, version in wanted.items():
        staging = Path(scratch) / package
        listed = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
        for name in listed.splitlines():
            source = Path(name)
            if not name.startswith("/") or source.is_dir() or not os.path.lexists(source):   # folders come with files
                continue
            target = staging / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), target)
            else:
                shutil.copy2(source, target)
        arch = subprocess.run(["dpkg-query", "-W", "-f=${Architecture}", package], capture_output=True, text=True,
                              check=True).stdout
        (staging / "DEBIAN").mkdir(parents=True, exist_ok=True)
        (staging / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
                                                    "Maintainer: test <t@example.org>\nDescription: repacked\n")
        deb = Path(folder) / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "-b", str(staging), str(deb)], check=True,
                       capture_output=True)
        fetched[package] = (version, deb)
    return fetched


def probe_wheel(folder):
    """A real (tiny) wheel of a distribution no environment has: the install step must pip-install it."""
    path = Path(folder) / "ds2perf_probe-1.0-py3-none-any.whl"
    info = "ds2perf_probe-1.0.dist-info"
    files = {"ds2perf_probe/__init__.py": "VERSION = '1.0'\n",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: ds2perf-probe\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path.name


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    scratch = tmp_path_factory.mktemp("repack")
    debs = gpu_bundle.collect_debs(folder / "debs", lambda wanted, f: repack_installed(wanted, f, scratch),
                                   report=lambda text: None)
    (folder / "wheels").mkdir()
    wheels = [probe_wheel(folder / "wheels")]
    gpu_bundle.write_manifest(folder, debs, gpu_bundle.python_requirements() + [PROBE], wheels, ["3.11"])
    return folder


def test_the_bundle_closes_over_every_library_the_carried_programs_link(bundle):
    manifest = json.loads((bundle / "bundle.json").read_text())
    packages = {d["package"] for d in manifest["debs"]}
    # the roots, the libraries found by ldd (libespeak-ng1 for espeak-ng, libsox3 for sox, libFLAC for the
    # FLAC plugin), never glibc or the C++ runtime
    assert set(gpu_bundle.DEB_ROOTS) | {"libespeak-ng1", "libsox3"} <= packages
    assert any(p.startswith("libflac") for p in packages)   # libflac12 on Debian 12, libflac12t64 on Ubuntu 24.04
    assert not packages & gpu_bundle.PRESENT_EVERYWHERE
    assert all((bundle / "debs" / d["file"]).stat().st_size == d["bytes"] for d in manifest["debs"])
    rules = {r["name"]: (r["rule"], r["spec"]) for r in manifest["python"]}
    pins = gpu_bundle.requirement_pins()
    for name in gpu_bundle.CARRIED_PINS:
        assert rules[name] == ("pin", f"=={pins[name]}")
    assert rules["rapidfuzz"][0] == rules["cffi"][0] == "missing"   # jiwer's and soundfile's needs
    assert not set(rules) & gpu_bundle.FROM_THE_IMAGE


def test_the_rehearsal_runs_every_step_and_writes_the_outputs(bundle, tmp_path):
    # The fingerprint the system's own espeak-ng and sox give the tiny corpus: the carried ones must match.
    reference = subprocess.run(
        [sys.executable, "-m", "benchmark.prepare.synthetic", "--data_dir", str(tmp_path / "reference"),
         *[arg for key, value in gpu_acceptance.REHEARSAL_CORPUS.items() for arg in (f"--{key}", str(value))]],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "reference" / "fingerprint.json").read_text())["sha256"]
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run([sys.executable, "measure/gpu_acceptance.py", "--rehearsal", "--out", str(out),
                           "--bundle", str(bundle), "--work", str(work), "--expect_sha256", expected],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    # 3: every step passed, and one epoch of a tiny model does not reach the target
    assert done.returncode == 3, done.stdout[-4000:] + done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["acceptance.log", "config_1.sh", "report.txt", "result_1.txt",
                                                     "summary.json", "system_desc.json"]
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["all_steps_passed"] and all(steps[n]["ok"] for n in steps), steps
    assert steps["environment"]["bf16_matmul_peak_tflops"] > 0 and steps["environment"]["torch"]
    install = steps["install"]["report"]
    assert install["installed"] == {"ds2perf-probe": "1.0"} and install["from_image"]["jiwer"] == "4.0.0"
    # the carried programs ran: espeak-ng with the prefix's voices, sox under its own name
    assert f"Data at: {work}/prefix/" in install["tools"]["espeak-ng"]
    assert install["tools"]["sox"].startswith("sox: ")
    assert (work / "env.sh").read_text().count(str(work / "site")) == 1
    assert steps["corpus"]["sha256"] == expected
    train = steps["train"]
    assert train["status"] == "aborted" and train["exit_status"] == 3 and train["epochs"] == 1
    assert train["model_config"] | {"process_group": "gloo", "world_size": 1, "backend": "torch", "rnn_layers": 2} \
        == train["model_config"]
    (epoch,) = train["per_epoch"]
    assert 0 < epoch["wer"] <= 1 and epoch["utterances_per_second"] > 0 and 0 < epoch["fraction_of_peak"] < 1.5
    assert 0 <= epoch["data_wait_fraction"] < 1 and epoch["precision"] == "bf16"
    assert steps["check"]["compliance_passed"] and "PASS" in (out / "report.txt").read_text()
    assert summary["readme_row"].startswith("| CPU (rehearsal) | aborted | ") and not summary["target_reached"]
    assert any("not DALI's GPU pipeline" in note for note in summary["could_not_do"])
    assert "RESULT,DEEPSPEECH2,1," in (out / "acceptance.log").read_text()
    # the result is never overwritten: the same --out again is refused before anything runs
    again = subprocess.run([sys.executable, "measure/gpu_acceptance.py", "--rehearsal", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "not an empty folder" in again.stderr


def test_sox_plugins_are_linked_where_the_machine_has_none(bundle, tmp_path):
    prefix = tmp_path / "prefix"
    carried.unpack_debs(bundle / "debs", prefix)
    system_dir = tmp_path / "usr" / "lib" / "sox"
    note = carried.link_sox_plugins(prefix, system_dir)
    assert note.endswith("(linked)") and (system_dir / "libsox_fmt_flac.so").is_file()
    assert carried.link_sox_plugins(prefix, system_dir).endswith("(already linked)")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(carried.CarriedError, match="without libsox_fmt_flac.so"):
        carried.link_sox_plugins(prefix, other)


def test_the_help_says_how_to_run_it_on_a_bare_gpu_machine_and_the_readme_holds_its_fingerprint():
    text = subprocess.run([sys.executable, "measure/gpu_acceptance.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    for needed in ("scripts/gpu_bundle.py", 'carry [".gpu_bundle"]', "python3 measure/gpu_acceptance.py --out $OUT"):
        assert needed in text
    assert gpu_acceptance.EXPECTED_SHA256 in (ROOT / "README.md").read_text()


def test_a_failed_step_is_reported_and_the_summary_still_written(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "measure/gpu_acceptance.py", "--rehearsal", "--out", str(out),
                           "--bundle", str(tmp_path / "no_bundle"), "--work", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert steps["environment"]["ok"] and not steps["install"]["ok"]
    assert "bundle.json: missing" in steps["install"]["error"] and "scripts/gpu_bundle.py" in steps["install"]["error"]
    assert all(steps[name]["error"].startswith("not run") for name in ("corpus", "train", "check"))
