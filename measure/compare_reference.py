"""The benchmark against the reference on the same machine, data and recipe, in one job: training throughput,
time-to-target, and where each one's step time goes.

Usage:
  # throughput: 3 warm-up + 30 timed training steps each, on the same batches (a few minutes on 2 cores)
  nice -n 10 python measure/compare_reference.py [--steps 30] [--warmup_steps 3] [--repeats 1] [RECIPE FLAGS]
  # add the 12 busiest operators of each (torch.profiler) over 5 more steps
  nice -n 10 python measure/compare_reference.py --torch_profiler 5
  # time-to-target: `python -m reference.train` then `python -m benchmark.train`, each until the target
  nice -n 10 python measure/compare_reference.py --time_to_target [--nproc N] [--output_dir runs/compare] [RECIPE FLAGS]

RECIPE FLAGS are benchmark.train flags (`python -m benchmark.train --help`). They override the CPU recipe,
which is read from `SYSTEM=CPU DRY_RUN=1 ./run_and_time.sh` (config_CPU.sh, and like run_and_time.sh,
variables set in the environment); --batch_size is per benchmark process, as in benchmark.train. The
reference, one process, gets the global batch of the benchmark's --nproc processes (the run plan's) and
every other flag it has (`python -m reference.train --help`); the others (--amp, --data_backend, ...) are
the benchmark's optimizations and are listed as such. Both start from the same weights (same seed).

Throughput mode: both implementations train on the same batches of the global batch (the sampler's
shuffled epoch-2 order: a representative mix of lengths), each in this process with its own loader, model
and optimizer; the benchmark's step is benchmark.trainer.Trainer.train_step (autocast, CTC in fp32,
GradScaler, clipping, finiteness check, scheduler), the reference's is reference.train's. Timed phases: data (waiting for the next batch; the
DataLoader workers featurize in parallel), forward (model and CTC loss), backward, optimizer (clipping,
finiteness check, step, schedule). Prints utterances/s and seconds of audio per second for each, and the
ratio benchmark/reference. On a shared machine, neighbours change the figures: the load average is
printed, and --repeats alternates the two implementations and keeps each one's best repeat.

Time-to-target mode runs the two real entry points one after the other with their MLPerf logs in
--output_dir: the reference as one process, the benchmark as run_and_time.sh launches it on the CPU
(`torchrun` with --nproc gloo ranks of --batch_size each, the reference's global batch between them),
and prints each one's run_start -> run_stop time, status, epochs, final WER and mean epoch throughput,
and the ratios.
"""
import argparse
import contextlib
from dataclasses import replace
import os
from pathlib import Path
import platform
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GOMP_SPINCOUNT", "20000")   # bounded OpenMP spin, as scripts/threads.sh

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmark import config as bench_config_module  # noqa: E402
from benchmark.data.manifest import filter_by_duration, read_manifests  # noqa: E402
from benchmark.distributed import DistContext  # noqa: E402
from benchmark.mlperf_log import Key, read_log, timed_region  # noqa: E402
from benchmark.plan import make_plan  # noqa: E402
from benchmark.trainer import Trainer  # noqa: E402
from measure.system_recipe import split_flags, system_recipe  # noqa: E402
from reference import config as ref_config_module  # noqa: E402
from reference import features as ref_features  # noqa: E402
from reference.data import SpeechDataset, make_loader as ref_make_loader  # noqa: E402
from reference.train import Training  # noqa: E402

PHASES = ("data", "forward", "backward", "optimizer")


def no_phase(name):
    return contextlib.nullcontext()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag, and the module docstring as written."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter,
                                     epilog="Unknown flags are recipe flags for both trainers (see above).")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per implementation")
    parser.add_argument("--warmup_steps", type=int, default=3, help="untimed steps first (allocations, oneDNN "
                        "primitives, DataLoader start-up)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate reference and benchmark this many "
                        "times; each one's best repeat is reported")
    parser.add_argument("--torch_profiler", type=int, default=0, metavar="STEPS",
                        help="profile this many extra steps of each and print its busiest operators (0: off)")
    parser.add_argument("--time_to_target", action="store_true",
                        help="run both real trainers to the target instead of the throughput steps")
    parser.add_argument("--output_dir", default="runs/compare_reference",
                        help="where --time_to_target writes the two MLPerf logs (a new subfolder per call)")
    parser.add_argument("--nproc", type=int, default=None, help="benchmark processes of the job compared (torchrun, "
                        "gloo, --batch_size utterances each); the reference gets their global batch "
                        "(None: config_CPU.sh's NPROC)")
    args, recipe = parser.parse_known_args(argv)
    for name in ("steps", "repeats", "nproc"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("warmup_steps", "torch_profiler"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative, got {getattr(args, name)}")
    return args, recipe


def build_recipes(base_flags, recipe_flags, nproc):
    """(benchmark argv, reference argv, benchmark-only flags) for `base_flags` (name -> value) updated by
    `recipe_flags` (argv words): a flag given there replaces the base's value. The flags are benchmark.train's
    (--batch_size per process); the reference, one process, gets the global batch of `nproc` such processes."""
    final = dict(base_flags)
    final.update(split_flags(list(recipe_flags)))
    known = set(ref_config_module.flag_names())
    bench_argv = [f"--{n}={v}" for n, v in final.items()]
    global_batch = make_plan(bench_config_module.parse_config(bench_argv), job_context(nproc)).global_batch
    reference = final | {"batch_size": str(global_batch)}
    ref_argv = [f"--{n}={v}" for n, v in reference.items() if n in known]
    return bench_argv, ref_argv, {n: v for n, v in final.items() if n not in known}


def job_context(nproc):
    """Rank 0 of the benchmark's job: nproc processes on one node."""
    return DistContext(world_size=nproc, local_world_size=nproc)


# ---------------------------------------------------------------------------------------------- timing
class PhaseTimer:
    """Seconds per phase; on a GPU each phase waits for its kernels so the time lands where it was spent."""

    def __init__(self, device):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @contextlib.contextmanager
    def __call__(self, phase):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds[phase] += time.perf_counter() - start


class BenchmarkSteps:
    """benchmark.train's training step, Trainer.train_step, on a trainer built from the run plan."""
    name = "benchmark"

    def __init__(self, plan, utterances):
        self.loader = plan.build_loader(utterances, train=True)
        self.trainer = Trainer(plan)
        self.trainer.training_model.train()

    def batches(self, index_batches):
        return iter(self.loader.batches(index_batches))

    @staticmethod
    def size(batch):
        return batch.features.shape[0]

    def step(self, batch, phase=no_phase):
        self.trainer.train_step(batch, phase=phase)   # the training loop reads nothing of it per step


class ReferenceSteps:
    """reference.train's training step: Training.loss -> backward -> optimizer_step."""
    name = "reference"

    def __init__(self, config, utterances, steps_per_epoch, device):
        self.config, self.utterances = config, utterances
        self.training = Training(config, ref_features.num_features(config.features, config.n_mels),
                                 steps_per_epoch, device)
        self.training.model.train()

    def batches(self, index_batches):
        dataset = SpeechDataset(self.utterances, self.config.features, self.config.n_mels)
        return iter(ref_make_loader(dataset, index_batches, self.config.workers()))

    @staticmethod
    def size(batch):
        return batch[0].shape[0]

    def step(self, batch, phase=no_phase):
        with phase("forward"):
            loss = self.training.loss(batch)
        with phase("backward"):
            self.training.backward(loss)
        with phase("optimizer"):
            if self.training.optimizer_step(loss.detach()):
                loss.item()


def timed_steps(runner, index_batches, warmup, device):
    """Run warm-up then timed steps on `index_batches`; returns (seconds, per-phase seconds, utterances)."""
    batches = runner.batches(index_batches)
    for _ in range(warmup):
        runner.step(next(batches))
    timer, utterances = PhaseTimer(device), 0
    start = time.perf_counter()
    for _ in tqdm(range(len(index_batches) - warmup), desc=f"{runner.name} timed steps", leave=False):
        with timer("data"):
            batch = next(batches)
        runner.step(batch, timer)
        utterances += runner.size(batch)
    return time.perf_counter() - start, timer.seconds, utterances


def profile_table(runner, index_batches, rows=12):
    batches = runner.batches(index_batches)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in index_batches:
            runner.step(next(batches))
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


def machine_line(device):
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (f"machine: {os.cpu_count()} cores, {name}, torch {torch.__version__}, device {device}, "
            f"{torch.get_num_threads()} threads; load average (1, 5, 15 min): {load}")


def throughput(args, bench_argv, ref_argv):
    bench_config = bench_config_module.parse_config(bench_argv)
    ref_config = ref_config_module.parse_config(ref_argv)
    utterances = read_manifests(bench_config.train_data_dir)
    if bench_config.max_duration:
        utterances = filter_by_duration(utterances, bench_config.max_duration)
    # Both train in this process on the same batches: the benchmark's plan for one process at the job's
    # global batch (the reference's --batch_size).
    plan = make_plan(replace(bench_config, batch_size=ref_config.batch_size), DistContext(), len(utterances))
    device = plan.device
    torch.set_num_threads(bench_config.num_threads or os.cpu_count() or 1)
    sampler = plan.build_sampler([u.duration for u in utterances])
    total = args.warmup_steps + args.steps
    index_batches = sampler.epoch_batches(2)[:total]
    if len(index_batches) < total:
        raise SystemExit(f"error: {len(utterances)} utterances make {len(index_batches)} batches, fewer than "
                         f"--warmup_steps + --steps = {total}")
    audio_seconds = sum(utterances[i].duration for b in index_batches[args.warmup_steps:] for i in b)
    print(machine_line(device), flush=True)
    print(f"data: {bench_config.train_data_dir}, {args.steps} timed steps of {plan.global_batch} utterances "
          f"({audio_seconds:.0f} s of audio) after {args.warmup_steps} warm-up steps", flush=True)
    best = {}
    for repeat in range(args.repeats):
        for make in (lambda: ReferenceSteps(ref_config, utterances, plan.steps_per_epoch, device),
                     lambda: BenchmarkSteps(plan, utterances)):
            runner = make()
            seconds, phases, count = timed_steps(runner, index_batches, args.warmup_steps, device)
            print(f"  repeat {repeat + 1} {runner.name}: {seconds:.1f} s, {count / seconds:.2f} utt/s", flush=True)
            if runner.name not in best or seconds < best[runner.name][0]:
                best[runner.name] = (seconds, phases, count)
            if args.torch_profiler and repeat == args.repeats - 1:
                extra = sampler.epoch_batches(3)[:args.torch_profiler]
                print(f"\n{runner.name}: busiest operators over {len(extra)} steps (torch.profiler, self CPU time)")
                print(profile_table(runner, extra), flush=True)
            del runner
    print_throughput(best, args.steps, audio_seconds)
    print(machine_line(device).split("; ")[1], "(at the end)")


def print_throughput(best, steps, audio_seconds):
    print(f"\n{'':10} {'utt/s':>7} {'audio s/s':>9} {'s/step':>7} " + " ".join(f"{p:>12}" for p in PHASES)
          + f" {'other':>7}")
    rates = {}
    for name in ("reference", "benchmark"):
        seconds, phases, count = best[name]
        rates[name] = (count / seconds, audio_seconds / seconds)
        shares = " ".join(f"{phases[p]:6.1f}s {100 * phases[p] / seconds:3.0f}%" for p in PHASES)
        print(f"{name:10} {rates[name][0]:7.2f} {rates[name][1]:9.1f} {seconds / steps:7.3f} {shares} "
              f"{seconds - sum(phases.values()):6.2f}s")
    print(f"ratio benchmark/reference: {rates['benchmark'][0] / rates['reference'][0]:.2f}x utterances/s, "
          f"{rates['benchmark'][1] / rates['reference'][1]:.2f}x audio seconds/s")


# ------------------------------------------------------------------------------------------ to target
def summarize_run(path):
    records, _ = read_log(path)
    region = timed_region(records)   # the one rule for which run_start/run_stop count
    first = {}
    for r in records:
        first.setdefault(r.key, r)
    starts = {r.metadata[Key.EPOCH_NUM]: r.time_ms for r in records if r.key == Key.EPOCH_START}
    stops = {r.metadata[Key.EPOCH_NUM]: r.time_ms for r in records if r.key == Key.EPOCH_STOP}
    epoch_seconds = sum((stops[n] - starts[n]) / 1000 for n in stops if n in starts)
    wers = [r.value for r in records if r.key == Key.EVAL_ACCURACY]
    if region.milliseconds is None:
        why = "; ".join(region.problems) or "no run_stop (crashed?)"
        return {"status": f"invalid log: {why}" if region.problems else why, "seconds": float("nan"),
                "epochs": len(wers), "wer": wers[-1] if wers else float("nan"), "utt_per_s": float("nan")}
    return {"status": region.status, "epochs": len(wers), "seconds": region.milliseconds / 1000,
            "wer": wers[-1] if wers else float("nan"),
            "utt_per_s": first[Key.TRAIN_SAMPLES].value * len(stops) / epoch_seconds if epoch_seconds else float("nan")}


def time_to_target(args, bench_argv, ref_argv):
    out = Path(args.output_dir) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=False)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    runs = {}
    launchers = {"reference": [sys.executable, "-m", "reference.train"],
                 "benchmark": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                               f"--nproc_per_node={args.nproc}", "-m", "benchmark.train"]}
    for name, argv in (("reference", ref_argv), ("benchmark", bench_argv)):
        log_file = out / f"{name}_mlperf_log.txt"
        command = [*launchers[name], *argv, f"--log_file={log_file}", f"--output_dir={out / name}"]
        print(f"\n$ {' '.join(command)}", flush=True)
        done = subprocess.run(command, env=env)
        if not log_file.exists():
            raise SystemExit(f"error: {name} exited with status {done.returncode} and wrote no log")
        runs[name] = summarize_run(log_file)
        print(f"{name}: exit status {done.returncode}, log {log_file}", flush=True)
    print(f"\n{'':10} {'time to target':>14} {'status':>8} {'epochs':>6} {'final WER':>9} {'epoch utt/s':>11}")
    for name, r in runs.items():
        print(f"{name:10} {r['seconds']:13.1f}s {r['status']:>8} {r['epochs']:6d} {r['wer']:9.4f} {r['utt_per_s']:11.2f}")
    ref, bench = runs["reference"], runs["benchmark"]
    both = ref["status"] == bench["status"] == "success"
    print(f"ratio benchmark/reference: time to target {bench['seconds'] / ref['seconds']:.2f}"
          f"{'' if both else ' (not both reached the target: run lengths, not times to target)'}, "
          f"epoch throughput {bench['utt_per_s'] / ref['utt_per_s']:.2f}x")


def main(argv=None):
    args, recipe = parse_args(argv)
    cpu = system_recipe("CPU")
    args.nproc = args.nproc or cpu.nproc
    bench_argv, ref_argv, bench_only = build_recipes(cpu.flags, recipe, args.nproc)
    print("recipe (benchmark): " + " ".join(bench_argv))
    print("benchmark-only flags (the reference is float32 with the torch DataLoader): "
          + (", ".join(f"--{n} {v}" for n, v in bench_only.items()) or "none"), flush=True)
    (time_to_target if args.time_to_target else throughput)(args, bench_argv, ref_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
