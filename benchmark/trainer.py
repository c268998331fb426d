"""The training step, the epoch loop and the evaluation of one run, built from its plan.

    trainer = Trainer(plan)                                    # model, optimizer, schedule, scaler
    result = trainer.train_step(batch)                         # the one training step everybody calls
    stats = trainer.train_epoch(epoch, loader.batches(sampler.epoch_batches(epoch)))
    errors, words = Evaluator(plan, eval_utterances).counts(trainer.model)

The step: forward under autocast, CTC in fp32, backward (scaled for fp16), unscale, clip, a finiteness
check agreed by every rank, then the optimizer step unless loss or gradients are not finite, the scaler
update and the schedule step. A skipped step is counted; --max_nonfinite_steps skipped in a row raise
NonFiniteError (fp16 overflows are the GradScaler's business until its scale falls below 1).
"""
import contextlib
import math
import sys
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F

from benchmark import checkpoint, distributed
from benchmark.faults import FaultInjector
from benchmark.metrics import WordErrorCounter
from benchmark.text import greedy_collapse


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with non-finite loss or gradients."""


def ctc_loss(logits, output_lengths, batch):
    """CTC in fp32 whatever the autocast dtype, summed over the batch and divided by its size."""
    log_probs = F.log_softmax(logits.float(), dim=2)
    loss = F.ctc_loss(log_probs, batch.targets, output_lengths, batch.target_lengths,
                      blank=0, reduction="sum", zero_infinity=True)
    return loss / batch.features.shape[0]


class StepResult(NamedTuple):
    loss: torch.Tensor     # detached, on the training device
    loss_ok: bool          # finite on every rank
    grads_ok: bool

    @property
    def applied(self):
        return self.loss_ok and self.grads_ok


def _no_phase(name):
    return contextlib.nullcontext()


class Trainer:
    """Model (and its DDP wrapper), optimizer, schedule and scaler of one run, and its counters."""

    def __init__(self, plan, faults=None):
        self.plan, self.config, self.ctx = plan, plan.config, plan.ctx
        self.faults = faults or FaultInjector(plan.ctx.rank, environ={})
        self.model = plan.build_model()
        self.training_model = plan.wrap_for_training(self.model)   # what the step calls: DDP or the model
        self.optimizer = plan.build_optimizer(self.model)
        self.scheduler = plan.build_scheduler(self.optimizer)
        self.scaler = plan.build_scaler()
        self.start_epoch = 1
        self.consecutive_nonfinite = 0
        self.nonfinite_skipped = 0

    def state(self, epoch):
        return {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": checkpoint.rng_state(), "config": vars(self.config), "world_size": self.ctx.world_size,
                "nonfinite_skipped": self.nonfinite_skipped, "consecutive_nonfinite": self.consecutive_nonfinite}

    def load(self, state):
        """Continue from a checkpoint: the sampler derives epoch e's order from (seed, e), so the epoch
        number, weights, optimizer, schedule, scaler, counters and RNG states are all a resume needs."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.nonfinite_skipped = state.get("nonfinite_skipped", 0)
        self.consecutive_nonfinite = state.get("consecutive_nonfinite", 0)
        checkpoint.set_rng_state(state["rng"])
        self.start_epoch = state["epoch"] + 1

    def _finite_flags(self, loss):
        """(loss finite, gradients finite) on every rank, so that all ranks skip a step together."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm or math.inf)
        flags = torch.stack([torch.isfinite(loss), torch.isfinite(norm)]).float()
        distributed.all_reduce_sum(flags)
        loss_ok, grads_ok = (flags == self.ctx.world_size).tolist()
        return loss_ok, grads_ok

    def train_step(self, batch, global_step=0, phase=_no_phase):
        """One optimizer step on `batch`; returns StepResult. `global_step` (from 1) is for fault injection;
        `phase(name)` is a context manager around each part (forward, backward, optimizer) for timing."""
        with phase("forward"):
            with self.plan.autocast():
                logits, output_lengths = self.training_model(batch.features, batch.feature_lengths)
            loss = self.faults.loss(ctc_loss(logits, output_lengths, batch), global_step)
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        with phase("optimizer"):
            self.scaler.unscale_(self.optimizer)
            loss_ok, grads_ok = self._finite_flags(loss.detach())
            if loss_ok and grads_ok:
                self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        return StepResult(loss.detach(), loss_ok, grads_ok)

    def _count_skip(self, result, epoch, step):
        self.nonfinite_skipped += 1
        # fp16: an overflow with a finite loss is the GradScaler's business (it halves the scale and the
        # step is skipped); it only counts as a fault once the scale has fallen below 1.
        overflow = self.scaler.is_enabled() and result.loss_ok and self.scaler.get_scale() >= 1.0
        self.consecutive_nonfinite = 0 if overflow else self.consecutive_nonfinite + 1
        if self.consecutive_nonfinite >= self.config.max_nonfinite_steps:
            raise NonFiniteError(f"{self.consecutive_nonfinite} consecutive steps with non-finite loss or "
                                 f"gradients (epoch {epoch}, step {step}; --max_nonfinite_steps "
                                 f"{self.config.max_nonfinite_steps})")

    def train_epoch(self, epoch, batches):
        """Train on `batches` (this rank's, in the sampler's order); returns the epoch's statistics."""
        self.training_model.train()
        config, steps_per_epoch, start = self.config, self.plan.steps_per_epoch, time.perf_counter()
        data_wait, loss_sum, steps, finite_steps, samples = 0.0, 0.0, 0, 0, 0
        batches = iter(batches)
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            data_wait += time.perf_counter() - wait_start
            if batch is None:
                break
            steps += 1
            global_step = (epoch - 1) * steps_per_epoch + steps
            self.faults.before_step(global_step, epoch)
            result = self.train_step(batch, global_step)
            if result.applied:
                self.consecutive_nonfinite = 0
                loss_sum += result.loss.item()
                finite_steps += 1
            else:
                print(f"warning: epoch {epoch} step {steps}: non-finite "
                      f"{'gradients' if result.loss_ok else 'loss'}, step skipped", file=sys.stderr, flush=True)
                self._count_skip(result, epoch, steps)
            samples += batch.features.shape[0]
            if self.ctx.is_main and config.log_every and steps % config.log_every == 0:
                elapsed = time.perf_counter() - start
                print(f"epoch {epoch} step {steps}/{steps_per_epoch} loss {result.loss.item():.3f} "
                      f"lr {self.scheduler.get_last_lr()[0]:.2e} {samples * self.ctx.world_size / elapsed:.1f} utt/s "
                      f"data wait {100 * data_wait / elapsed:.1f}%", flush=True)
        elapsed = time.perf_counter() - start
        return {"loss": loss_sum / finite_steps if finite_steps else float("nan"), "seconds": elapsed,
                "data_wait": data_wait, "samples": samples * self.ctx.world_size, "skipped": steps - finite_steps}


class Evaluator:
    """Corpus word errors of a model on one evaluation set, each rank taking its share of the batches."""

    def __init__(self, plan, utterances):
        self.plan, self.utterances = plan, utterances
        self.index_batches = plan.eval_batches([u.duration for u in utterances])
        self.loader = plan.build_loader(utterances, train=False)

    @torch.no_grad()
    def counts(self, model):
        """(errors, words) over every rank's share, with rank 0's batch-norm statistics everywhere."""
        distributed.broadcast_buffers(model)
        model.eval()
        counter = WordErrorCounter()
        for indices, batch in zip(self.index_batches, self.loader.batches(self.index_batches)):
            with self.plan.autocast():
                logits, output_lengths = model(batch.features, batch.feature_lengths)
            best = logits.argmax(dim=2).cpu()  # [T, B]
            hypotheses = [greedy_collapse(best[:n, b].tolist()) for b, n in enumerate(output_lengths.tolist())]
            counter.update([self.utterances[i].transcript for i in indices], hypotheses)
        return counter.totals(self.plan.device)


def wer_of(errors, words):
    return errors / words if words else float("nan")
