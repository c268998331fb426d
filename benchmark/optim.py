"""Optimizer and learning-rate schedule from the config, and their MLPerf hyperparameter keys."""
import math

import torch
from mlperf_logging.mllog import constants as C

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


def build_optimizer(config, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        # Fused kernels (one launch for all tensors) exist for CPU and CUDA in current PyTorch.
        return torch.optim.AdamW(params, lr=config.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPSILON,
                                 weight_decay=config.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=True)


def warmup_steps(config, total_steps):
    return int(config.warmup_fraction * total_steps)


def build_scheduler(config, optimizer, total_steps):
    """Per-step multiplier: linear warm-up, then cosine decay to 0 over total_steps (onecycle) or flat."""
    warmup = warmup_steps(config, total_steps)

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_hyperparameters(config, steps_per_epoch):
    total_steps = steps_per_epoch * (config.schedule_epochs or config.max_epochs)
    keys = {C.OPT_NAME: config.optimizer, C.OPT_BASE_LR: config.learning_rate,
            C.OPT_WEIGHT_DECAY: config.weight_decay, C.OPT_GRADIENT_CLIP_NORM: config.grad_clip_norm,
            C.OPT_LR_WARMUP_STEPS: warmup_steps(config, total_steps),
            C.OPT_LR_TRAINING_STEPS: total_steps, "opt_lr_schedule": config.lr_schedule}
    if config.optimizer == "adamw":
        keys |= {C.OPT_ADAMW_BETA_1: ADAM_BETAS[0], C.OPT_ADAMW_BETA_2: ADAM_BETAS[1],
                 C.OPT_ADAMW_EPSILON: ADAM_EPSILON, C.OPT_ADAMW_WEIGHT_DECAY: config.weight_decay}
    else:
        keys["opt_momentum"] = config.momentum
    return keys
