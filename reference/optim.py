"""Optimizer and learning-rate schedule: AdamW (or Nesterov SGD) and linear warm-up then cosine decay.

The learning rate at step s (0-based) of `total` steps, with w = int(warmup_fraction * total):
    s < w:  peak * (s + 1) / w
    else:   peak * (1 + cos(pi * min((s - w) / max(total - w, 1), 1))) / 2     ('onecycle')
            peak                                                                ('constant')
"""
import math

import torch

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


def make_optimizer(parameters, name, learning_rate, weight_decay, momentum=0.9):
    if name == "adamw":
        # The default implementation (a loop over parameters), no fused kernels.
        return torch.optim.AdamW(parameters, lr=learning_rate, betas=ADAM_BETAS, eps=ADAM_EPSILON,
                                 weight_decay=weight_decay, foreach=False, fused=False)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum, weight_decay=weight_decay,
                               nesterov=True, foreach=False)
    raise ValueError(f"unknown optimizer {name!r}")


def learning_rate_factor(step, total_steps, warmup_fraction, schedule="onecycle"):
    """Multiplier of the peak learning rate for 0-based `step` (see the module docstring)."""
    warmup = int(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    return (1.0 + math.cos(math.pi * progress)) / 2.0


def set_learning_rate(optimizer, peak, factor):
    for group in optimizer.param_groups:
        group["lr"] = peak * factor
