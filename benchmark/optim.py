"""Optimizers (a table), the learning-rate schedule, and their MLPerf hyperparameter keys.

`--optimizer` offers the names of OPTIMIZERS; each entry says which torch.optim class it builds, with
which keyword arguments, and which MLPerf keys it adds to the log header. torch is imported by the
builders only, so the table (and the flag choices made from it) loads without torch, as dry runs need.
"""
from dataclasses import dataclass
import math
from typing import Callable

from benchmark.mlperf_log import Key

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


@dataclass(frozen=True)
class OptimizerKind:
    name: str
    torch_class: str                        # name in torch.optim
    options: Callable[[object], dict]       # config -> constructor keyword arguments besides params and lr
    hyperparameters: Callable[[object], dict]   # config -> its own MLPerf keys and values


OPTIMIZERS = {o.name: o for o in (
    # Fused kernels (one launch for all tensors) exist for CPU and CUDA in current PyTorch.
    OptimizerKind("adamw", "AdamW",
                  lambda c: {"betas": ADAM_BETAS, "eps": ADAM_EPSILON, "weight_decay": c.weight_decay, "fused": True},
                  lambda c: {Key.OPT_ADAMW_BETA_1: ADAM_BETAS[0], Key.OPT_ADAMW_BETA_2: ADAM_BETAS[1],
                             Key.OPT_ADAMW_EPSILON: ADAM_EPSILON, Key.OPT_ADAMW_WEIGHT_DECAY: c.weight_decay}),
    OptimizerKind("sgd", "SGD",
                  lambda c: {"momentum": c.momentum, "weight_decay": c.weight_decay, "nesterov": True},
                  lambda c: {Key.OPT_MOMENTUM: c.momentum}),
)}


def optimizer_kind(name):
    if name not in OPTIMIZERS:
        raise ValueError(f"--optimizer {name!r}: unknown; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def build_optimizer(config, model):
    import torch
    kind = optimizer_kind(config.optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    return getattr(torch.optim, kind.torch_class)(params, lr=config.learning_rate, **kind.options(config))


def schedule_steps(config, steps_per_epoch):
    """Optimizer steps the schedule spans: --schedule_epochs (or --max_epochs) epochs."""
    return steps_per_epoch * (config.schedule_epochs or config.max_epochs)


def warmup_steps(config, total_steps):
    return int(config.warmup_fraction * total_steps)


def build_scheduler(config, optimizer, total_steps):
    """Per-step multiplier: linear warm-up, then cosine decay to 0 over total_steps (onecycle) or flat."""
    import torch
    warmup = warmup_steps(config, total_steps)

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_hyperparameters(config, total_steps):
    """The MLPerf hyperparameter keys of the log header, for a schedule of total_steps steps."""
    keys = {Key.OPT_NAME: config.optimizer, Key.OPT_BASE_LR: config.learning_rate,
            Key.OPT_WEIGHT_DECAY: config.weight_decay, Key.OPT_GRADIENT_CLIP_NORM: config.grad_clip_norm,
            Key.OPT_LR_WARMUP_STEPS: warmup_steps(config, total_steps),
            Key.OPT_LR_TRAINING_STEPS: total_steps, Key.OPT_LR_SCHEDULE: config.lr_schedule}
    return keys | optimizer_kind(config.optimizer).hyperparameters(config)
