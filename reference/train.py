"""Train the reference DeepSpeech2 until the evaluation WER reaches the target, logging MLPerf events.

Usage:
  python -m reference.train --train_data_dir data/synthetic/train.csv --eval_data_dir data/synthetic/dev.csv \
      --features logmel --n_mels 40 --rnn_type lstm --rnn_hidden_size 128 --rnn_layers 3 --conv_channels 8 \
      --time_stride 2 --batch_size 16 --learning_rate 3e-3 --warmup_fraction 0.05 --max_epochs 3 \
      --target_wer 0.30 --output_dir runs/reference        # config_CPU.sh's recipe
  python -m reference.train --help        # every flag, with its default

One process, float32, numpy features in DataLoader workers. The flags and the MLPerf log are
benchmark.train's (init_start ... run_start, per epoch epoch_start/stop, train_loss, data_wait_seconds,
eval_start, eval_accuracy, eval_stop, then run_stop with status success or aborted), so the report and
compliance tools read both. A non-empty --log_file is refused (results are never overwritten).
Exit status: 0 success, 3 aborted, 2 bad configuration, 1 error.
"""
import math
import os
import sys
import time

import torch
from torch import nn

from benchmark.data.manifest import ManifestError, filter_by_duration, read_manifests
from benchmark.mlperf_log import Key, MLPerfLogger, Status
from benchmark.optim import optimizer_hyperparameters, schedule_steps
from reference import features
from reference.config import parse_config
from reference.data import SortaGradSampler, SpeechDataset, make_loader
from reference.model import DeepSpeech2
from reference.optim import learning_rate_factor, make_optimizer, set_learning_rate
from reference.text import BLANK, corpus_wer, greedy_decode

EXIT_ABORTED = 3


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with non-finite loss or gradients."""


class Training:
    """Model, loss and optimizer of one run. One step is loss() -> backward() -> optimizer_step()."""

    def __init__(self, config, num_features, steps_per_epoch, device):
        self.config, self.device = config, device
        torch.manual_seed(config.seed)
        self.model = DeepSpeech2(num_features, conv_channels=config.conv_channels, time_stride=config.time_stride,
                                 rnn_type=config.rnn_type, rnn_hidden_size=config.rnn_hidden_size,
                                 rnn_layers=config.rnn_layers).to(device)
        self.optimizer = make_optimizer(self.model.parameters(), config.optimizer, config.learning_rate,
                                        config.weight_decay, config.momentum)
        # Summed over the batch, then divided by its size; impossible alignments give 0, not inf.
        self.ctc = nn.CTCLoss(blank=BLANK, reduction="sum", zero_infinity=True)
        self.total_steps = schedule_steps(config, steps_per_epoch)
        self.step = 0   # optimizer steps taken or skipped, for the learning-rate schedule
        self.consecutive_nonfinite = self.nonfinite_skipped = 0

    def loss(self, batch):
        """Forward pass and CTC loss of a (features, feature_lengths, targets, target_lengths) batch."""
        feats, feature_lengths, targets, target_lengths = (t.to(self.device) for t in batch)
        logits, output_lengths = self.model(feats, feature_lengths)
        log_probs = logits.log_softmax(dim=2)
        return self.ctc(log_probs, targets, output_lengths, target_lengths) / feats.shape[0]

    def backward(self, loss):
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def optimizer_step(self, loss):
        """Clip, then step with this step's learning rate unless loss or gradients are not finite."""
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm or math.inf)
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(norm))
        if finite:
            factor = learning_rate_factor(self.step, self.total_steps, self.config.warmup_fraction,
                                          self.config.lr_schedule)
            set_learning_rate(self.optimizer, self.config.learning_rate, factor)
            self.optimizer.step()
            self.consecutive_nonfinite = 0
        else:
            self.nonfinite_skipped += 1
            self.consecutive_nonfinite += 1
            if self.consecutive_nonfinite >= self.config.max_nonfinite_steps:
                raise NonFiniteError(f"{self.consecutive_nonfinite} consecutive steps with non-finite loss or "
                                     f"gradients (step {self.step + 1})")
        self.step += 1
        return finite

    def train_epoch(self, loader, epoch):
        self.model.train()
        start = time.perf_counter()
        data_wait, loss_sum, finite_steps, steps, samples = 0.0, 0.0, 0, 0, 0
        batches = iter(loader)
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            data_wait += time.perf_counter() - wait_start
            if batch is None:
                break
            loss = self.loss(batch)
            self.backward(loss)
            if self.optimizer_step(loss.detach()):
                loss_sum += loss.item()
                finite_steps += 1
            steps += 1
            samples += batch[0].shape[0]
            if self.config.log_every and steps % self.config.log_every == 0:
                elapsed = time.perf_counter() - start
                print(f"epoch {epoch} step {steps}/{len(loader)} loss {loss.item():.3f} "
                      f"{samples / elapsed:.1f} utt/s data wait {100 * data_wait / elapsed:.1f}%", flush=True)
        return {"loss": loss_sum / max(finite_steps, 1), "seconds": time.perf_counter() - start,
                "data_wait": data_wait, "samples": samples}

    @torch.no_grad()
    def evaluate(self, loader, utterances):
        """Corpus WER of the model on `loader`, whose batches index `utterances`."""
        self.model.eval()
        edits = words = 0
        for indices, batch in zip(loader.batch_sampler, loader):
            feats, feature_lengths = batch[0].to(self.device), batch[1].to(self.device)
            logits, output_lengths = self.model(feats, feature_lengths)
            batch_edits, batch_words = corpus_wer([utterances[i].transcript for i in indices],
                                                  greedy_decode(logits, output_lengths))
            edits, words = edits + batch_edits, words + batch_words
        return edits / words if words else float("nan")


def choose_device(config):
    use_cuda = config.num_gpus != 0 and torch.cuda.is_available()
    return torch.device("cuda", 0) if use_cuda else torch.device("cpu")


def build(config):
    """Manifests, loaders and Training for `config` (raises ManifestError naming a bad manifest)."""
    train_utts = read_manifests(config.train_data_dir)
    eval_utts = read_manifests(config.eval_data_dir)
    if config.max_duration:
        train_utts = filter_by_duration(train_utts, config.max_duration)
    train_sampler = SortaGradSampler([u.duration for u in train_utts], config.batch_size, config.seed,
                                     config.sortagrad)
    eval_sampler = SortaGradSampler([u.duration for u in eval_utts], config.eval_batch_size)
    train_loader = make_loader(SpeechDataset(train_utts, config.features, config.n_mels), train_sampler,
                               config.workers())
    eval_loader = make_loader(SpeechDataset(eval_utts, config.features, config.n_mels), eval_sampler,
                              config.workers())
    training = Training(config, features.num_features(config.features, config.n_mels), len(train_sampler),
                        choose_device(config))
    return train_utts, eval_utts, train_loader, eval_loader, training


def log_init(log, config, train_utts, eval_utts, total_steps, device, threads):
    log.submission_info(org="ds2perf", platform=config.system)
    log.event(Key.SEED, config.seed)
    log.event(Key.GLOBAL_BATCH_SIZE, config.batch_size)
    for key, value in optimizer_hyperparameters(config, total_steps).items():
        log.event(key, value)
    log.event(Key.TARGET_WER, config.target_wer)
    log.event(Key.TRAIN_SAMPLES, len(train_utts))
    log.event(Key.EVAL_SAMPLES, len(eval_utts))
    log.event(Key.MODEL_CONFIG, {k: getattr(config, k) for k in (
        "rnn_type", "rnn_hidden_size", "rnn_layers", "conv_channels", "time_stride", "features", "n_mels")}
        | {"amp": "off", "data_backend": "torch", "backend": "reference", "world_size": 1,
           "threads_per_process": threads, "device": str(device)})


def run(config):
    """One timed run. Returns the process exit status."""
    threads = config.num_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    try:   # manifests are read before init_start: a missing or empty one fails here, naming it
        read_manifests(config.train_data_dir), read_manifests(config.eval_data_dir)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log_file = config.resolved_log_file()
    if os.path.exists(log_file) and os.path.getsize(log_file):   # a second run would make both logs invalid
        print(f"error: --log_file {log_file}: already holds a run's log; results are never overwritten",
              file=sys.stderr)
        return 2
    log = MLPerfLogger(log_file)
    log.event(Key.CACHE_CLEAR, True)
    log.start(Key.INIT_START)
    train_utts, eval_utts, train_loader, eval_loader, training = build(config)
    log_init(log, config, train_utts, eval_utts, training.total_steps, training.device, threads)
    log.end(Key.INIT_STOP)
    log.start(Key.RUN_START)
    status, epoch = Status.ABORTED, 0
    try:
        for epoch in range(1, config.max_epochs + 1):
            train_loader.batch_sampler.set_epoch(epoch)
            log.start(Key.EPOCH_START, metadata={Key.EPOCH_NUM: epoch})
            stats = training.train_epoch(train_loader, epoch)
            log.end(Key.EPOCH_STOP, metadata={Key.EPOCH_NUM: epoch})
            log.event(Key.TRAIN_LOSS, stats["loss"], metadata={Key.EPOCH_NUM: epoch})
            log.event(Key.DATA_WAIT_SECONDS, round(stats["data_wait"], 3),
                      metadata={Key.EPOCH_NUM: epoch, "epoch_seconds": round(stats["seconds"], 3),
                                "fraction": round(stats["data_wait"] / stats["seconds"], 4)})
            log.start(Key.EVAL_START, metadata={Key.EPOCH_NUM: epoch})
            wer = training.evaluate(eval_loader, eval_utts)
            log.event(Key.EVAL_ACCURACY, wer, metadata={Key.EPOCH_NUM: epoch})
            log.end(Key.EVAL_STOP, metadata={Key.EPOCH_NUM: epoch})
            print(f"epoch {epoch}: loss {stats['loss']:.3f}, WER {wer:.4f} (target {config.target_wer}), "
                  f"{stats['samples'] / stats['seconds']:.1f} utt/s, "
                  f"data wait {100 * stats['data_wait'] / stats['seconds']:.1f}%", flush=True)
            if wer <= config.target_wer:
                status = Status.SUCCESS
                break
    except NonFiniteError as error:
        print(f"error: {error}; stopping with status aborted", file=sys.stderr, flush=True)
    finally:
        log.event(Key.NONFINITE_STEPS_SKIPPED, training.nonfinite_skipped)
        log.end(Key.RUN_STOP, metadata={Key.STATUS: status, Key.EPOCH_NUM: epoch})
        log.close()
    return 0 if status == Status.SUCCESS else EXIT_ABORTED


def main(argv=None):
    return run(parse_config(argv, description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    sys.exit(main())
