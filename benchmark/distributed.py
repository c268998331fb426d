"""torchrun environment -> process group: nccl on GPU, gloo on CPU; plain single process otherwise."""
from dataclasses import dataclass
from datetime import timedelta
import os

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def init_distributed(use_cuda, timeout_seconds=300):
    """Read RANK/WORLD_SIZE/LOCAL_RANK (set by torchrun) and join the process group when world > 1.

    The timeout bounds how long a collective waits for a dead peer, so a failed rank stops the run.
    """
    ctx = DistContext(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                      int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if ctx.distributed and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_seconds))
    return ctx


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor):
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
