"""torchrun environment -> process group: nccl on GPU, gloo on CPU; plain single process otherwise
(--process_group always: a group of one process too, so one GPU trains under DDP over NCCL).

Failure handling: every collective waits at most `timeout_seconds` for a missing peer and then raises
(gloo) or aborts the process (nccl: PyTorch's watchdog with TORCH_NCCL_ASYNC_ERROR_HANDLING, on by default),
so a rank that dies can never leave the others waiting forever. On one node torchrun notices the dead
worker sooner and sends SIGTERM to the rest; the training turns that into run_stop status aborted.
"""
from dataclasses import dataclass
from datetime import timedelta
import os
import sys

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


def context_from_environment(environ=os.environ):
    """RANK/LOCAL_RANK/WORLD_SIZE/LOCAL_WORLD_SIZE as torchrun sets them (a single process without them)."""
    return DistContext(int(environ.get("RANK", 0)), int(environ.get("LOCAL_RANK", 0)),
                       int(environ.get("WORLD_SIZE", 1)), int(environ.get("LOCAL_WORLD_SIZE", 1)))


def init_distributed(use_cuda, timeout_seconds=600, always=False):
    """Join the process group when torchrun started more than one process, or with `always` for one too.

    The timeout bounds how long a collective waits for a dead peer, so a failed rank stops the run. A single
    process that torchrun did not start (no MASTER_ADDR) gets a group of one over an in-process store.
    """
    ctx = context_from_environment()
    if (ctx.distributed or always) and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        backend, timeout = ("nccl" if use_cuda else "gloo"), timedelta(seconds=timeout_seconds)
        if ctx.world_size == 1 and "MASTER_ADDR" not in os.environ:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        else:
            dist.init_process_group(backend, timeout=timeout)
    return ctx


def backend_name():
    """The process group's backend ('nccl', 'gloo'), or None without a process group."""
    return str(dist.get_backend()) if is_initialized() else None


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def barrier():
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor):
    if is_initialized():
        dist.all_reduce(tensor)
    return tensor


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. a checkpoint only rank 0 can read: nodes needn't share disks)."""
    if not is_initialized():
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module):
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    DDP broadcasts buffers at the start of each training forward, but each rank then updates its own copy
    from its own batch; evaluating with rank 0's statistics everywhere makes the distributed WER that of
    the model rank 0 checkpoints.
    """
    if is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


# Whether this process destroyed a gloo group: its worker threads may outlive it (see exit_process).
_gloo_group_ended = False


def shutdown():
    global _gloo_group_ended
    if is_initialized():
        _gloo_group_ended |= backend_name() == "gloo"
        dist.destroy_process_group()


def exit_process(status):
    """Exit with `status`; after a gloo group, without the interpreter's finalization (os._exit).

    Why: under DDP something keeps the ProcessGroupGloo alive after destroy_process_group, so its worker
    threads ("pt_gloo_runloop") run on. One that drops the last reference to a finished collective while the
    interpreter finalizes needs the GIL to free the collective's Python tensors, is stopped by Python
    instead, and the process aborts: SIGABRT, "terminate called without an active exception" (gdb on the
    core: ~AsyncAllreduceWork -> decref_pyobject -> take_gil -> PyThread_exit_thread). Seen on the rank
    that exits right after the last evaluation's all-reduce, in 5 of 40 runs of the two-rank DDP test
    (torch 2.13 CPU; pytorch/pytorch PR #179291 describes the same finalization race). Everything this
    process writes is closed or flushed before this call (the MLPerf log by MLPerfLogger.close, checkpoints
    by their atomic rename), so skipping finalization loses nothing. NCCL groups exit as before.
    """
    if _gloo_group_ended:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
