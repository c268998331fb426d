"""Train DeepSpeech2 until the evaluation WER reaches the target; the MLPerf log says how long it took.

Usage:
  # one process (CPU, or one GPU)
  python -m benchmark.train --train_data_dir data/synthetic/train.csv --eval_data_dir data/synthetic/dev.csv \
      --target_wer 0.30 --output_dir runs/try1 --model_dir runs/try1/ckpt
  # after a crash or pre-emption: the same command plus --resume true (continues after the last checkpoint)
  # 8 GPUs on one node (or 2 CPU processes with gloo: --nproc_per_node=2 --num_gpus 0)
  torchrun --standalone --nproc_per_node=8 -m benchmark.train --train_data_dir ... --eval_data_dir ...
  # two nodes, one agent on each (same command, --node_rank 0 and 1)
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 \
      -m benchmark.train ...
  # WER of the latest checkpoint (any number of processes; no MLPerf log)
  python -m benchmark.train --eval_only true --model_dir runs/try1/ckpt --train_data_dir ... --eval_data_dir ...
  python -m benchmark.train --help        # every flag, with its default

Timeline (MLPerf): init_start -> build data, model, optimizer -> init_stop -> run_start -> epochs of
[epoch_start, steps, epoch_stop, eval_start, eval_accuracy (WER), eval_stop] -> run_stop with status
success (WER <= target) or aborted (--max_epochs reached, too many non-finite steps, a failed rank, SIGTERM).

Results are never overwritten: the run refuses a non-empty --log_file (or one another run holds open)
unless --resume true. Checkpoints (--model_dir) are written atomically at every epoch end by rank 0.
A resumed run appends to the same log: after the killed run's events (epochs from 1, no run_stop) come a
second init_start, a `resume` event naming the checkpoint and epoch, init_stop, run_start, the remaining
epochs numbered as they continue, and run_stop. Such a log is a record of what happened, not a valid
MLPerf result (its timed region was interrupted; the compliance checker rejects the second run_start).
Non-finite steps: skipped (no optimizer step), counted (`nonfinite_steps_skipped` at run_stop), and
--max_nonfinite_steps in a row abort the run. Faults can be injected for tests: see benchmark/faults.py.
Exit status: 0 success, 3 aborted, 2 bad configuration, 143 terminated (SIGTERM), 1 error (e.g. a dead rank).
"""
from dataclasses import replace
import fcntl
import json
import math
import os
import signal
import sys
import time

import torch
import torch.nn.functional as F
from mlperf_logging.mllog import constants as C
from torch.nn.parallel import DistributedDataParallel

from benchmark import checkpoint, distributed
from benchmark.config import parse_config
from benchmark.data.loaders import make_loader
from benchmark.data.manifest import ManifestError, filter_by_duration, read_manifests
from benchmark.data.sampler import TrainBatchSampler, eval_batches
from benchmark.faults import FaultInjector
from benchmark.features import FeatureSpec
from benchmark.metrics import WordErrorCounter
from benchmark.mlperf_log import (DATA_WAIT_SECONDS, NONFINITE_STEPS_SKIPPED, RESUME, TARGET_WER, TRAIN_LOSS,
                                  MLPerfLogger)
from benchmark.model import DeepSpeech2
from benchmark.optim import build_optimizer, build_scheduler, optimizer_hyperparameters
from benchmark.text import greedy_collapse

EXIT_ABORTED, EXIT_BAD_CONFIG, EXIT_TERMINATED = 3, 2, 128 + signal.SIGTERM
# Flags a resumed run may change: where files go, how it reports, when it stops; every other flag
# (model, data, optimizer, schedule, seed) must equal the checkpointed run's or it would be another run.
RESUME_MAY_DIFFER = frozenset({"train_data_dir", "eval_data_dir", "data_backend", "num_workers", "num_gpus",
                               "num_threads", "eval_batch_size", "target_wer", "max_nonfinite_steps",
                               "dist_timeout", "model_dir", "output_dir", "log_file", "resume", "eval_only",
                               "system", "log_every"})
MODEL_FIELDS = ("features", "n_mels", "rnn_type", "rnn_hidden_size", "rnn_layers", "conv_channels", "time_stride")


class ConfigError(ValueError):
    """A configuration no run can use, found before init_start (exit status 2)."""


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with non-finite loss or gradients."""


class Terminated(BaseException):
    """SIGTERM (torchrun stopping the group after a rank failed, SLURM pre-emption): stop, log aborted."""


def _raise_terminated(signum, frame):
    raise Terminated(f"received {signal.Signals(signum).name}")


def choose_device(config, ctx):
    use_cuda = torch.cuda.is_available() and config.num_gpus != 0
    return torch.device("cuda", ctx.local_rank) if use_cuda else torch.device("cpu")


def set_threads(config, ctx):
    # Each process gets its share of the cores: oversubscribed OpenMP pools thrash on shared VMs.
    threads = config.num_threads or max(1, (os.cpu_count() or 1) // ctx.local_world_size)
    torch.set_num_threads(threads)
    return threads


def ctc_loss(logits, output_lengths, batch):
    """CTC in fp32 whatever the autocast dtype, summed over the batch and divided by its size."""
    log_probs = F.log_softmax(logits.float(), dim=2)
    loss = F.ctc_loss(log_probs, batch.targets, output_lengths, batch.target_lengths,
                      blank=0, reduction="sum", zero_infinity=True)
    return loss / batch.features.shape[0]


def claim_log_file(config):
    """Open the MLPerf log for this run (rank 0), refusing one that holds a result or another run's lock.

    The flock is held until the process exits, so two runs started at once on one file can't both write.
    Returns the open descriptor (keep it referenced).
    """
    path = config.resolved_log_file()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"--log_file {path}: another running training holds it; give this run its own file")
    size = os.fstat(fd).st_size
    if size and not config.resume:
        os.close(fd)
        raise ConfigError(f"--log_file {path}: already holds a run's log ({size} bytes); results are never "
                          "overwritten: give a new file, or add --resume true to continue that run")
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")   # the killed run died mid-line: keep our first event on a line of its own
    return fd


def config_mismatches(saved_config, config, names):
    return [f"--{n} {saved_config[n]!r} in the checkpoint, {getattr(config, n)!r} now"
            for n in names if n in saved_config and saved_config[n] != getattr(config, n)]


def load_latest(config, ctx):
    """(path, state) of the newest checkpoint in --model_dir, read by rank 0 and sent to every rank."""
    found = None
    if ctx.is_main:
        path = checkpoint.latest_checkpoint(config.model_dir)
        found = (str(path), checkpoint.load_checkpoint(path)) if path else (None, None)
    return distributed.broadcast_object(found)


class Trainer:
    def __init__(self, config, ctx, device, faults):
        self.config, self.ctx, self.device, self.faults = config, ctx, device, faults
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
        self.consecutive_nonfinite = 0
        self.nonfinite_skipped = 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def build(self, train_utts, eval_utts, spec):
        config, ctx = self.config, self.ctx
        self.train_utts, self.eval_utts = train_utts, eval_utts
        self.sampler = TrainBatchSampler([u.duration for u in train_utts], config.batch_size,
                                         ctx.world_size, ctx.rank, config.seed, config.sortagrad)
        self.eval_index_batches = eval_batches([u.duration for u in eval_utts], config.eval_batch_size,
                                               ctx.world_size, ctx.rank)
        self.train_loader = make_loader(config, train_utts, spec, self.device, train=True)
        self.eval_loader = make_loader(config, eval_utts, spec, self.device, train=False)
        torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
        model = DeepSpeech2(spec.num_features, conv_channels=config.conv_channels, time_stride=config.time_stride,
                            rnn_type=config.rnn_type, rnn_hidden_size=config.rnn_hidden_size,
                            rnn_layers=config.rnn_layers).to(self.device)
        self.model = model
        self.ddp = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                           else None) if ctx.distributed else model
        self.optimizer = build_optimizer(config, model)
        total_steps = len(self.sampler) * (config.schedule_epochs or config.max_epochs)
        self.scheduler = build_scheduler(config, self.optimizer, total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.start_epoch = 1

    def state(self, epoch):
        return {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": checkpoint.rng_state(), "config": vars(self.config), "world_size": self.ctx.world_size,
                "nonfinite_skipped": self.nonfinite_skipped, "consecutive_nonfinite": self.consecutive_nonfinite}

    def load(self, state, model_only=False):
        """Continue from a checkpoint: the sampler derives epoch e's order from (seed, e), so the epoch
        number, weights, optimizer, schedule, scaler, counters and RNG states are all a resume needs."""
        self.model.load_state_dict(state["model"])
        if model_only:
            return
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

    def _skip(self, loss_ok, epoch, step):
        self.nonfinite_skipped += 1
        # fp16: an overflow with a finite loss is the GradScaler's business (it halves the scale and the
        # step is skipped); it only counts as a fault once the scale has fallen below 1.
        overflow = self.scaler.is_enabled() and loss_ok and self.scaler.get_scale() >= 1.0
        self.consecutive_nonfinite = 0 if overflow else self.consecutive_nonfinite + 1
        if self.consecutive_nonfinite >= self.config.max_nonfinite_steps:
            raise NonFiniteError(f"{self.consecutive_nonfinite} consecutive steps with non-finite loss or "
                                 f"gradients (epoch {epoch}, step {step}; --max_nonfinite_steps "
                                 f"{self.config.max_nonfinite_steps})")

    def train_epoch(self, epoch):
        self.ddp.train()
        config, start = self.config, time.perf_counter()
        data_wait, loss_sum, steps, finite_steps, samples = 0.0, 0.0, 0, 0, 0
        batches = iter(self.train_loader.batches(self.sampler.epoch_batches(epoch)))
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            data_wait += time.perf_counter() - wait_start
            if batch is None:
                break
            steps += 1
            global_step = (epoch - 1) * len(self.sampler) + steps
            self.faults.before_step(global_step, epoch)
            with self.autocast():
                logits, output_lengths = self.ddp(batch.features, batch.feature_lengths)
            loss = self.faults.loss(ctc_loss(logits, output_lengths, batch), global_step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            loss_ok, grads_ok = self._finite_flags(loss.detach())
            if loss_ok and grads_ok:
                self.scaler.step(self.optimizer)
                self.consecutive_nonfinite = 0
                loss_sum += loss.item()
                finite_steps += 1
            else:
                print(f"warning: epoch {epoch} step {steps}: non-finite {'gradients' if loss_ok else 'loss'}, "
                      "step skipped", file=sys.stderr, flush=True)
                self._skip(loss_ok, epoch, steps)
            self.scaler.update()
            self.scheduler.step()
            samples += batch.features.shape[0]
            if self.ctx.is_main and config.log_every and steps % config.log_every == 0:
                elapsed = time.perf_counter() - start
                print(f"epoch {epoch} step {steps}/{len(self.sampler)} loss {loss.item():.3f} "
                      f"lr {self.scheduler.get_last_lr()[0]:.2e} {samples * self.ctx.world_size / elapsed:.1f} utt/s "
                      f"data wait {100 * data_wait / elapsed:.1f}%", flush=True)
        elapsed = time.perf_counter() - start
        return {"loss": loss_sum / finite_steps if finite_steps else float("nan"), "seconds": elapsed,
                "data_wait": data_wait, "samples": samples * self.ctx.world_size, "skipped": steps - finite_steps}

    @torch.no_grad()
    def evaluate(self):
        """Corpus (errors, words) over every rank's share of the evaluation set, with rank 0's model."""
        distributed.broadcast_buffers(self.model)
        self.model.eval()
        counter = WordErrorCounter()
        for indices, batch in zip(self.eval_index_batches, self.eval_loader.batches(self.eval_index_batches)):
            with self.autocast():
                logits, output_lengths = self.model(batch.features, batch.feature_lengths)
            best = logits.argmax(dim=2).cpu()  # [T, B]
            hypotheses = [greedy_collapse(best[:n, b].tolist()) for b, n in enumerate(output_lengths.tolist())]
            counter.update([self.eval_utts[i].transcript for i in indices], hypotheses)
        return counter.totals(self.device)


def wer_of(errors, words):
    return errors / words if words else float("nan")


def log_init(log, config, ctx, trainer, threads):
    log.submission_info(org="ds2perf", platform=config.system)
    log.event(C.SEED, config.seed)
    log.event(C.GLOBAL_BATCH_SIZE, config.batch_size * ctx.world_size)
    for key, value in optimizer_hyperparameters(config, len(trainer.sampler)).items():
        log.event(key, value)
    log.event(TARGET_WER, config.target_wer)
    log.event(C.TRAIN_SAMPLES, trainer.sampler.samples_per_epoch)
    log.event(C.EVAL_SAMPLES, len(trainer.eval_utts))
    log.event("model_config", {k: getattr(config, k) for k in (
        "rnn_type", "rnn_hidden_size", "rnn_layers", "conv_channels", "time_stride", "features", "n_mels",
        "amp", "data_backend")} | {"backend": trainer.train_loader.name, "world_size": ctx.world_size,
                                   "threads_per_process": threads, "device": str(trainer.device)})


def evaluate_only(config, ctx, device, data, faults):
    """--eval_only: the WER of the latest checkpoint, built with the model flags stored in it."""
    path, state = load_latest(config, ctx)
    if path is None:
        raise ConfigError(f"--eval_only: no checkpoint in --model_dir {config.model_dir}")
    config = replace(config, **{n: state["config"][n] for n in MODEL_FIELDS if n in state["config"]})
    train_utts, eval_utts = data
    trainer = Trainer(config, ctx, device, faults)
    trainer.build(train_utts, eval_utts, FeatureSpec(config.features, config.n_mels))
    trainer.load(state, model_only=True)
    errors, words = trainer.evaluate()
    if ctx.is_main:
        print("EVAL_ONLY " + json.dumps({"checkpoint": path, "epoch": state["epoch"], "wer": wer_of(errors, words),
                                         "errors": errors, "words": words, "world_size": ctx.world_size}),
              flush=True)
    distributed.shutdown()
    return 0


def train(config, ctx, device, threads, data, faults, saved):
    """init -> run_start -> epochs -> run_stop. Returns the exit status."""
    log = MLPerfLogger(config.resolved_log_file(), rank=ctx.rank)
    log.event(C.CACHE_CLEAR, True)
    log.start(C.INIT_START)
    trainer = Trainer(config, ctx, device, faults)
    trainer.build(*data, FeatureSpec(config.features, config.n_mels))
    if config.resume:
        path, state = saved
        if state is None:
            print(f"resume: no checkpoint in {config.model_dir}, starting fresh", flush=True)
        else:
            trainer.load(state)
            print(f"resume: continuing after epoch {state['epoch']} from {path}", flush=True)
        log.event(RESUME, {"checkpoint": path, "epoch": state["epoch"] if state else 0})
    log_init(log, config, ctx, trainer, threads)
    log.end(C.INIT_STOP)
    distributed.barrier()
    log.start(C.RUN_START)
    status, epoch, exit_status = C.ABORTED, trainer.start_epoch - 1, EXIT_ABORTED
    try:
        for epoch in range(trainer.start_epoch, config.max_epochs + 1):
            log.start(C.EPOCH_START, metadata={C.EPOCH_NUM: epoch})
            stats = trainer.train_epoch(epoch)
            log.end(C.EPOCH_STOP, metadata={C.EPOCH_NUM: epoch})
            log.event(TRAIN_LOSS, stats["loss"], metadata={C.EPOCH_NUM: epoch})
            log.event(DATA_WAIT_SECONDS, round(stats["data_wait"], 3),
                      metadata={C.EPOCH_NUM: epoch, "epoch_seconds": round(stats["seconds"], 3),
                                "fraction": round(stats["data_wait"] / stats["seconds"], 4)})
            log.start(C.EVAL_START, metadata={C.EPOCH_NUM: epoch})
            wer = wer_of(*trainer.evaluate())
            log.event(C.EVAL_ACCURACY, wer, metadata={C.EPOCH_NUM: epoch})
            log.end(C.EVAL_STOP, metadata={C.EPOCH_NUM: epoch})
            if ctx.is_main:
                print(f"epoch {epoch}: loss {stats['loss']:.3f}, WER {wer:.4f} (target {config.target_wer}), "
                      f"{stats['samples'] / stats['seconds']:.1f} utt/s, "
                      f"data wait {100 * stats['data_wait'] / stats['seconds']:.1f}%"
                      + (f", {stats['skipped']} non-finite steps skipped" if stats["skipped"] else ""), flush=True)
            if config.model_dir and ctx.is_main:
                checkpoint.save_checkpoint(config.model_dir, epoch, trainer.state(epoch))
            if wer <= config.target_wer:
                status = C.SUCCESS
                break
    except NonFiniteError as error:
        print(f"error: {error}; stopping with status aborted", file=sys.stderr, flush=True)
    except Terminated as error:
        print(f"error: {error}; stopping with status aborted", file=sys.stderr, flush=True)
        exit_status = EXIT_TERMINATED
    except Exception as error:   # e.g. a peer rank died: log the abort, then let the traceback say why
        print(f"error: {type(error).__name__}: {error}; stopping with status aborted", file=sys.stderr, flush=True)
        raise
    finally:
        log.event(NONFINITE_STEPS_SKIPPED, trainer.nonfinite_skipped)
        log.end(C.RUN_STOP, metadata={C.STATUS: status, C.EPOCH_NUM: epoch})
        log.close()
    distributed.shutdown()
    return 0 if status == C.SUCCESS else exit_status


def run(config):
    """One timed run (or, with --eval_only, one evaluation). Returns the process exit status."""
    ctx = distributed.context_from_environment()
    log_fd = None   # held open (with its lock) until the process exits
    try:
        faults = FaultInjector(ctx.rank)
        config.validate()   # again: run() may be called without parse_config
        # Manifests are read before init_start: a missing or empty file fails here, naming it.
        train_utts = read_manifests(config.train_data_dir)
        eval_utts = read_manifests(config.eval_data_dir)
        if not config.eval_only and ctx.is_main:
            log_fd = claim_log_file(config)
    except (ConfigError, ManifestError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if config.max_duration:
        train_utts = filter_by_duration(train_utts, config.max_duration)
    ctx = distributed.init_distributed(torch.cuda.is_available() and config.num_gpus != 0, config.dist_timeout)
    device = choose_device(config, ctx)
    threads = set_threads(config, ctx)
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if config.eval_only:
            return evaluate_only(config, ctx, device, (train_utts, eval_utts), faults)
        saved = load_latest(config, ctx) if config.resume else (None, None)
        if saved[1] is not None:
            state = saved[1]
            problems = config_mismatches(state["config"], config, [n for n in state["config"]
                                                                   if n not in RESUME_MAY_DIFFER])
            if state.get("world_size", ctx.world_size) != ctx.world_size:
                problems.append(f"{state['world_size']} processes in the checkpoint, {ctx.world_size} now")
            if problems:
                raise ConfigError(f"--resume: {saved[0]} belongs to another run: " + "; ".join(problems))
        return train(config, ctx, device, threads, (train_utts, eval_utts), faults, saved)
    except (ConfigError, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except Terminated as error:
        print(f"error: {error} before the run started", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if log_fd is not None:
            os.close(log_fd)


def main(argv=None):
    config = parse_config(argv, description=__doc__.split("\n\n")[0])
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
