"""The shell layer: run_and_time.sh, the system configs, run.sub, run_with_docker.sh and the Dockerfile.

No training runs here (the end-to-end test does that): the launchers are run for real in DRY_RUN mode, and
once with a stand-in for torchrun that writes the two MLPerf events a run is timed by, so numbering,
resolved configs, RESULT lines and exit statuses are checked on the real scripts. Linting uses the pinned
hadolint and shellcheck binaries from requirements.txt.
"""
import json
import os
from pathlib import Path
import re
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

from benchmark.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIGS = ["CPU", "DGX1", "DGXA100", "DGXH100", "SYNTH_1GPU"]
SHELL_SCRIPTS = ["run_and_time.sh", "run_with_docker.sh", "run.sub", "scripts/run_lib.sh", "hyperparameters.sh",
                 "librispeech_recipe.sh",
                 "scripts/setup.sh", "scripts/threads.sh", "run_tests.sh", "scripts/container_lib.sh",
                 "scripts/container_check.sh"] + [f"config_{c}.sh" for c in CONFIGS]
# Variables a developer's shell might hold that would change what the launchers do.
LAUNCHER_VARS = ("SYSTEM NPROC NNODES RDZV_ENDPOINT RESULT_INDEX DATASET DATA_DIR TRAIN_SUBSETS EVAL_SUBSETS "
                 "SYNTH_HOURS SYNTH_SEED NEXP SEED SEED_BASE RESULTS_DIR RUNS_DIR CLEAR_CACHES DRY_RUN PYTHON "
                 "TORCHRUN GLOBAL_BATCH_SIZE IMAGE BUILD GPUS DOCKER_ARGS CONT CUDA_VISIBLE_DEVICES "
                 "DOCKER PODMAN_RUNTIME ULIMITS BASE_IMAGE CONTAINERS_CONF DATA_HOST RESULTS_HOST RUNS_HOST "
                 "CHECK_DIR TESTS NO_CACHE STANDIN_IMAGE DEBIAN_IMAGE DEBIAN_MIRROR TORCH_WHEEL").split()


def linter(name):
    """The pinned linter binary: beside this python in a venv; in the image pip puts console scripts of the
    system python in /usr/local/bin while python3 is /usr/bin/python3, so fall back to PATH there."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert found, f"{name}-py (requirements.txt) is not installed: run scripts/setup.sh"
    return Path(found)


def train_var_names():
    out = subprocess.run([sys.executable, "scripts/train_flags.py", "--names"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


@pytest.fixture(scope="module")
def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in set(LAUNCHER_VARS + train_var_names())}
    env["PYTHON"] = sys.executable
    return env


def fake_binary(folder, name, body):
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def launch(clean_env, tmp_path):
    """Runs a launcher with results/runs in tmp_path and a fake nvidia-smi (no GPU unless gpus= is given)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def run(script="run_and_time.sh", gpus=(), dry=True, **variables):
        lines = "".join(f"echo '{name}'\n" for name in gpus)
        no_driver = "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'\nexit 9\n"
        fake_binary(bin_dir, "nvidia-smi", lines if gpus else no_driver)
        env = dict(clean_env, PATH=f"{bin_dir}:{clean_env['PATH']}", RESULTS_DIR=str(tmp_path / "results"),
                   RUNS_DIR=str(tmp_path / "runs"), CLEAR_CACHES="false")
        if dry:
            env["DRY_RUN"] = "1"
        env.update({k: str(v) for k, v in variables.items()})
        return subprocess.run(["bash", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    # the environment of a run, for commands the tests compose themselves
    run.env = dict(clean_env, PATH=f"{bin_dir}:{clean_env['PATH']}", RESULTS_DIR=str(tmp_path / "results"),
                   RUNS_DIR=str(tmp_path / "runs"))
    return run


def machine_name(launch, accelerators=0, nodes=1):
    """The system name benchmark.results.system_desc derives on this machine (with the fake nvidia-smi of the
    last launch): the results folder and --system of a run here."""
    out = subprocess.run([sys.executable, "-m", "benchmark.results.system_desc", "--accelerators", str(accelerators),
                          "--nodes", str(nodes)], cwd=ROOT, env=launch.env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["system_name"]


def launch_commands(stdout):
    """The printed torchrun command lines, each split into words."""
    return [shlex.split(line) for line in stdout.splitlines() if "-m benchmark.train" in line]


def train_flags(words):
    return words[words.index("benchmark.train") + 1:]


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_every_script_parses(script):
    subprocess.run(["bash", "-n", script], cwd=ROOT, check=True)


def test_scripts_pass_shellcheck():
    shellcheck = linter("shellcheck")
    result = subprocess.run([str(shellcheck), "-x", "-s", "bash", "-S", "warning", *SHELL_SCRIPTS], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


EXPECTED = {  # config -> flags its launch command must carry
    "CPU": {"--nproc_per_node": "2", "--amp": "off", "--rnn_type": "lstm", "--time_stride": "2", "--num_gpus": "0",
            "--target_wer": "0.3", "--features": "logmel", "--train_data_dir": "data/synthetic/train.csv"},
    "DGX1": {"--nproc_per_node": "8", "--amp": "fp16", "--rnn_type": "lstm", "--rnn_hidden_size": "800",
             "--rnn_layers": "5", "--target_wer": "0.23", "--batch_size": "32", "--data_backend": "dali_gpu",
             "--eval_data_dir": "data/librispeech/dev-clean.csv"},
    "DGXA100": {"--nproc_per_node": "8", "--amp": "bf16", "--batch_size": "64", "--target_wer": "0.23"},
    "DGXH100": {"--nproc_per_node": "8", "--amp": "bf16", "--batch_size": "64", "--target_wer": "0.23"},
    # the GPU acceptance run: the full model on the synthetic corpus, one GPU under DDP (a group of one)
    "SYNTH_1GPU": {"--nproc_per_node": "1", "--process_group": "always", "--amp": "bf16", "--rnn_layers": "5",
                   "--rnn_hidden_size": "800", "--features": "spectrogram", "--batch_size": "64",
                   "--learning_rate": "0.001", "--target_wer": "0.3", "--max_epochs": "12",
                   "--train_data_dir": "data/synthetic/train.csv", "--eval_data_dir": "data/synthetic/dev.csv"},
}


@pytest.mark.parametrize("system", CONFIGS)
def test_dry_run_prints_the_launch_command_of_every_config(launch, tmp_path, system):
    data_dirs = [ROOT / "data" / "synthetic", ROOT / "data" / "librispeech"]
    existed = {d: d.exists() for d in data_dirs}
    result = launch(SYSTEM=system)
    assert result.returncode == 0, result.stderr
    [words] = launch_commands(result.stdout)
    assert Path(words[0]).name == "torchrun" and "--standalone" in words
    options = dict(w.split("=", 1) for w in words if w.startswith("--") and "=" in w)
    for flag, value in EXPECTED[system].items():
        assert options.get(flag) == value, (flag, words)
    # The system is the machine's (no GPU here: the DGX configs name a CPU system too); SYSTEM the recipe.
    name = machine_name(launch, accelerators={"CPU": 0, "SYNTH_1GPU": 1}.get(system, 8))
    assert options["--system"] == name and options["--seed"] == "1"
    assert options["--log_file"] == f"{tmp_path}/results/{name}/result_1.txt"
    # The flags are ones the training accepts: its own parser validates them.
    config = parse_config(train_flags(words))
    assert config.system == name
    assert f"SYSTEM={system}" in result.stdout.splitlines() and f"SYSTEM_NAME={name}" in result.stdout.splitlines()
    # A dry run writes nothing: no results, no run folders, no data.
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
    assert {d: d.exists() for d in data_dirs} == existed


def test_environment_overrides_the_config_and_nexp_counts_seeds(launch):
    result = launch(SYSTEM="CPU", RNN_LAYERS=2, AMP="bf16", SORTAGRAD="false", NEXP=3, SEED_BASE=10)
    assert result.returncode == 0, result.stderr
    commands = launch_commands(result.stdout)
    assert len(commands) == 3
    configs = [parse_config(train_flags(words)) for words in commands]
    assert [c.seed for c in configs] == [10, 11, 12]
    assert [Path(c.log_file).name for c in configs] == ["result_1.txt", "result_2.txt", "result_3.txt"]
    assert {(c.rnn_layers, c.amp, c.sortagrad) for c in configs} == {(2, "bf16", False)}


@pytest.mark.parametrize("variable, value", [
    ("SORTAGRAD", "yes"), ("RESUME", "True"), ("AMP", ":true"), ("DATA_BACKEND", "gpu"), ("TIME_STRIDE", "3"),
    ("BATCH_SIZE", "3.5"), ("LEARNING_RATE", "abc"), ("TARGET_WER", "1.5"), ("MAX_EPOCHS", "0"),
    ("NPROC", "0"), ("NEXP", "two"), ("SEED_BASE", "-1"), ("CLEAR_CACHES", "1"), ("DATASET", "libri"),
    ("SYNTH_HOURS", "0"), ("DRY_RUN", "yes"), ("SYSTEM", "NOSUCH"),
])
def test_a_bad_value_fails_naming_its_variable(launch, tmp_path, variable, value):
    result = launch(**{variable: value})
    assert result.returncode == 2, result.stdout
    assert variable in result.stderr and "-m benchmark.train" not in result.stdout
    assert not (tmp_path / "results").exists()


def test_a_config_file_error_names_the_variable(launch, tmp_path):
    config = tmp_path / "config_MINE.sh"
    config.write_text((ROOT / "config_CPU.sh").read_text().replace('"${AMP:=off}"', '"${AMP:=:true}"')
                      .replace('"$(dirname "${BASH_SOURCE[0]}")/hyperparameters.sh"', str(ROOT / "hyperparameters.sh")))
    result = launch(SYSTEM=str(config))
    assert result.returncode == 2 and "AMP=':true'" in result.stderr
    good = tmp_path / "config_MINE2.sh"
    good.write_text(config.read_text().replace('"${AMP:=:true}"', '"${AMP:=bf16}"'))
    result = launch(SYSTEM=str(good))
    assert result.returncode == 0, result.stderr
    assert "SYSTEM=MINE2" in result.stdout.splitlines() and "--amp=bf16" in result.stdout   # from the file name


@pytest.mark.parametrize("gpus, system", [
    ((), "CPU"),
    (("NVIDIA H100 80GB HBM3",) * 8, "DGXH100"),
    (("NVIDIA H200",) * 8, "DGXH100"),
    (("NVIDIA A100-SXM4-80GB",) * 8, "DGXA100"),
    (("Tesla V100-SXM2-32GB",) * 8, "DGX1"),
])
def test_default_system_follows_the_visible_gpus(launch, gpus, system):
    result = launch(gpus=gpus)
    assert result.returncode == 0, result.stderr
    assert f"SYSTEM={system}" in result.stdout.splitlines()
    assert f"--system={machine_name(launch, len(gpus) if system != 'CPU' else 0)}" in result.stdout
    assert "a real run would stop" not in result.stdout


def test_cuda_visible_devices_limits_the_gpus(launch):
    h100s = ("NVIDIA H100 80GB HBM3",) * 8
    assert "a real run would stop" in launch(gpus=h100s, CUDA_VISIBLE_DEVICES="0,1").stdout
    assert "SYSTEM=CPU" in launch(gpus=h100s, CUDA_VISIBLE_DEVICES="").stdout.splitlines()


def test_too_few_gpus_and_unknown_gpus_are_explained(launch):
    result = launch(gpus=("NVIDIA H100 80GB HBM3",))
    assert "NPROC=8" in result.stdout and "a real run would stop" in result.stdout
    result = launch(gpus=("NVIDIA H100 80GB HBM3",), dry=False, SYSTEM="DGXH100")
    assert result.returncode == 2 and "NPROC=8" in result.stderr and "set NPROC=1" in result.stderr
    result = launch(gpus=("NVIDIA L4",))
    assert result.returncode == 2 and "SYSTEM=" in result.stderr


def test_multi_node_needs_a_shared_endpoint_and_result_number(launch):
    assert "RDZV_ENDPOINT" in launch(NNODES=2).stderr
    assert "RESULT_INDEX" in launch(NNODES=2, RDZV_ENDPOINT="127.0.0.1:29400").stderr
    result = launch(NNODES=2, NPROC=1, RDZV_ENDPOINT="127.0.0.1:29400", RESULT_INDEX=7)
    [words] = launch_commands(result.stdout)
    name = machine_name(launch, nodes=2)
    assert name.endswith("_2nodes")
    assert {"--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:29400", f"--rdzv_id=ds2perf-{name}-7",
            "--nproc_per_node=1"} <= set(words) and "--standalone" not in words
    assert parse_config(train_flags(words)).log_file.endswith(f"/{name}/result_7.txt")


def reserve(results, count, parallel):
    script = f"source scripts/run_lib.sh; ds2_reserve_result {shlex.quote(str(results))}"
    procs = [subprocess.Popen(["bash", "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(count)] if parallel else []
    if parallel:
        return [int(p.communicate()[0]) for p in procs]
    return [int(subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout) for _ in range(count)]


def test_result_numbers_are_never_reused_even_concurrently(tmp_path):
    results = tmp_path / "results" / "CPU"
    results.mkdir(parents=True)
    (results / "result_1.txt").write_text("an earlier run\n")
    (results / "result_3.txt").write_text("another\n")
    numbers = reserve(results, 2, parallel=False) + reserve(results, 12, parallel=True)
    assert len(set(numbers)) == len(numbers) == 14
    assert not {1, 3} & set(numbers)
    assert (results / "result_1.txt").read_text() == "an earlier run\n"
    assert sorted(int(p.stem.split("_")[1]) for p in results.glob("result_*.txt")) == list(range(1, 17))


STANDIN_TORCHRUN = r"""
# Stand-in for torchrun: records its arguments and writes the run_start/run_stop pair a real run logs.
log=""; seed=0
for word in "$@"; do
  case "$word" in --log_file=*) log=${word#--log_file=} ;; --seed=*) seed=${word#--seed=} ;; esac
done
echo "$*" >> "$STANDIN_CALLS"
if [ "${STANDIN_LOG:-true}" = true ]; then
  echo ':::MLLOG {"namespace": "", "time_ms": 1000, "event_type": "INTERVAL_START", "key": "run_start", "value": null, "metadata": {}}' >> "$log"
  echo "garbage line" >> "$log"
  echo ":::MLLOG {\"namespace\": \"\", \"time_ms\": $((13345 + seed)), \"event_type\": \"INTERVAL_END\", \"key\": \"run_stop\", \"value\": null, \"metadata\": {\"status\": \"${STANDIN_STATUS:-success}\"}}" >> "$log"
fi
exit "${STANDIN_EXIT:-0}"
"""


@pytest.fixture
def standin(tmp_path, tiny_corpus):
    """torchrun replaced; real manifests (the tiny corpus), which the launcher's preflight reads."""
    torchrun = fake_binary(tmp_path, "torchrun", STANDIN_TORCHRUN)
    return dict(TORCHRUN=torchrun, STANDIN_CALLS=tmp_path / "calls.txt", TRAIN_DATA_DIR=tiny_corpus / "train.csv",
                EVAL_DATA_DIR=tiny_corpus / "dev.csv")


def describe_folder(folder):
    """Gives folder this machine's system_desc.json, as a first run here would."""
    subprocess.run([sys.executable, "-m", "benchmark.results.system_desc", "--folder-for", str(folder.parent),
                    "--name", folder.name, "--write"], cwd=ROOT, check=True, capture_output=True)


PUBLISHED = ROOT / "results" / "CPU"


def test_a_run_on_another_machine_lands_in_its_own_folder_with_its_own_description(launch, standin, tmp_path):
    """The published results/CPU come from another machine (its system_desc.json says so): a run here gets a
    folder named after this machine, with a description generated here and accepted by mlperf_logging."""
    results = tmp_path / "results"
    shutil.copytree(PUBLISHED, results / "CPU")
    published = {p.name: p.read_bytes() for p in (results / "CPU").iterdir()}
    result = launch(dry=False, SYSTEM="CPU", **standin)
    assert result.returncode == 0, result.stderr
    name = machine_name(launch)
    assert name.startswith("CPU_") and name.endswith(f"_{len(os.sched_getaffinity(0))}c")
    assert {p.name: p.read_bytes() for p in (results / "CPU").iterdir()} == published   # untouched
    assert sorted(p.name for p in (results / name).iterdir()) == ["config_1.sh", "result_1.txt", "system_desc.json"]
    desc = json.loads((results / name / "system_desc.json").read_text())
    here = json.loads(subprocess.run([sys.executable, "-m", "benchmark.results.system_desc"], cwd=ROOT,
                                     env=launch.env, capture_output=True, text=True, check=True).stdout)
    reported = re.search(r"^model name\s*: (.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    assert desc == here and desc["system_name"] == name   # the name, and where it names no model, CPUID's
    assert desc["host_processor_model_name"] == reported or desc["host_processor_model_name"].startswith(f"{reported} (family ")
    check = subprocess.run([sys.executable, "-m", "benchmark.results.system_desc", "--check",
                            str(results / name / "system_desc.json")], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("PASS"), check.stdout
    assert f"--system={name}" in standin["STANDIN_CALLS"].read_text()
    # A second run here lands beside the first.
    assert launch(dry=False, SYSTEM="CPU", **standin).returncode == 0
    assert (results / name / "result_2.txt").is_file() and not (results / "CPU" / "result_6.txt").exists()


def test_a_folder_describing_another_machine_is_never_shared(launch, standin, tmp_path):
    launch(dry=True)
    name = machine_name(launch)
    taken = tmp_path / "results" / name     # the same name, another machine: the published description
    taken.mkdir(parents=True)
    (taken / "system_desc.json").write_text((PUBLISHED / "system_desc.json").read_text())
    result = launch(dry=False, SYSTEM="CPU", **standin)
    assert result.returncode == 0, result.stderr
    [own] = [p for p in (tmp_path / "results").iterdir() if p != taken]
    assert own.name.startswith(f"{name}_") and (own / "result_1.txt").is_file() and (own / "system_desc.json").is_file()
    assert sorted(p.name for p in taken.iterdir()) == ["system_desc.json"]
    # Asking for the published folder by name is refused, naming the difference, before anything is written.
    shutil.copytree(PUBLISHED, tmp_path / "results" / "CPU")
    result = launch(dry=False, SYSTEM="CPU", SYSTEM_NAME="CPU", **standin)
    assert result.returncode == 2 and "describes another machine" in result.stderr
    assert "host_processor_model_name" in result.stderr and not (tmp_path / "results" / "CPU" / "result_6.txt").exists()


def test_timed_runs_reserve_results_write_configs_and_print_result_lines(launch, standin, tmp_path):
    launch(dry=True)   # the fake nvidia-smi, for machine_name
    results = tmp_path / "results" / machine_name(launch)
    describe_folder(results)
    (results / "result_1.txt").write_text("an earlier run\n")
    result = launch(dry=False, SYSTEM="CPU", NEXP=2, SEED_BASE=5, **standin)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^RESULT,DEEPSPEECH2,5,12\.350,[^,]+,\d{4}-\d\d-\d\d ", result.stdout, re.M), result.stdout
    assert re.search(r"^RESULT,DEEPSPEECH2,6,12\.351,", result.stdout, re.M)
    assert (results / "result_1.txt").read_text() == "an earlier run\n"
    for n, seed in ((2, 5), (3, 6)):
        assert "run_stop" in (results / f"result_{n}.txt").read_text()
        resolved = (results / f"config_{n}.sh").read_text()
        assert f"SEED={seed}\n" in resolved and "AMP=off\n" in resolved and "# launch: " in resolved
        sourced = subprocess.run(["bash", "-c", f"set -a; source {results}/config_{n}.sh; echo $RNN_TYPE $SEED"],
                                 capture_output=True, text=True, check=True).stdout
        assert sourced.split() == ["lstm", str(seed)]
    calls = standin["STANDIN_CALLS"].read_text().splitlines()
    assert len(calls) == 2 and "--seed=5" in calls[0] and "--seed=6" in calls[1]
    # Sourcing a resolved config repeats that run: same training flags, same seed (only the files move on).
    again = subprocess.run(["bash", "-c", f"set -a; source {results}/config_3.sh; set +a; DRY_RUN=1 ./run_and_time.sh"],
                           cwd=ROOT, env=launch.env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    [words] = launch_commands(again.stdout)
    recorded = shlex.split((results / "config_3.sh").read_text().split("# launch: ")[1])
    moving = ("--log_file=", "--output_dir=")
    assert [w for w in train_flags(words) if not w.startswith(moving)] == \
           [w for w in train_flags(recorded) if not w.startswith(moving)]
    assert "--seed=6" in words


def test_a_failed_run_passes_its_status_on_and_an_empty_log_is_given_back(launch, standin, tmp_path):
    # torchrun exits 1 whatever its worker's status; an aborted run (target not reached) is told by its log.
    result = launch(dry=False, SYSTEM="CPU", STANDIN_EXIT=1, STANDIN_STATUS="aborted", **standin)
    assert result.returncode == 3, result.stderr
    results = tmp_path / "results" / machine_name(launch)
    assert (results / "result_1.txt").stat().st_size > 0
    result = launch(dry=False, SYSTEM="CPU", STANDIN_EXIT=1, **standin)   # failed after a successful run_stop
    assert result.returncode == 1
    result = launch(dry=False, SYSTEM="CPU", STANDIN_EXIT=1, STANDIN_LOG="false", **standin)
    assert result.returncode == 1 and "removed the empty" in result.stderr
    assert re.search(r"^RESULT,DEEPSPEECH2,1,\d+\.\d{3},", result.stdout, re.M)   # wall time
    assert not (results / "result_3.txt").exists() and not (results / "config_3.sh").exists()


def test_a_reused_result_index_fails_before_anything_is_written(launch, standin, tmp_path):
    """Before: config_1.sh was overwritten with the new seed, the training refused the log (exit 3), and the
    RESULT line paired the new seed with the old run's time."""
    launch(dry=True)
    results = tmp_path / "results" / machine_name(launch)
    describe_folder(results)
    (results / "result_1.txt").write_text(':::MLLOG {"key": "run_start", "time_ms": 0}\n'
                                          ':::MLLOG {"key": "run_stop", "time_ms": 444000, "metadata": '
                                          '{"status": "success"}}\n')
    (results / "config_1.sh").write_text("SEED=1\n")
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    for nexp in (1, 3):   # NEXP=3 from RESULT_INDEX=... would reach result_1.txt at its first run
        result = launch(dry=False, SYSTEM="CPU", RESULT_INDEX=1, SEED_BASE=7, NEXP=nexp, **standin)
        assert result.returncode == 2 and "RESULT_INDEX=1: " in result.stderr and "already holds" in result.stderr
        assert "RESULT," not in result.stdout
        assert {p.name: p.read_bytes() for p in results.iterdir()} == before
        assert not standin["STANDIN_CALLS"].exists() and not (tmp_path / "runs").exists()
    # RESUME=true appends to that log on purpose: the launcher lets it, and keeps config_1.sh as it was.
    result = launch(dry=False, SYSTEM="CPU", RESULT_INDEX=1, RESUME="true", MODEL_DIR=tmp_path / "ckpt", **standin)
    assert result.returncode == 0 and "kept the existing" in result.stderr, result.stderr
    assert (results / "config_1.sh").read_bytes() == before["config_1.sh"]
    assert (results / "result_1.txt").read_bytes().startswith(before["result_1.txt"])
    # An empty result_<n>.txt (another node of the same run made it) is used.
    result = launch(dry=False, SYSTEM="CPU", RESULT_INDEX=2, **standin)
    assert result.returncode == 0 and (results / "result_2.txt").stat().st_size > 0, result.stderr


@pytest.mark.parametrize("variables,message", [
    ({"DATA_BACKEND": "dali_gpu"}, "--data_backend dali_gpu"),
    ({"BAD_ROW": "1"}, "corpus/train.csv:5: "),
])
def test_a_bad_input_stops_the_launch_before_a_result_number_is_reserved(launch, standin, tmp_path, variables,
                                                                          message):
    """Before: the result number was reserved and the training stopped (exit 2, or after run_start for a bad
    row: a half log that blocks the number); with RESULT_INDEX the empty file stayed behind."""
    if variables.pop("BAD_ROW", None):
        corpus = tmp_path / "corpus"
        shutil.copytree(Path(standin["TRAIN_DATA_DIR"]).parent, corpus)
        (corpus / "utt3.wav").unlink()
        standin = dict(standin, TRAIN_DATA_DIR=corpus / "train.csv")
    for extra in ({}, {"RESULT_INDEX": "4"}):
        result = launch(dry=False, SYSTEM="CPU", **variables, **extra, **standin)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert variables or "utt3.wav: no such file" in result.stderr
        assert "nothing was reserved or written" in result.stderr
        assert not list((tmp_path / "results").glob("*/result_*.txt"))
        assert not list((tmp_path / "results").glob("*/config_*.sh"))
        assert not standin["STANDIN_CALLS"].exists()


def test_mllog_seconds_reads_run_start_and_run_stop(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(':::MLLOG {"key": "run_start", "time_ms": 1500}\nnoise\n'
                   ':::MLLOG {"key": "run_stop", "time_ms": 4000.25}\n:::MLLOG {"key": "run_st')
    out = subprocess.run([sys.executable, "scripts/mllog_seconds.py", str(log)], cwd=ROOT, capture_output=True,
                         text=True)
    assert (out.returncode, out.stdout) == (0, "2.500\n")
    log.write_text(':::MLLOG {"key": "run_start", "time_ms": 1500}\n')
    out = subprocess.run([sys.executable, "scripts/mllog_seconds.py", str(log)], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 1 and "run_stop" in out.stderr
    log.write_text(':::MLLOG {"key": "run_start", "time_ms": 0}\n'
                   ':::MLLOG {"key": "run_stop", "time_ms": 1, "metadata": {"status": "aborted"}}\n')
    out = subprocess.run([sys.executable, "scripts/mllog_seconds.py", "--status", str(log)], cwd=ROOT,
                         capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "aborted\n")


def test_mllog_seconds_refuses_a_log_with_two_run_stops(tmp_path):
    """The RESULT line's reader follows the one rule (benchmark.mlperf_log.timed_region): it used to take
    the last run_stop while the report took the first."""
    log = tmp_path / "log.txt"
    log.write_text(':::MLLOG {"key": "run_start", "time_ms": 0}\n'
                   ':::MLLOG {"key": "run_stop", "time_ms": 444000, "metadata": {"status": "success"}}\n'
                   ':::MLLOG {"key": "run_stop", "time_ms": 1043800, "metadata": {"status": "aborted"}}\n')
    for flags in ([], ["--status"]):
        out = subprocess.run([sys.executable, "scripts/mllog_seconds.py", *flags, str(log)], cwd=ROOT,
                             capture_output=True, text=True)
        assert (out.returncode, out.stdout) == (1, ""), flags
        assert "2 run_stop records (lines 2, 3)" in out.stderr


def test_run_sub_launches_every_node_with_c10d_rendezvous(launch, tmp_path):
    slurm = dict(SLURM_JOB_ID=42, SLURM_JOB_NUM_NODES=2, SLURM_JOB_NODELIST="nodeA,nodeB", SLURM_SUBMIT_DIR=ROOT)
    result = launch("run.sub", SYSTEM="DGXH100", NEXP=2, SEED_BASE=3, **slurm)
    assert result.returncode == 0, result.stderr
    commands = launch_commands(result.stdout)
    assert len(commands) == 2
    for i, words in enumerate(commands):
        assert words[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
        assert {"--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d", "--rdzv_endpoint=nodeA:29500",
                f"--rdzv_id=42-{i + 1}"} <= set(words)
        config = parse_config(train_flags(words))
        assert (config.seed, config.amp) == (3 + i, "bf16")
    assert not (tmp_path / "results").exists()
    result = launch("run.sub", SYSTEM="DGXH100")
    assert result.returncode == 2 and "SLURM" in result.stderr


def test_run_with_docker_mounts_data_and_forwards_variables(launch, tmp_path):
    result = launch("run_with_docker.sh", SYSTEM="DGX1", NEXP=2, AMP="fp16", RNN_LAYERS=3, DATA_HOST=tmp_path / "d",
                    DOCKER="docker")
    assert result.returncode == 0, result.stderr
    runs = [shlex.split(line) for line in result.stdout.splitlines() if line.startswith("docker run") and
            "./run_and_time.sh" in line]
    assert len(runs) == 2
    for i, words in enumerate(runs):
        assert f"{tmp_path}/d:/workspace/ds2perf/data" in words and "--gpus" in words
        pairs = {words[j + 1] for j, w in enumerate(words) if w == "-e"}
        assert {"SYSTEM", "AMP", "RNN_LAYERS", "NEXP=1", f"SEED_BASE={1 + i}", "CLEAR_CACHES=false"} <= pairs
    assert "docker build -t ds2perf:latest" in result.stdout and "benchmark.results.report results\n" in result.stdout
    assert {"--ulimit", "memlock=-1", "stack=67108864"} <= set(runs[0])   # docker: NVIDIA's limits, always
    assert launch("run_with_docker.sh", SYSTEM="DGX1", AMP=":true", DOCKER="docker").returncode == 2


# --- run_with_docker.sh with podman, and scripts/container_check.sh: their commands, without an engine ---

def engine_lines(stdout, engine="podman"):
    return [shlex.split(line) for line in stdout.splitlines() if line.startswith(engine + " ")]


def can_raise_limits():
    return subprocess.run(["bash", "-c", "ulimit -H -l unlimited"], capture_output=True).returncode == 0


def crun_refuses_cgroups():
    fs = subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True).stdout.strip()
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    return fs == "tmpfs" and controllers.exists() and bool(controllers.read_text().strip())


@pytest.fixture
def engines(launch, tmp_path):
    """Fake docker (no daemon) and podman in PATH; a containers.conf with default_ulimits = []."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_binary(bin_dir, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1\n')
    fake_binary(bin_dir, "podman", 'case "$1" in --version) echo "podman version 4.3.1" ;; *) exit 1 ;; esac\n')
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return dict(CONTAINERS_CONF=conf)


def test_run_with_docker_detects_podman_and_adds_what_podman_needs(launch, engines, tmp_path):
    # docker is installed but no daemon answers: podman is used.
    result = launch("run_with_docker.sh", SYSTEM="DGXH100", NPROC=1, DATA_HOST=tmp_path / "d", **engines)
    assert result.returncode == 0, result.stderr
    assert "# engine: podman" in result.stdout and not engine_lines(result.stdout, "docker")
    [build] = [w for w in engine_lines(result.stdout) if "build" in w]
    [run] = [w for w in engine_lines(result.stdout) if "./run_and_time.sh" in w]
    runtime = ["--runtime", "runc"] if crun_refuses_cgroups() and shutil.which("runc") else []
    assert build[:1 + len(runtime)] == ["podman", *runtime] and run[:1 + len(runtime)] == ["podman", *runtime]
    # Podman 4.x ignores --gpus without a word: GPUs are CDI devices.
    assert "--gpus" not in run and run[run.index("--device") + 1] == "nvidia.com/gpu=all"
    if can_raise_limits():
        assert {"memlock=-1", "stack=67108864"} <= set(run)
    else:   # any --ulimit fails where podman cannot raise limits: none, and the user is told
        assert "--ulimit" not in run and "# note: no --ulimit options" in result.stdout
    assert f"{tmp_path}/d:/workspace/ds2perf/data" in run


@pytest.mark.parametrize("variables, expected", [
    ({"PODMAN_RUNTIME": "runc"}, ["podman", "--runtime", "runc", "run"]),
    ({"PODMAN_RUNTIME": "default"}, ["podman", "run"]),
    ({"GPUS": '"device=0,2"'}, ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=2"]),
    ({"GPUS": "none", "ULIMITS": "none"}, ["--ipc=host", "-v"]),
    ({"ULIMITS": "memlock=-1 nofile=1024:2048"}, ["--ulimit", "memlock=-1", "--ulimit", "nofile=1024:2048"]),
])
def test_run_with_docker_podman_options(launch, engines, variables, expected):
    result = launch("run_with_docker.sh", SYSTEM="CPU", DOCKER="podman", **engines, **variables)
    assert result.returncode == 0, result.stderr
    [run] = [w for w in engine_lines(result.stdout) if "./run_and_time.sh" in w]
    assert any(run[i:i + len(expected)] == expected for i in range(len(run))), run
    if variables.get("GPUS") == "none":
        assert "--device" not in run and "--gpus" not in run and "--ulimit" not in run


@pytest.mark.parametrize("variable, value", [("GPUS", "2"), ("PODMAN_RUNTIME", "run c"), ("ULIMITS", "memlock")])
def test_run_with_docker_bad_podman_values_fail_naming_them(launch, engines, variable, value):
    result = launch("run_with_docker.sh", SYSTEM="CPU", DOCKER="podman", **engines, **{variable: value})
    assert result.returncode == 2 and variable in result.stderr and "run_and_time.sh" not in result.stdout


@pytest.mark.skipif(can_raise_limits(), reason="this host can raise resource limits: podman needs no default_ulimits")
def test_run_with_docker_says_how_to_let_podman_start_containers(launch, engines, tmp_path):
    conf = tmp_path / "plain.conf"
    conf.write_text("[containers]\n# default_ulimits = [\"nofile=1280:2560\"]\n")
    dry = launch("run_with_docker.sh", SYSTEM="CPU", DOCKER="podman", CONTAINERS_CONF=conf)
    assert dry.returncode == 0 and "default_ulimits = []" in dry.stdout
    real = launch("run_with_docker.sh", dry=False, SYSTEM="CPU", DOCKER="podman", CONTAINERS_CONF=conf, BUILD="false",
                  RESULTS_HOST=tmp_path / "r")
    assert real.returncode == 2 and "default_ulimits = []" in real.stderr and "50-ds2perf-ulimits.conf" in real.stderr
    assert not (tmp_path / "r").exists()   # stopped before anything ran or was made


def test_container_check_help_and_dry_run(launch, engines, tmp_path):
    done = subprocess.run(["scripts/container_check.sh", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "Usage:" in done.stdout and "stand-in" in done.stdout and "TESTS" in done.stdout
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not a real wheel: a dry run only names it")
    check_dir = tmp_path / "check"
    result = launch("scripts/container_check.sh", DOCKER="podman", TORCH_WHEEL=wheel, CHECK_DIR=check_dir, **engines)
    assert result.returncode == 0, result.stderr
    lines = engine_lines(result.stdout)
    [standin] = [w for w in lines if "-f" in w and "scripts/ngc-standin.Dockerfile" in w]
    tag = standin[standin.index("-t") + 1]
    assert re.fullmatch(r"localhost/ds2perf-ngc-standin:[0-9a-f]{12}", tag)
    [build] = [w for w in lines if "build" in w and "-f" not in w]
    assert f"BASE_IMAGE={tag}" in build and build[-1] == "." and "ds2perf:check" in build
    assert any(w[w.index("run"):w.index("run") + 3] == ["run", "--rm", "ds2perf:check"] and "pytest" in w
               for w in lines if "run" in w)   # the suite, in the image
    [run] = [w for w in lines if "./run_and_time.sh" in w]
    assert {"--read-only", f"{check_dir}/results:/workspace/ds2perf/results", f"{check_dir}/data:/workspace/ds2perf/data",
            f"{check_dir}/runs:/workspace/ds2perf/runs", "CLEAR_CACHES=false"} <= set(run)
    assert "--device" not in run and "debootstrap --variant=minbase bookworm" in result.stdout
    assert not check_dir.exists()   # a dry run changes nothing
    # The stand-in's tag follows what it is made of.
    wheel.write_bytes(b"another size")
    again = launch("scripts/container_check.sh", DOCKER="podman", TORCH_WHEEL=wheel, CHECK_DIR=check_dir, **engines)
    assert tag not in again.stdout
    # No DOCKER given and a docker CLI without a daemon (as on the CI VMs): podman.
    detected = launch("scripts/container_check.sh", TORCH_WHEEL=wheel, CHECK_DIR=check_dir, **engines)
    assert detected.returncode == 0 and "# engine: podman" in detected.stdout, detected.stderr
    bad = launch("scripts/container_check.sh", DOCKER="podman", TORCH_WHEEL=wheel, TESTS="some", **engines)
    assert bad.returncode == 2 and "TESTS" in bad.stderr


def dockerfile_instructions():
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in logical.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_passes_hadolint():
    hadolint = linter("hadolint")
    result = subprocess.run([str(hadolint), "--no-color", "Dockerfile", "scripts/ngc-standin.Dockerfile"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_with_the_setup_script_only():
    instructions = dockerfile_instructions()
    [base] = [i for i in instructions if i.startswith("FROM ")]
    # The base is a build argument whose default is a pinned NGC tag (the container check passes its CPU
    # stand-in instead; it is never tagged under NVIDIA's name).
    assert base == "FROM ${BASE_IMAGE}", base
    [default] = [i for i in instructions[:instructions.index(base)] if i.startswith("ARG BASE_IMAGE=")]
    assert re.fullmatch(r"ARG BASE_IMAGE=nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3", default), default
    runs = [i for i in instructions if i.startswith("RUN ")]
    [install] = [i for i in runs if "scripts/setup.sh" in i]
    assert {"NO_VENV=true", "KEEP_TORCH=true"} <= set(install.split())
    for command in runs:   # no second package list: every install goes through scripts/setup.sh
        assert not re.search(r"apt-get install|pip3? install|python3? -m pip", command), command
    copies = [i for i in instructions[:instructions.index(install)] if i.startswith("COPY ")]
    copied = " ".join(copies)
    assert all(name in copied for name in ("requirements.txt", "requirements-dali.txt", "scripts/setup.sh"))
    assert instructions[-1] == 'CMD ["./run_and_time.sh"]'
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "NO_VENV" in setup and "KEEP_TORCH" in setup and "requirements.txt" in setup
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert {".venv", "data", "results/*", "runs", ".git"} <= set(ignored)
    # The image ships only the results the suite and the report read (the suite failed in the image without them).
    assert [line for line in ignored if line.startswith("!")] == ["!results/CPU", "!results/rcps_deepspeech2.json"]


def test_setup_rejects_a_bad_switch_before_installing_anything():
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, KEEP_TORCH="yes"))
    assert result.returncode == 2 and "KEEP_TORCH" in result.stderr


def test_launchers_are_executable():
    for name in ("run_and_time.sh", "run_with_docker.sh", "run.sub", "scripts/setup.sh", "scripts/container_check.sh"):
        assert os.access(ROOT / name, os.X_OK), name
    assert shutil.which("bash")
