"""Train DeepSpeech2 until the evaluation WER reaches the target; the MLPerf log says how long it took.

Usage:
  # one process (CPU, or one GPU)
  python -m benchmark.train --train_data_dir data/synthetic/train.csv --eval_data_dir data/synthetic/dev.csv \
      --target_wer 0.30 --output_dir runs/try1
  # 8 GPUs on one node (or 2 CPU processes with gloo: --nproc_per_node=2 --num_gpus 0)
  torchrun --standalone --nproc_per_node=8 -m benchmark.train --train_data_dir ... --eval_data_dir ...
  python -m benchmark.train --help        # every flag, with its default

Timeline (MLPerf): init_start -> build data, model, optimizer -> init_stop -> run_start -> epochs of
[epoch_start, steps, epoch_stop, eval_start, eval_accuracy (WER), eval_stop] -> run_stop with status
success (WER <= target) or aborted (--max_epochs reached, or too many non-finite steps).
Exit status: 0 success, 3 aborted, 2 bad configuration, 1 error.
"""
import math
import os
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
from benchmark.features import FeatureSpec
from benchmark.metrics import WordErrorCounter
from benchmark.mlperf_log import (DATA_WAIT_SECONDS, NONFINITE_STEPS_SKIPPED, TARGET_WER, TRAIN_LOSS,
                                  MLPerfLogger)
from benchmark.model import DeepSpeech2
from benchmark.optim import build_optimizer, build_scheduler, optimizer_hyperparameters
from benchmark.text import greedy_collapse

EXIT_ABORTED = 3


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with non-finite loss or gradients."""


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


class Trainer:
    def __init__(self, config, ctx, device, log):
        self.config, self.ctx, self.device, self.log = config, ctx, device, log
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
                "rng": checkpoint.rng_state(), "config": vars(self.config)}

    def resume(self):
        path = checkpoint.latest_checkpoint(self.config.model_dir)
        if path is None:
            print(f"resume: no checkpoint in {self.config.model_dir}, starting fresh", flush=True)
            return
        state = checkpoint.load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        self.start_epoch = state["epoch"] + 1
        print(f"resume: continuing after epoch {state['epoch']} from {path}", flush=True)

    def _step_is_finite(self, loss):
        """True when loss and gradients are finite on every rank (so all ranks skip together)."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm or math.inf)
        flag = torch.tensor([float(torch.isfinite(loss) and torch.isfinite(norm) and bool(grads))],
                            device=self.device)
        distributed.all_reduce_sum(flag)
        return int(flag.item()) == self.ctx.world_size

    def train_epoch(self, epoch):
        self.ddp.train()
        config, start = self.config, time.perf_counter()
        data_wait, loss_sum, steps, samples = 0.0, 0.0, 0, 0
        batches = iter(self.train_loader.batches(self.sampler.epoch_batches(epoch)))
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            data_wait += time.perf_counter() - wait_start
            if batch is None:
                break
            with self.autocast():
                logits, output_lengths = self.ddp(batch.features, batch.feature_lengths)
            loss = ctc_loss(logits, output_lengths, batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if self._step_is_finite(loss.detach()):
                self.scaler.step(self.optimizer)
                self.consecutive_nonfinite = 0
                loss_sum += loss.item()
            else:
                self.nonfinite_skipped += 1
                self.consecutive_nonfinite += 1
                if self.consecutive_nonfinite >= config.max_nonfinite_steps:
                    raise NonFiniteError(f"{self.consecutive_nonfinite} consecutive steps with non-finite "
                                         f"loss or gradients (epoch {epoch}, step {steps + 1})")
            self.scaler.update()
            self.scheduler.step()
            steps += 1
            samples += batch.features.shape[0]
            if self.ctx.is_main and config.log_every and steps % config.log_every == 0:
                elapsed = time.perf_counter() - start
                print(f"epoch {epoch} step {steps}/{len(self.sampler)} loss {loss.item():.3f} "
                      f"lr {self.scheduler.get_last_lr()[0]:.2e} {samples * self.ctx.world_size / elapsed:.1f} utt/s "
                      f"data wait {100 * data_wait / elapsed:.1f}%", flush=True)
        elapsed = time.perf_counter() - start
        return {"loss": loss_sum / max(steps - self.nonfinite_skipped, 1), "seconds": elapsed,
                "data_wait": data_wait, "samples": samples * self.ctx.world_size}

    @torch.no_grad()
    def evaluate(self):
        self.model.eval()
        counter = WordErrorCounter()
        for indices, batch in zip(self.eval_index_batches, self.eval_loader.batches(self.eval_index_batches)):
            with self.autocast():
                logits, output_lengths = self.model(batch.features, batch.feature_lengths)
            best = logits.argmax(dim=2).cpu()  # [T, B]
            hypotheses = [greedy_collapse(best[:n, b].tolist()) for b, n in enumerate(output_lengths.tolist())]
            counter.update([self.eval_utts[i].transcript for i in indices], hypotheses)
        return counter.wer(self.device)


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


def run(config):
    """One timed run. Returns the process exit status."""
    # Manifests are read before init_start: a missing or empty file fails here, naming it.
    spec = FeatureSpec(config.features, config.n_mels)
    try:
        train_utts = read_manifests(config.train_data_dir)
        eval_utts = read_manifests(config.eval_data_dir)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.max_duration:
        train_utts = filter_by_duration(train_utts, config.max_duration)
    ctx = distributed.init_distributed(torch.cuda.is_available() and config.num_gpus != 0)
    device = choose_device(config, ctx)
    threads = set_threads(config, ctx)
    log = MLPerfLogger(config.resolved_log_file(), rank=ctx.rank)
    log.event(C.CACHE_CLEAR, True)
    log.start(C.INIT_START)
    trainer = Trainer(config, ctx, device, log)
    trainer.build(train_utts, eval_utts, spec)
    if config.resume:
        trainer.resume()
    log_init(log, config, ctx, trainer, threads)
    log.end(C.INIT_STOP)
    distributed.barrier()
    log.start(C.RUN_START)
    status, epoch = C.ABORTED, trainer.start_epoch - 1
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
            wer = trainer.evaluate()
            log.event(C.EVAL_ACCURACY, wer, metadata={C.EPOCH_NUM: epoch})
            log.end(C.EVAL_STOP, metadata={C.EPOCH_NUM: epoch})
            if ctx.is_main:
                print(f"epoch {epoch}: loss {stats['loss']:.3f}, WER {wer:.4f} (target {config.target_wer}), "
                      f"{stats['samples'] / stats['seconds']:.1f} utt/s, "
                      f"data wait {100 * stats['data_wait'] / stats['seconds']:.1f}%", flush=True)
            if config.model_dir and ctx.is_main:
                checkpoint.save_checkpoint(config.model_dir, epoch, trainer.state(epoch))
            if wer <= config.target_wer:
                status = C.SUCCESS
                break
    except NonFiniteError as error:
        print(f"error: {error}; stopping with status aborted", file=sys.stderr, flush=True)
    finally:
        log.event(NONFINITE_STEPS_SKIPPED, trainer.nonfinite_skipped)
        log.end(C.RUN_STOP, metadata={C.STATUS: status, C.EPOCH_NUM: epoch})
        log.close()
    distributed.shutdown()
    return 0 if status == C.SUCCESS else EXIT_ABORTED


def main(argv=None):
    config = parse_config(argv, description=__doc__.split("\n\n")[0])
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
