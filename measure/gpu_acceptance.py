"""One command proves the whole benchmark on a bare GPU machine: corpus, the full model to a target, checked log.

On a bare GPU machine (no package index; the device tool brings the working tree and the paths named in its
`carry`, at most 64 MiB and 10 minutes a job), from the repository root:
  1. here, once, where apt and PyPI are reachable:  .venv/bin/python scripts/gpu_bundle.py
     (fills the ignored folder .gpu_bundle/ with .deb files and wheels, ~31 MiB; it prints the total with
     the working tree, which must stay under 64 MiB)
  2. there, one job, carry [".gpu_bundle"], timeout_s 600:
       python3 measure/gpu_acceptance.py --out $OUT
     (about 6-8 minutes; it stops the training in time to check the log within --budget_s 540)
  The CPU rehearsal the test suite runs (tiny corpus and model, gloo, the CPU torch, the same steps):
       python measure/gpu_acceptance.py --rehearsal --out /tmp/acceptance --bundle BUNDLE --work /tmp/work

The steps, each timed, logged and reported in the summary:
  1. environment: GPU model and memory, driver, torch, CUDA, cuDNN, NCCL, Python, CPU cores, and the bf16
     matmul peak measured here (benchmark/flops.py: an 8192^3 product, the best of 5);
  2. install what the image lacks from the carried bundle (measure/carried.py: the .deb files unpacked with
     dpkg-deb -x into a private prefix, wrappers for espeak-ng, sox and flac; the wheels with pip
     --no-index into a private site folder first on PYTHONPATH; the image's CUDA torch stays);
  3. the CPU default's synthetic corpus (12 h, 40 speakers, seed 1) prepared with all cores, and its
     fingerprint compared with the README's (sha256 EXPECTED_SHA256);
  4. the full model (5 x BiLSTM-800, bf16, cuDNN, DDP over NCCL: PROCESS_GROUP=always with one rank)
     trained on it through ./run_and_time.sh with SYSTEM=SYNTH_1GPU (config_SYNTH_1GPU.sh) to its target
     WER on the synthetic dev set; stopped with SIGTERM (run_stop status aborted) when it would leave too
     little of --budget_s for the checks;
  5. the compliance checker (python -m benchmark.results.compliance) and the report (python -m
     benchmark.results.report) on the result.
Written to --out (6 files, plain names): summary.json (every step; time to target, epochs, WER, utt/s,
TFLOP/s and fraction of the matmul peak, data wait per epoch, from the MLPerf log's eval_accuracy,
train_throughput and data_wait_seconds events; what could not be done), acceptance.log (everything the
steps printed), report.txt (report and compliance verdict), and the run's result_<n>.txt, config_<n>.sh and
system_desc.json, to publish under results/<system>/. Also WORK/env.sh: `source` it for later commands in
the same job (measure/gpu_step_benchmark.py needs the carried Python packages too).
Exit status: 0 every step passed and the target was reached; 3 every step passed but the run stopped short
of the target; 1 a step failed; 2 bad arguments or an --out folder that is not empty.
Uses only APIs of PyTorch 2.11 and older and the standard library of Python 3.10-3.13.
"""
import argparse
from collections import deque
from dataclasses import fields
import datetime
import json
import os
from pathlib import Path
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.config import TrainConfig  # noqa: E402  (standard library only)
from benchmark.data.backends import dali_available  # noqa: E402
from benchmark.mlperf_log import Key, Status, read_log, timed_region  # noqa: E402
from benchmark.results import system_desc  # noqa: E402
from measure.carried import CarriedError, install  # noqa: E402

SYSTEM = "SYNTH_1GPU"   # config_SYNTH_1GPU.sh
# The README's corpus: python -m benchmark.prepare.synthetic --hours 12 --speakers 40 --seed 1 (espeak-ng 1.51)
CORPUS = {"hours": 12.0, "eval_hours": 0.5, "speakers": 40, "seed": 1}
EXPECTED_SHA256 = "a0ab0ebe527e4b45aac7016d7d1e68602ad37da9e48e6cc6ebd2e73a1f3f79ca"
REHEARSAL_CORPUS = {"hours": 0.01, "eval_hours": 0.003, "speakers": 4, "seed": 1}
REHEARSAL_SETTINGS = {"NUM_GPUS": "0", "RNN_HIDDEN_SIZE": "32", "RNN_LAYERS": "2", "CONV_CHANNELS": "4",
                      "BATCH_SIZE": "4", "EVAL_BATCH_SIZE": "8", "MAX_EPOCHS": "1", "LOG_EVERY": "0"}
CHECK_RESERVE_S = 60      # of the budget, kept for the checks and the summary after the training
STOP_GRACE_S = 30         # after SIGTERM, before SIGKILL
LAUNCHER_VARIABLES = ("SYSTEM SYSTEM_NAME NPROC NNODES RDZV_ENDPOINT RESULT_INDEX DATASET DATA_DIR TRAIN_SUBSETS "
                      "EVAL_SUBSETS SYNTH_HOURS SYNTH_SEED NEXP SEED_BASE RESULTS_DIR RUNS_DIR CLEAR_CACHES "
                      "GLOBAL_BATCH_SIZE DRY_RUN TORCHRUN TRAIN_DATA_DIR EVAL_DATA_DIR PYTHON").split()


class StepFailed(RuntimeError):
    """A step could not do its job; the message says why (the summary records it)."""


class Job:
    """The log (console and --out/acceptance.log), the clock and the budget, and the steps' results."""

    def __init__(self, out, budget_s):
        self.start, self.budget_s = time.monotonic(), budget_s
        self.log = open(out / "acceptance.log", "w", buffering=1, errors="replace")
        self.steps = {}

    def elapsed(self):
        return time.monotonic() - self.start

    def say(self, text):
        line = f"[{self.elapsed():6.1f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def step(self, name, function, *args):
        """Run one step: its result dict (with ok, seconds, and error when it failed). A step function
        returns its result, with ok False and an error where it failed but has figures to keep."""
        self.say(f"===== {name}")
        started = time.monotonic()
        try:
            result = {"ok": True, **function(self, *args)}
        except (StepFailed, CarriedError) as error:
            result = {"ok": False, "error": str(error)}
        except Exception as error:   # a bug or a surprise of the machine: keep going, say what it was
            self.log.write(traceback.format_exc())
            result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        result["seconds"] = round(time.monotonic() - started, 1)
        self.say(f"----- {name}: {'ok' if result['ok'] else 'FAILED: ' + result['error']} ({result['seconds']} s)")
        self.steps[name] = result
        return result

    def run(self, cmd, env, timeout=None):
        """Run cmd in its own process group, its output into the log; SIGTERM after `timeout` seconds (then
        SIGKILL). Returns (exit status, last lines of output, whether it was stopped)."""
        self.say("$ " + shlex.join(str(c) for c in cmd))
        process = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
        stopped, killer = threading.Event(), threading.Timer(STOP_GRACE_S, lambda: signal_group(signal.SIGKILL))
        killer.daemon = True

        def signal_group(signum):
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                pass

        def stop():
            stopped.set()
            self.say(f"stopping it: {timeout:.0f} s passed (SIGTERM; SIGKILL {STOP_GRACE_S} s later)")
            signal_group(signal.SIGTERM)
            killer.start()

        timer = threading.Timer(timeout, stop) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        tail = deque(maxlen=300)
        for line in process.stdout:
            print(line, end="", flush=True)
            self.log.write(line)
            tail.append(line)
        process.wait()
        for waiting in (timer, killer):
            if waiting:
                waiting.cancel()
        return process.returncode, "".join(tail), stopped.is_set()


# ------------------------------------------------------------------------------------------------ steps
def environment(job, rehearsal):
    """GPU, driver, torch, CUDA, cuDNN, NCCL, CPU and the bf16 matmul peak of this machine."""
    import torch
    from benchmark.flops import matmul_peak
    host = system_desc.describe(accelerators=0 if rehearsal else 1)
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu": host["host_processor_model_name"], "cpu_cores": len(os.sched_getaffinity(0)),
            "memory": host["host_memory_capacity"], "os": host["operating_system"]}
    try:
        version = torch.cuda.nccl.version()   # a tuple in current releases, an int (2708) in older ones
        info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except Exception:   # a CPU build of torch has no NCCL
        info["nccl"] = None
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True) if shutil.which("nvidia-smi") else None
    info["nvidia_smi"] = smi.stdout.strip().splitlines() if smi and smi.returncode == 0 else []
    info["driver"] = info["nvidia_smi"][0].split(",")[-1].strip() if info["nvidia_smi"] else None
    device = "cpu"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "gpu_capability": f"{props.major}.{props.minor}", "gpus_visible": torch.cuda.device_count()}
        device = "cuda"
    elif not rehearsal:
        raise StepFailed(f"torch {torch.__version__} sees no CUDA device (nvidia-smi: {info['nvidia_smi'] or 'none'})")
    peak = matmul_peak(device, torch.bfloat16)
    info["bf16_matmul_peak_tflops"] = round(peak / 1e12, 3 if device == "cpu" else 1)
    if device == "cuda":
        torch.cuda.empty_cache()
    for key, value in info.items():
        job.say(f"{key}: {value}")
    return info


def install_carried(job, bundle, work):
    carried = install(bundle, work, sys.executable)
    (work / "env.sh").write_text(carried.env_file_text())
    report = dict(vars(carried))
    for key in ("tools", "sox_plugins", "installed", "from_image", "notes"):
        job.say(f"{key}: {report[key]}")
    job.say(f"{len(carried.debs)} .deb files unpacked; for later commands in this job: source {work / 'env.sh'}")
    return {"carried": carried, "report": report}


def corpus(job, carried, data_dir, args, expected):
    cmd = [sys.executable, "-m", "benchmark.prepare.synthetic", "--data_dir", data_dir,
           "--hours", args["hours"], "--eval_hours", args["eval_hours"], "--speakers", args["speakers"],
           "--seed", args["seed"], "--jobs", len(os.sched_getaffinity(0))]
    status, tail, _ = job.run(cmd, carried.environment())
    if status != 0:
        raise StepFailed(f"the corpus preparation exited with status {status}: {tail.strip()[-500:]}")
    fingerprint = json.loads((data_dir / "fingerprint.json").read_text())
    result = {"data_dir": str(data_dir), "args": args, "sha256": fingerprint["sha256"], "expected_sha256": expected,
              "versions": fingerprint["versions"], "subsets": fingerprint["subsets"]}
    if expected and fingerprint["sha256"] != expected:
        return result | {"ok": False, "error": f"fingerprint {fingerprint['sha256']} is not the expected {expected} "
                                               f"(tools {fingerprint['versions']}): the corpus differs"}
    job.say(f"fingerprint {fingerprint['sha256']}: " + ("matches the expected one" if expected else "not compared"))
    return result


def launch_environment(carried, settings):
    """The environment of ./run_and_time.sh: the carried tools, no stray configuration variables, ours."""
    env = carried.environment()
    for name in LAUNCHER_VARIABLES + [f.name.upper() for f in fields(TrainConfig)]:
        env.pop(name, None)
    return env | settings


def torchrun_of_this_python(work):
    """{} where torchrun sits beside this Python (run_and_time.sh takes that one), else a TORCHRUN wrapper:
    a torchrun elsewhere on PATH would start another Python, without the carried packages."""
    if (Path(sys.executable).parent / "torchrun").is_file():
        return {}
    wrapper = work / "torchrun"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m torch.distributed.run "$@"\n')
    wrapper.chmod(0o755)
    return {"TORCHRUN": str(wrapper)}


def train(job, carried, data_dir, work, settings):
    remaining = job.budget_s - job.elapsed() - CHECK_RESERVE_S
    if remaining < 60:
        raise StepFailed(f"only {remaining:.0f} s of --budget_s left for the training")
    env = launch_environment(carried, {
        "SYSTEM": SYSTEM, "TRAIN_DATA_DIR": str(data_dir / "train.csv"), "EVAL_DATA_DIR": str(data_dir / "dev.csv"),
        "RESULTS_DIR": str(work / "results"), "RUNS_DIR": str(work / "runs"), "PYTHON": sys.executable,
        "NEXP": "1", "SEED_BASE": "1", **torchrun_of_this_python(work), **settings})
    job.say(f"settings: {settings}; stopped after {remaining:.0f} s if still running")
    before = set((work / "results").glob("*/result_*.txt"))
    status, tail, stopped = job.run(["bash", "run_and_time.sh"], env, timeout=remaining)
    new = sorted(set((work / "results").glob("*/result_*.txt")) - before, key=lambda p: p.stat().st_mtime)
    if not new or not new[-1].stat().st_size:
        raise StepFailed(f"./run_and_time.sh wrote no result log (exit status {status}): {tail.strip()[-800:]}")
    figures = run_figures(new[-1])
    result = {"exit_status": status, "stopped_for_time": stopped, "log": str(new[-1]),
              "result_line": next((line for line in tail.splitlines() if line.startswith("RESULT,")), None), **figures}
    if figures["status"] not in (Status.SUCCESS, Status.ABORTED) or status not in (0, 3) or stopped:
        result |= {"ok": False, "error": f"the run ended with exit status {status} and run_stop status "
                                         f"{figures['status']}" + (" (stopped for time)" if stopped else "")}
    return result


def run_figures(log_path):
    """The run's numbers from its MLPerf log: status, time, and per epoch WER, loss, rates, data wait."""
    records, warnings = read_log(log_path)
    region = timed_region(records)
    first = {r.key: r for r in reversed(records)}
    epochs = {}
    for r in records:
        epoch = r.metadata.get(Key.EPOCH_NUM)
        if r.key == Key.EVAL_ACCURACY:
            epochs.setdefault(epoch, {})["wer"] = r.value
        elif r.key == Key.TRAIN_LOSS:
            epochs.setdefault(epoch, {})["train_loss"] = round(r.value, 4)
        elif r.key == Key.TRAIN_THROUGHPUT:
            m = r.metadata
            epochs.setdefault(epoch, {}).update(
                tflops=r.value, utterances_per_second=m.get("utterances_per_second"),
                audio_seconds_per_second=m.get("audio_seconds_per_second"),
                fraction_of_peak=m.get("fraction_of_peak"), precision=m.get("precision"),
                matmul_peak_tflops=m.get("matmul_peak_tflop_per_second"))
        elif r.key == Key.DATA_WAIT_SECONDS:
            epochs.setdefault(epoch, {}).update(data_wait_seconds=r.value,
                                                data_wait_fraction=r.metadata.get("fraction"),
                                                epoch_seconds=r.metadata.get("epoch_seconds"))
    seconds = region.milliseconds / 1000 if region.milliseconds is not None else None
    model = first[Key.MODEL_CONFIG].value if Key.MODEL_CONFIG in first else {}
    return {"status": region.status, "run_seconds": seconds,
            "time_to_target_seconds": seconds if region.status == Status.SUCCESS else None,
            "target_wer": first[Key.TARGET_WER].value if Key.TARGET_WER in first else None,
            "global_batch_size": first[Key.GLOBAL_BATCH_SIZE].value if Key.GLOBAL_BATCH_SIZE in first else None,
            "epochs": len([e for e in epochs.values() if "wer" in e]),
            "per_epoch": [{"epoch": k, **v} for k, v in sorted(epochs.items(), key=lambda kv: kv[0] or 0)],
            "model_config": model, "log_warnings": warnings + region.problems}


def check(job, carried, log):
    env = launch_environment(carried, {})
    status, compliance, _ = job.run([sys.executable, "-m", "benchmark.results.compliance", log], env)
    report_status, report, _ = job.run([sys.executable, "-m", "benchmark.results.report", Path(log).parent], env)
    result = {"compliance_passed": status == 0, "compliance": compliance.strip().splitlines()[-20:],
              "report_status": report_status, "report_text": report + "\n# compliance\n" + compliance}
    if status != 0 or report_status != 0:
        result |= {"ok": False, "error": f"compliance checker exit status {status}, report exit status {report_status}"}
    return result


# ---------------------------------------------------------------------------------------------- summary
def limits(summary, rehearsal):
    """What this job could not do, in words."""
    notes = []
    model = summary["steps"].get("train", {}).get("model_config", {})
    if rehearsal:
        notes.append("CPU rehearsal: no GPU, so gloo instead of NCCL, the CPU torch, a tiny corpus and model "
                     "(its times and WER say nothing about a GPU)")
    backend = model.get("backend", "torch")
    if backend != "dali_gpu" and not dali_available():
        notes.append("NVIDIA DALI is absent (about 480 MB installed, far over the 64 MiB a job can bring): the run "
                     f"used the {backend} loader (decode and features on the CPU cores), not DALI's GPU pipeline")
    elif backend != "dali_gpu":
        notes.append(f"the run used the {backend} loader (--data_backend auto's choice here), not DALI's GPU pipeline")
    if not rehearsal:
        notes.append("one GPU: DDP over NCCL with one rank (PROCESS_GROUP=always): the all-reduces of gradients, "
                     "finiteness and WER counts run through NCCL, but no data crosses GPUs; scaling is not measured")
    notes.append("one run (seed 1): an MLPerf score needs 5 runs; the report lists this one without a score")
    return notes


def readme_row(train, machine):
    """The README table row of this run: machine, status, minutes, epochs, and per epoch WER, utt/s, % of the
    matmul peak and data wait (None without a timed run)."""
    per, seconds = train.get("per_epoch", []), train.get("run_seconds")

    def col(key, scale=1.0, digits=3):
        return ", ".join(f"{e[key] * scale:.{digits}f}" for e in per if e.get(key) is not None)
    if seconds is None:
        return None
    return (f"| {machine} | {train.get('status')} | {seconds / 60:.2f} | {train.get('epochs')} | {col('wer')} | "
            f"{col('utterances_per_second', digits=1)} | {col('fraction_of_peak', 100, 1)}% | "
            f"{col('data_wait_fraction', 100, 1)}% |")


def write_atomically(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(out, train):
    """Copy the run's log, resolved configuration and system description into --out."""
    log = Path(train["log"])
    number = log.stem.removeprefix("result_")
    for source in (log, log.with_name(f"config_{number}.sh"), log.with_name(system_desc.DESCRIPTION_FILE)):
        if source.is_file():
            shutil.copyfile(source, out / source.name)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (absent or empty; $OUT on the device)")
    parser.add_argument("--bundle", type=Path, default=ROOT / ".gpu_bundle",
                        help="the carried bundle of scripts/gpu_bundle.py (default .gpu_bundle)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ds2perf-acceptance"),
                        help="working folder: prefix, site, corpus, results, runs (reused by a second run)")
    parser.add_argument("--budget_s", type=float, default=540.0, help="seconds the whole job may take")
    parser.add_argument("--rehearsal", action="store_true", help="CPU rehearsal: tiny corpus and model, gloo")
    parser.add_argument("--expect_sha256", default=None,
                        help="the corpus fingerprint to expect (default: the README's; the rehearsal: none)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="a configuration variable for ./run_and_time.sh (repeatable), e.g. MAX_EPOCHS=8")
    args = parser.parse_args(argv)
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set {item!r}: expected VAR=VALUE")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out {args.out}: not an empty folder (results are never overwritten)")
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    job = Job(args.out, args.budget_s)
    corpus_args = REHEARSAL_CORPUS if args.rehearsal else CORPUS
    expected = args.expect_sha256 if args.expect_sha256 or args.rehearsal else EXPECTED_SHA256
    settings = (dict(REHEARSAL_SETTINGS, CLEAR_CACHES="false") if args.rehearsal else {}) | dict(
        item.split("=", 1) for item in args.set)
    summary = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": shlex.join(sys.argv), "rehearsal": args.rehearsal, "system": SYSTEM,
               "budget_s": args.budget_s, "steps": job.steps}
    data_dir = work / "data" / ("synthetic_rehearsal" if args.rehearsal else "synthetic")
    try:
        job.step("environment", environment, args.rehearsal)
        carried = job.step("install", install_carried, args.bundle, work).pop("carried", None)
        if carried is not None:
            job.step("corpus", corpus, carried, data_dir, corpus_args, expected)
        if carried is not None and (data_dir / "fingerprint.json").is_file():   # also a corpus that differs
            train_result = job.step("train", train, carried, data_dir, work, settings)
            if train_result.get("log"):
                publish(args.out, train_result)
                check_result = job.step("check", check, carried, train_result["log"])
                write_atomically(args.out / "report.txt", check_result.pop("report_text", ""))
    finally:
        names = ("environment", "install", "corpus", "train", "check")
        for name in names:
            job.steps.setdefault(name, {"ok": False, "error": "not run: an earlier step failed"})
        train_result = job.steps["train"]
        all_ok = all(job.steps[n]["ok"] for n in names)
        summary |= {"elapsed_s": round(job.elapsed(), 1), "all_steps_passed": all_ok,
                    "target_reached": train_result.get("status") == Status.SUCCESS,
                    "time_to_target_seconds": train_result.get("time_to_target_seconds"),
                    "readme_row": readme_row(train_result, job.steps["environment"].get("gpu", "CPU (rehearsal)")),
                    "could_not_do": limits(summary, args.rehearsal)}
        write_atomically(args.out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        job.say("===== summary (" + str(args.out / "summary.json") + ")")
        for name in names:
            step = job.steps[name]
            job.say(f"{name:12s} {'ok' if step['ok'] else 'FAILED'} {step.get('seconds', '')} "
                    f"{step.get('error', '')}")
        job.say(f"target reached: {summary['target_reached']}; time to target: {summary['time_to_target_seconds']}"
                f"; README row: {summary['readme_row']}")
        for note in summary["could_not_do"]:
            job.say(f"not done: {note}")
        job.log.close()
    if not all_ok:
        return 1
    return 0 if summary["target_reached"] else 3


if __name__ == "__main__":
    sys.exit(main())
