"""A system's training recipe as run_and_time.sh resolves it, for the benchmark scripts.

Usage (from another script in measure/):
  from measure.system_recipe import system_recipe   # with the repository root on sys.path
  recipe = system_recipe("CPU")   # recipe.flags: {'rnn_type': 'lstm', ..., 'batch_size': '8'}; recipe.nproc: 2
  plan = recipe.plan()            # benchmark.plan's RunPlan of rank 0 of that job: plan.global_batch == 16

The recipe comes from `DRY_RUN=1 SYSTEM=<system> ./run_and_time.sh`, the launch command a real run would
execute, so these scripts measure config_<SYSTEM>.sh as it is instead of a copy that drifts from it. As
with run_and_time.sh, variables set in the environment override the config (`RNN_LAYERS=2`).
Per-run launcher flags (seed, log file, output folder, system name, GPU count) are left out and manifest
paths are made absolute; the flags are benchmark.train's, so --batch_size is per process (BATCH_SIZE) and
the run plan says what follows from them (global batch, steps per epoch, ...).
"""
from dataclasses import dataclass
import os
from pathlib import Path
import shlex
import subprocess

ROOT = Path(__file__).resolve().parent.parent
PER_RUN_FLAGS = {"seed", "log_file", "output_dir", "system", "num_gpus"}
MANIFEST_FLAGS = ("train_data_dir", "eval_data_dir")


@dataclass
class Recipe:
    flags: dict    # benchmark.train flag name -> value text, as the launch line has them
    nproc: int     # processes per node (NPROC)
    nnodes: int    # nodes (NNODES)

    def argv(self):
        return [f"--{name}={value}" for name, value in self.flags.items()]

    def context(self, rank=0):
        """The DistContext of one process of this job."""
        from benchmark.distributed import DistContext
        return DistContext(rank, rank % self.nproc, self.nproc * self.nnodes, self.nproc)

    def plan(self, argv=(), rank=0, num_train_utterances=None):
        """The run plan of process `rank`, with `argv` (benchmark.train flags) overriding the recipe's."""
        from benchmark.config import parse_config
        from benchmark.plan import make_plan
        return make_plan(parse_config([*self.argv(), *argv]), self.context(rank), num_train_utterances)


def split_flags(argv):
    """['--a', '1', '--b=2'] -> [('a', '1'), ('b', '2')]; every training flag takes one value."""
    pairs, i = [], 0
    while i < len(argv):
        flag = argv[i]
        if not flag.startswith("--"):
            raise SystemExit(f"error: expected a --flag, got {flag!r} (recipe flags come as --name value)")
        if "=" in flag:
            name, value = flag[2:].split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            name, value = flag[2:], argv[i + 1]
            i += 2
        else:
            raise SystemExit(f"error: {flag} needs a value")
        pairs.append((name, value))
    return pairs


def parse_launch_command(line):
    """One printed `torchrun ... -m benchmark.train --a=1 ...` line -> Recipe."""
    words = shlex.split(line)
    module = words.index("benchmark.train")
    launcher = dict(w[2:].split("=", 1) for w in words[1:module] if w.startswith("--") and "=" in w)
    flags = dict(split_flags(words[module + 1:]))
    nproc, nnodes = int(launcher.get("nproc_per_node", 1)), int(launcher.get("nnodes", 1))
    for name in MANIFEST_FLAGS:
        if name in flags:
            flags[name] = ",".join(str(ROOT / p) if not os.path.isabs(p) else p for p in flags[name].split(","))
    return Recipe({n: v for n, v in flags.items() if n not in PER_RUN_FLAGS}, nproc, nnodes)


def system_recipe(system="CPU"):
    """config_<system>.sh's recipe, read from run_and_time.sh's dry run; SystemExit with its error if it fails."""
    env = dict(os.environ, SYSTEM=system, DRY_RUN="1", NEXP="1")
    done = subprocess.run(["bash", str(ROOT / "run_and_time.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    commands = [line for line in done.stdout.splitlines() if " -m benchmark.train " in line]
    if done.returncode != 0 or len(commands) != 1:
        raise SystemExit(f"error: `SYSTEM={system} DRY_RUN=1 ./run_and_time.sh` did not print one launch command "
                         f"(exit status {done.returncode}):\n{done.stderr.strip()}")
    return parse_launch_command(commands[0])
