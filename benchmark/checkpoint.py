"""Atomic checkpoints at epoch ends, and resume from the latest one.

A checkpoint holds everything the next epoch depends on: model, optimizer, LR schedule, grad scaler,
the epoch just finished and the RNG states (the sampler derives its order from seed and epoch, so
it needs no state of its own). Written to a temporary file, fsynced, then renamed: a run killed
while saving leaves the previous checkpoint intact.
"""
import os
from pathlib import Path
import random
import re
import tempfile

import numpy as np
import torch

_NAME = re.compile(r"^checkpoint_epoch(\d+)\.pt$")


def checkpoint_path(model_dir, epoch):
    return Path(model_dir) / f"checkpoint_epoch{epoch:04d}.pt"


def latest_checkpoint(model_dir):
    """Path of the checkpoint with the highest epoch in model_dir, or None."""
    if not model_dir or not Path(model_dir).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(model_dir).iterdir() if (m := _NAME.match(p.name))]
    return max(found)[1] if found else None


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per visible GPU; a resume may see fewer GPUs per process (CUDA_VISIBLE_DEVICES).
        for device, device_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


def save_checkpoint(model_dir, epoch, state, keep=2):
    """Write state atomically as checkpoint_epochNNNN.pt and keep only the newest `keep` files."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(model_dir, epoch)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(model_dir, os.O_RDONLY)   # make the rename itself survive a power cut
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    old = sorted(p for p in model_dir.iterdir() if _NAME.match(p.name))[:-keep]
    # Temporary files of saves that were killed half-way (kill -9, pre-emption) are garbage now.
    stale = [p for p in model_dir.glob("checkpoint_epoch*.pt.*.tmp")]
    for p in old + stale:
        p.unlink(missing_ok=True)
    return target


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read; the message names it."""


def load_checkpoint(path, map_location="cpu"):
    # Our own files: they hold optimizer and RNG state objects, so weights_only loading can't read them.
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error}); "
                              "move it away to resume from the one before") from error
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (no model/epoch)")
    return state
