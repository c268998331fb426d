"""The training step, the epoch loop and the evaluation of one run, built from its plan.

    trainer = Trainer(plan, matmul_peak=flops.measure_matmul_peak(plan))   # model, optimizer, schedule, scaler
    result = trainer.train_step(batch)                         # the one training step everybody calls
    stats = trainer.train_epoch(epoch, loader.batches(sampler.epoch_batches(epoch)))
    errors, words = Evaluator(plan, eval_utterances).counts(trainer.model)

The step: forward under autocast, CTC in fp32, backward (scaled for fp16), unscale, clip, a finiteness
check agreed by every rank, then the optimizer step unless loss or gradients are not finite, the scaler
update and the schedule step. A skipped step is counted; --max_nonfinite_steps skipped in a row raise
NonFiniteError (fp16 overflows are the GradScaler's business until its scale falls below 1).

No host synchronisation per step. The finiteness check is a device tensor (all-reduced over the ranks),
handed to the fused AdamW as its `found_inf`, the mechanism GradScaler uses: the kernel skips the update
and the step count on the device. The losses are summed on the device. The host reads the steps'
statuses at check points only (every --max_nonfinite_steps steps, every progress line and the epoch end,
the same steps on every rank), then warns about and counts the skipped steps in step order, exactly as an
immediate check would: the counts, warnings and the NonFiniteError's epoch and step are the same.
Latency: a run that reached the limit stops up to --max_nonfinite_steps - 1 steps later (those steps
train on; no checkpoint of that epoch is written). An optimizer that cannot skip on the device (SGD, not
fused) reads the status on the host at every step instead. `.item()` happens where something is printed.
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
from benchmark.flops import FRAMES_PER_SECOND, StepCosts, Throughput, peak_dtype
from benchmark.metrics import WordErrorCounter
from benchmark.text import greedy_collapse

# A step's status (StepResult.status): applied, or why it was skipped. OVERFLOW: fp16 gradients overflowed
# with a finite loss while the GradScaler's scale (just halved) is still >= 1, its business, not a fault.
APPLIED, NONFINITE_LOSS, NONFINITE_GRADS, OVERFLOW = 0, 1, 2, 3


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
    status: torch.Tensor   # int64 scalar on the training device: APPLIED, NONFINITE_LOSS, NONFINITE_GRADS, OVERFLOW

    @property
    def applied(self):
        """Whether the step was applied (reads the device: a synchronisation)."""
        return int(self.status) == APPLIED


class NonFiniteSteps:
    """Skipped steps, learned from their statuses on the device at check points and counted in step order."""

    def __init__(self, limit):
        self.limit = limit
        self.skipped = self.consecutive = 0
        self.pending = []     # (epoch, step, status tensor) of the steps not read yet
        self.error = None     # the NonFiniteError of the step that reached the limit

    def record(self, epoch, step, status):
        self.pending.append((epoch, step, status))

    def read(self):
        """Read the pending statuses (one synchronisation): warn about and count each skipped step."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for (epoch, step, _), status in zip(pending, torch.stack([s for _, _, s in pending]).tolist()):
            if self.error is not None:   # steps after the limit was reached are not counted
                return
            if status == APPLIED:
                self.consecutive = 0
                continue
            print(f"warning: epoch {epoch} step {step}: non-finite "
                  f"{'loss' if status == NONFINITE_LOSS else 'gradients'}, step skipped", file=sys.stderr, flush=True)
            self.skipped += 1
            self.consecutive = 0 if status == OVERFLOW else self.consecutive + 1
            if self.consecutive >= self.limit:
                self.error = NonFiniteError(f"{self.consecutive} consecutive steps with non-finite loss or "
                                            f"gradients (epoch {epoch}, step {step}; --max_nonfinite_steps "
                                            f"{self.limit})")

    def check(self):
        """read(), then raise NonFiniteError if --max_nonfinite_steps steps in a row were skipped."""
        self.read()
        if self.error is not None:
            raise self.error


def _no_phase(name):
    return contextlib.nullcontext()


class Trainer:
    """Model (and its DDP wrapper), optimizer, schedule and scaler of one run, and its counters.

    `matmul_peak`: (FLOP/s, precision label) of the job's matmul peak (benchmark.flops.measure_matmul_peak),
    which the progress lines and epoch statistics compare the model's FLOP/s with; None: not compared."""

    def __init__(self, plan, faults=None, matmul_peak=None):
        self.plan, self.config, self.ctx = plan, plan.config, plan.ctx
        self.faults = faults or FaultInjector(plan.ctx.rank, environ={})
        self.model = plan.build_model()
        self.training_model = plan.wrap_for_training(self.model)   # what the step calls: DDP or the model
        self.optimizer = plan.build_optimizer(self.model)
        self.scheduler = plan.build_scheduler(self.optimizer)
        self.scaler = plan.build_scaler()
        # Fused AdamW skips a step on the device when given found_inf (GradScaler's contract with it).
        self.skips_on_device = getattr(self.optimizer, "_step_supports_amp_scaling", False)
        self.costs = StepCosts(plan.model_args)
        self.peak_flops, self.precision = matmul_peak or (None, peak_dtype(plan.device, plan.autocast_dtype)[1])
        self.start_epoch = 1
        self.nonfinite = NonFiniteSteps(self.config.max_nonfinite_steps)

    @property
    def nonfinite_skipped(self):
        """Steps skipped so far (reads the steps not checked yet; the last checked count if the device fails)."""
        try:
            self.nonfinite.read()
        except RuntimeError:
            pass
        return self.nonfinite.skipped

    def state(self, epoch):
        return {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": checkpoint.rng_state(), "config": vars(self.config), "world_size": self.ctx.world_size,
                "nonfinite_skipped": self.nonfinite_skipped, "consecutive_nonfinite": self.nonfinite.consecutive}

    def load(self, state):
        """Continue from a checkpoint: the sampler derives epoch e's order from (seed, e), so the epoch
        number, weights, optimizer, schedule, scaler, counters and RNG states are all a resume needs."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.nonfinite.skipped = state.get("nonfinite_skipped", 0)
        self.nonfinite.consecutive = state.get("consecutive_nonfinite", 0)
        checkpoint.set_rng_state(state["rng"])
        self.start_epoch = state["epoch"] + 1

    def _status(self, loss):
        """The step's status on the device, agreed by every rank so that all ranks skip a step together."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm or math.inf)
        flags = torch.stack([torch.isfinite(loss), torch.isfinite(norm)]).float()
        distributed.all_reduce_sum(flags)
        loss_ok, grads_ok = flags == self.ctx.world_size
        return torch.where(loss_ok, torch.where(grads_ok, APPLIED, NONFINITE_GRADS), NONFINITE_LOSS)

    def _optimizer_step(self, status):
        skip = (status != APPLIED).float()   # exactly 0 or 1: the fused kernels skip where found_inf == 1
        if not self.skips_on_device:
            if not skip.item():
                self.optimizer.step()
            return
        self.optimizer.grad_scale, self.optimizer.found_inf = None, skip   # gradients are unscaled already
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.grad_scale, self.optimizer.found_inf

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
            status = self._status(loss.detach())
            self._optimizer_step(status)
            self.scaler.update()
            if self.scaler.is_enabled():
                # After update(): an overflow halved the scale; below 1 it counts as a fault.
                overflow = (status == NONFINITE_GRADS) & (self.scaler._get_scale_async() >= 1.0)
                status = torch.where(overflow, OVERFLOW, status)
            self.scheduler.step()
        return StepResult(loss.detach(), status)

    def _throughput(self, seconds, utterances, frames, useful_flops, padded_flops):
        return Throughput(seconds, utterances, frames / FRAMES_PER_SECOND, useful_flops, padded_flops,
                          self.peak_flops, self.precision)

    def train_epoch(self, epoch, batches):
        """Train on `batches` (this rank's, in the sampler's order); returns the epoch's statistics."""
        self.training_model.train()
        config, steps_per_epoch, start = self.config, self.plan.steps_per_epoch, time.perf_counter()
        world, device = self.ctx.world_size, self.plan.device
        # On the device, summed over the epoch: loss of applied steps, applied steps, useful FLOPs, frames.
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        data_wait, padded_flops, steps, samples = 0.0, 0.0, 0, 0
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
            self.nonfinite.record(epoch, steps, result.status)
            applied = result.status == APPLIED
            useful, padded = self.costs.batch_flops(batch.feature_lengths, batch.features.shape[2])
            sums += torch.stack([torch.where(applied, result.loss.double(), 0.0), applied.double(), useful,
                                 batch.feature_lengths.sum().double()])
            padded_flops += padded
            samples += batch.features.shape[0]
            progress = bool(config.log_every) and steps % config.log_every == 0
            if progress or steps % config.max_nonfinite_steps == 0:   # the same steps on every rank
                self.nonfinite.check()
            if progress and self.ctx.is_main:
                elapsed = time.perf_counter() - start
                _, _, useful_sum, frames = sums.tolist()
                # The job's rates from this rank's batches (every rank has a batch of the same size).
                rate = self._throughput(elapsed, samples * world, frames * world, useful_sum * world,
                                        padded_flops * world)
                print(f"epoch {epoch} step {steps}/{steps_per_epoch} loss {result.loss.item():.3f} "
                      f"lr {self.scheduler.get_last_lr()[0]:.2e} {samples * world / elapsed:.1f} utt/s "
                      f"{rate.text()}, data wait {100 * data_wait / elapsed:.1f}%", flush=True)
        self.nonfinite.check()
        elapsed = time.perf_counter() - start
        loss_sum, finite_steps, useful_sum, frames = sums.tolist()
        totals = distributed.all_reduce_sum(torch.tensor([useful_sum, frames, padded_flops], dtype=torch.float64,
                                                         device=device)).tolist()
        return {"loss": loss_sum / finite_steps if finite_steps else float("nan"), "seconds": elapsed,
                "data_wait": data_wait, "samples": samples * world, "skipped": steps - int(finite_steps),
                "throughput": self._throughput(elapsed, samples * world, totals[1], totals[0], totals[2])}


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
