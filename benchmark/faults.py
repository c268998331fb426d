"""Fault injection for the reliability tests: environment variables make a training step fail on purpose.

Steps are counted globally from 1 across epochs (epoch e, step s of an epoch with n steps is
(e - 1) * n + s). Each variable holds a comma-separated list of `STEP` (every rank) or `RANK:STEP`:

  DS2_INJECT_NONFINITE="3,4"   the loss of global steps 3 and 4 becomes NaN (so do its gradients)
  DS2_INJECT_EXIT="1:5"        rank 1 kills itself with SIGKILL at the start of global step 5 (a crash:
                               no cleanup, no log line, exactly like `kill -9`)
  DS2_INJECT_STALL="6"         the process prints a line (stderr) and sleeps (an hour) at the start of global step 6,
                               so a test can kill it at a known point in the middle of an epoch

Unset or empty variables inject nothing; a malformed value is a configuration error naming the variable.
Nothing here runs unless one of these variables is set, and they are never set by the launch scripts.
"""
import os
import signal
import sys
import time

VARIABLES = ("DS2_INJECT_NONFINITE", "DS2_INJECT_EXIT", "DS2_INJECT_STALL")


def parse_steps(name, text, rank):
    """`STEP` / `RANK:STEP` items -> the set of global steps that apply to `rank`."""
    steps = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            who, _, step = item.rpartition(":")
            if who and int(who) != rank:
                continue
            step = int(step)
        except ValueError:
            raise ValueError(f"{name}={text!r}: expected STEP or RANK:STEP items, got {item!r}") from None
        if step < 1:
            raise ValueError(f"{name}={text!r}: steps count from 1, got {step}")
        steps.add(step)
    return steps


class FaultInjector:
    def __init__(self, rank=0, environ=os.environ):
        self.rank = rank
        self.nonfinite, self.exit, self.stall = (parse_steps(name, environ.get(name, ""), rank)
                                                 for name in VARIABLES)
        self.active = bool(self.nonfinite or self.exit or self.stall)

    def before_step(self, global_step, epoch):
        if global_step in self.exit:
            print(f"fault injection: rank {self.rank} killed at epoch {epoch}, global step {global_step}",
                  file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if global_step in self.stall:
            print(f"fault injection: rank {self.rank} stalled at epoch {epoch}, global step {global_step}",
                  file=sys.stderr, flush=True)
            time.sleep(3600)

    def loss(self, loss, global_step):
        """The loss, made NaN at injected steps (multiplying keeps the graph, so gradients are NaN too)."""
        return loss * float("nan") if global_step in self.nonfinite else loss
