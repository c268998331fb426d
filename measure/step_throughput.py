"""Training-step throughput on the CPU, in one run: fp32 vs bf16 autocast, 1 vs 2 processes (DDP, gloo),
recurrent implementations (--rnn_impl), convolution memory layouts (--conv_layout), and the achieved FLOP/s as a fraction of this machine's measured
matmul peak.

Usage:
  nice -n 10 python measure/step_throughput.py                 # config_CPU.sh's model, batch and optimizer
  python measure/step_throughput.py --steps 6 --batch_size 32 --seconds 8 --amps off,bf16 --procs 1,2
  python measure/step_throughput.py --amps off --procs 2 --rnn_impls padded,packed   # implementations, same run
  python measure/step_throughput.py --amps off,bf16 --procs 2 --conv_layouts contiguous,channels_last --repeats 3
  python measure/step_throughput.py --help

What is timed: benchmark.trainer.Trainer.train_step, the training step of benchmark.train (forward with
autocast, fp32 CTC loss, backward, DDP gradient all-reduce, gradient clipping, finiteness check, fused
AdamW, schedule), built from the run plan of config_CPU.sh's recipe with the model flags below, on a fixed
random batch of `--batch_size` utterances of `--seconds` seconds (--length_spread: of lengths spread below
it) per process, after `--warmup` untimed steps; no data loading (see measure/featurize_throughput.py for
that). With P processes each gets cores/P threads, every process keeps its batch size (as NPROC does in
config_CPU.sh), and throughput counts the utterances of all ranks.
Peak: the best of a few 2048^3 torch.matmul in fp32 and in bf16 using every core. Model FLOPs per step:
benchmark.flops (the count the training's progress lines and train_throughput events use; conv, gate and
fully connected matmuls, forward and backward). Configurations run one after another, each in fresh
processes; shared machines make every figure noisy: run it nice'd, compare ratios from one run.
"""
import argparse
from dataclasses import replace
import itertools
import json
import os
from pathlib import Path
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GOMP_SPINCOUNT", "20000")   # bounded OpenMP spin, as scripts/threads.sh

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from benchmark.config import CONV_LAYOUTS, RNN_IMPLS, parse_config  # noqa: E402
from benchmark.data.batch import Batch  # noqa: E402
from benchmark.distributed import DistContext  # noqa: E402
from benchmark.flops import StepCosts, matmul_peak  # noqa: E402
from benchmark.plan import AUTOCAST_DTYPES, make_plan  # noqa: E402
from benchmark.text import NUM_CLASSES  # noqa: E402
from benchmark.trainer import Trainer  # noqa: E402
from measure.system_recipe import system_recipe  # noqa: E402

FRAMES_PER_SECOND = 100          # 10 ms hop
CHARACTERS_PER_SECOND = 14       # about LibriSpeech's speaking rate
MODEL_FLAGS = ("rnn_type", "rnn_hidden_size", "rnn_layers", "conv_channels", "time_stride", "features", "n_mels")


def parse_args(argv=None):
    recipe = system_recipe("CPU")   # config_CPU.sh, as run_and_time.sh resolves it
    cpu = parse_config(recipe.argv())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (oneDNN primitive caches)")
    parser.add_argument("--batch_size", type=int, default=cpu.batch_size,
                        help="utterances per process per step (config_CPU.sh's BATCH_SIZE)")
    parser.add_argument("--seconds", type=float, default=3.6, help="duration of the longest utterance")
    parser.add_argument("--length_spread", type=float, default=0.0,
                        help="utterances evenly spread from (1 - SPREAD) x --seconds to --seconds (0: all equal; a "
                             "length-sorted training batch has a few percent; packing costs more when lengths differ)")
    parser.add_argument("--amps", default="off,bf16", help="autocast modes to compare (off = fp32)")
    parser.add_argument("--procs", default="1,2", help="process counts to compare (DDP over gloo when > 1)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all configurations (interleaved); ratios use each one's median rate")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="cores shared by the processes")
    parser.add_argument("--rnn_impls", default=cpu.rnn_impl,
                        help=f"recurrent implementations to compare (--rnn_impl: {'|'.join(RNN_IMPLS)})")
    parser.add_argument("--conv_layouts", default=cpu.conv_layout,
                        help=f"convolution memory layouts to compare (--conv_layout: auto|{'|'.join(CONV_LAYOUTS)})")
    for name in MODEL_FLAGS:
        parser.add_argument(f"--{name}", type=type(getattr(cpu, name)), default=getattr(cpu, name),
                            help="model flag as in benchmark.train (config_CPU.sh's)")
    args = parser.parse_args(argv)
    args.recipe = cpu   # config_CPU.sh's optimizer, learning rate and the rest
    args.amps = args.amps.split(",")
    args.procs = [int(p) for p in args.procs.split(",")]
    args.rnn_impls = list(dict.fromkeys(args.rnn_impls.split(",")))
    args.conv_layouts = list(dict.fromkeys(args.conv_layouts.split(",")))
    for flag, values, choices in (("--rnn_impls", args.rnn_impls, RNN_IMPLS),
                                  ("--conv_layouts", args.conv_layouts, ("auto", *CONV_LAYOUTS))):
        for value in values:
            if value not in choices:
                parser.error(f"{flag}: {value!r} is not one of {','.join(choices)}")
    for amp in args.amps:
        if amp not in AUTOCAST_DTYPES or amp == "fp16":
            parser.error(f"--amps: {amp!r} is not one of off,bf16 (fp16 is a GPU mode)")
    if not 0 <= args.length_spread < 1:
        parser.error("--length_spread must be in [0, 1)")
    if args.steps < 1 or args.batch_size < 1 or args.seconds <= 0 or min(args.procs) < 1 or args.repeats < 1:
        parser.error("--steps, --batch_size, --seconds, --procs and --repeats must be positive")
    return args


def step_plan(args, amp="off", rank=0, world_size=1, rnn_impl="padded", conv_layout="auto"):
    """The run plan of one process: config_CPU.sh's recipe with this script's model, batch and amp flags,
    on the CPU, with this process's share of --cores; the schedule spans the steps this script takes."""
    config = replace(args.recipe, **{name: getattr(args, name) for name in MODEL_FLAGS}, batch_size=args.batch_size,
                     amp=amp, num_gpus=0, num_threads=max(1, args.cores // world_size), rnn_impl=rnn_impl,
                     conv_layout=conv_layout)
    utterances = world_size * args.batch_size * (args.warmup + args.steps)
    return make_plan(config, DistContext(rank, rank, world_size, world_size), num_train_utterances=utterances)


def utterance_frames(args):
    """Feature frames of each utterance of a batch: the longest --seconds, the rest spread below it."""
    longest = int(args.seconds * FRAMES_PER_SECOND)
    return torch.linspace(longest, longest * (1 - args.length_spread), args.batch_size).round().long()


def random_batch(args, spec, seed):
    generator = torch.Generator().manual_seed(seed)
    lengths, chars = utterance_frames(args), int(args.seconds * (1 - args.length_spread) * CHARACTERS_PER_SECOND)
    b = args.batch_size
    features = torch.randn(b, spec.num_features, int(lengths[0]), generator=generator)
    features *= (torch.arange(features.shape[2]) < lengths[:, None])[:, None, :]
    return Batch(features, lengths, torch.randint(1, NUM_CLASSES, (b, chars), generator=generator),
                 torch.full((b,), chars, dtype=torch.int64))


def step_flops(args):
    """Model FLOPs of one training step of one process (forward + backward, each utterance at its length)."""
    costs = StepCosts(step_plan(args).model_args)
    useful, _ = costs.batch_flops(utterance_frames(args), args.seconds * FRAMES_PER_SECOND)
    return float(useful)


def worker(rank, args, amp, world_size, rnn_impl, conv_layout, port, result_file):
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    plan = step_plan(args, amp, rank, world_size, rnn_impl, conv_layout)
    torch.set_num_threads(plan.threads)
    trainer = Trainer(plan)
    batch = random_batch(args, plan.feature_spec, seed=rank)
    times = []
    for step in range(args.warmup + args.steps):
        if world_size > 1:
            dist.barrier()
        start = time.perf_counter()
        result = trainer.train_step(batch)
        if world_size > 1:
            dist.barrier()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if rank == 0:
        Path(result_file).write_text(json.dumps({"seconds_per_step": sorted(times)[len(times) // 2],
                                                 "threads": plan.threads, "loss": result.loss.item()}))
    if world_size > 1:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(args, amp, world_size, rnn_impl, conv_layout):
    with tempfile.TemporaryDirectory() as folder:
        result_file = os.path.join(folder, "result.json")
        mp.start_processes(worker, args=(args, amp, world_size, rnn_impl, conv_layout, free_port(), result_file),
                           nprocs=world_size, start_method="spawn")
        return json.loads(Path(result_file).read_text())


def main(argv=None):
    args = parse_args(argv)
    print(f"# {args.cores} cores; model {args.rnn_type} {args.rnn_layers}x{args.rnn_hidden_size}, conv "
          f"{args.conv_channels}, stride {args.time_stride}, {args.features} {args.n_mels}; per process "
          f"{args.batch_size} utterances x {args.seconds:g} s"
          + (f" to {args.seconds * (1 - args.length_spread):.3g} s" if args.length_spread else "")
          + f"; median of {args.steps} steps after {args.warmup}",
          flush=True)
    dtypes = {amp: AUTOCAST_DTYPES[amp] or torch.float32 for amp in args.amps}
    torch.set_num_threads(args.cores)
    peaks = {amp: matmul_peak("cpu", dtypes[amp], n=2048) for amp in args.amps}
    for amp, peak in peaks.items():
        print(f"matmul peak {str(dtypes[amp]).removeprefix('torch.'):9s} {peak / 1e9:8.1f} GFLOP/s", flush=True)
    flops = step_flops(args)
    mean_seconds = float(utterance_frames(args).double().mean()) / FRAMES_PER_SECOND
    print(f"model FLOPs per step and process: {flops / 1e9:.1f} GFLOP (forward + backward)", flush=True)
    print(f"{'amp':5s} {'procs':>5s} {'rnn_impl':>8s} {'conv_layout':>13s} {'thr/proc':>8s} {'s/step':>7s} "
          f"{'utt/s':>7s} {'audio s/s':>9s} {'GFLOP/s':>8s} {'of peak':>7s}", flush=True)
    dimensions = {"amp": args.amps, "procs": args.procs, "rnn_impl": args.rnn_impls, "conv_layout": args.conv_layouts}
    measured = {}   # (amp, procs, rnn_impl, conv_layout) -> utterances/s of each round
    for _ in range(args.repeats):
        for amp, procs, impl, layout in itertools.product(*dimensions.values()):
            result = measure(args, amp, procs, impl, layout)
            seconds = result["seconds_per_step"]
            utterances = procs * args.batch_size / seconds
            achieved = procs * flops / seconds
            measured.setdefault((amp, procs, impl, layout), []).append(utterances)
            print(f"{amp:5s} {procs:5d} {impl:>8s} {layout:>13s} {result['threads']:8d} {seconds:7.3f} "
                  f"{utterances:7.2f} {utterances * mean_seconds:9.1f} {achieved / 1e9:8.1f} "
                  f"{100 * achieved / peaks[amp]:6.1f}%", flush=True)
    print_ratios(dimensions, {key: statistics.median(values) for key, values in measured.items()})


def print_ratios(dimensions, rates):
    """Each value of a dimension against its first value, at every combination of the others' values."""
    names = list(dimensions)
    for axis, name in enumerate(names):
        base, *others = dimensions[name]
        rest = [dimensions[n] for n in names if n != name]
        for value in others:
            for fixed in itertools.product(*rest):
                key, base_key = list(fixed), list(fixed)
                key.insert(axis, value)
                base_key.insert(axis, base)
                where = ", ".join(f"{n} {v}" for n, v in zip((n for n in names if n != name), fixed))
                print(f"{name} {value} / {base}, {where}: {rates[tuple(key)] / rates[tuple(base_key)]:.2f}x")


if __name__ == "__main__":
    main()
