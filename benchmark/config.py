"""Every hyperparameter of a training run: one dataclass, its defaults and help, and the CLI built from it.

`python -m benchmark.train --help` prints the fields below. Booleans take exactly `true` or `false`
(a config that says `AMP=:true` must fail loudly, not train in fp32). Validation happens before
`init_start` is logged, so a bad flag never produces a half log.
"""
import argparse
from dataclasses import dataclass, field, fields
import math
import os

from benchmark.data.backends import BACKENDS, CHOICES as BACKEND_CHOICES
from benchmark.optim import OPTIMIZERS


# benchmark.model.RNN_IMPLS' and CONV_LAYOUTS' names (this module imports no torch; tests/test_model.py
# checks they agree).
RNN_IMPLS = ("padded", "packed", "streams")
CONV_LAYOUTS = ("contiguous", "channels_last")


class ConfigError(ValueError):
    """A configuration no run can use, found before init_start (exit status 2); the message names the flag."""


def _f(default, help, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    # Data
    train_data_dir: str = _f("", "training manifest CSV(s) `wav_filename,wav_filesize,transcript`, comma-separated")
    eval_data_dir: str = _f("", "evaluation manifest CSV(s), comma-separated")
    max_duration: float = _f(0.0, "drop training utterances longer than this many seconds (0: keep all)")
    features: str = _f("spectrogram", "input features: 161-bin log spectrogram, or log-mel for small CPU models",
                       ["spectrogram", "logmel"])
    n_mels: int = _f(80, "mel bins when --features logmel")
    data_backend: str = _f("auto", "audio pipeline: DALI on GPU/CPU or the PyTorch DataLoader; auto = fastest available",
                           list(BACKEND_CHOICES))
    num_workers: int = _f(-1, "data loading worker processes/threads per rank (-1: one per spare core)")
    speed_perturbation: str = _f("", "play each training utterance at a speed drawn from LOW,HIGH (e.g. 0.9,1.1) by "
                                 "resampling at decode time; backends "
                                 + "|".join(b.name for b in BACKENDS.values() if b.speed_perturbation)
                                 + " only; empty: off")
    # Model
    rnn_type: str = _f("lstm", "recurrent cell of the bidirectional stack", ["lstm", "gru"])
    rnn_hidden_size: int = _f(800, "hidden units per direction in each recurrent layer")
    rnn_layers: int = _f(5, "number of bidirectional recurrent layers")
    conv_channels: int = _f(32, "channels of both convolution layers")
    time_stride: int = _f(2, "total time subsampling of the conv front end: 2 (DS2 paper) or 4 (faster, CPU)",
                          [2, 4])
    # Optimization
    batch_size: int = _f(32, "utterances per process per step; global batch = batch_size x world size")
    eval_batch_size: int = _f(64, "utterances per process per evaluation step")
    learning_rate: float = _f(3e-3, "peak learning rate")
    optimizer: str = _f("adamw", "optimizer", list(OPTIMIZERS))
    momentum: float = _f(0.9, "SGD momentum (--optimizer sgd)")
    weight_decay: float = _f(1e-2, "decoupled weight decay (AdamW) or L2 (SGD)")
    lr_schedule: str = _f("onecycle", "onecycle: linear warm-up then cosine decay over --schedule_epochs; "
                          "constant: fixed rate after warm-up", ["onecycle", "constant"])
    warmup_fraction: float = _f(0.1, "fraction of the schedule spent warming up")
    schedule_epochs: int = _f(0, "epochs the one-cycle schedule spans (0: --max_epochs)")
    grad_clip_norm: float = _f(5.0, "clip the global gradient norm to this (0: off)")
    amp: str = _f("off", "mixed precision autocast; fp16 adds a GradScaler; the CTC loss is always fp32",
                  ["off", "bf16", "fp16"])
    sortagrad: bool = _f(True, "first epoch in order of increasing duration, later epochs shuffled batch-wise")
    # Run control
    target_wer: float = _f(0.23, "stop with status success once the evaluation WER is at most this fraction")
    max_epochs: int = _f(50, "stop with status aborted after this many epochs without reaching the target")
    seed: int = _f(1, "random seed (same on every rank)")
    num_gpus: int = _f(-1, "GPUs per node: -1 all visible, 0 CPU only")
    num_threads: int = _f(0, "torch intra-op threads per process (0: cores / local processes)")
    max_nonfinite_steps: int = _f(10, "abort after this many consecutive steps with non-finite loss or gradients")
    dist_timeout: int = _f(600, "seconds a distributed collective waits for a missing rank before the run fails")
    # Files
    model_dir: str = _f("", "checkpoint folder (empty: no checkpoints)")
    output_dir: str = _f("runs/latest", "folder for the run's files (MLPerf log unless --log_file)")
    log_file: str = _f("", "MLPerf log path (default: OUTPUT_DIR/mlperf_log.txt)")
    resume: bool = _f(False, "continue from the latest checkpoint in --model_dir (fresh start when none)")
    eval_only: bool = _f(False, "only evaluate the latest checkpoint in --model_dir on --eval_data_dir, print "
                         "its WER as a JSON line and exit (no MLPerf log; no training manifest needed)")
    system: str = _f("CPU", "system name written as submission_platform")
    log_every: int = _f(50, "print training progress every N steps (0: never)")
    # Performance (appended, so the launch lines of existing configs stay as they were)
    rnn_impl: str = _f("padded", "implementation of the recurrent stack, same maths (benchmark/model.py): padded "
                       "per-direction calls, packed bidirectional calls, or the two directions on two CUDA "
                       "streams (GPU only)", list(RNN_IMPLS))
    conv_layout: str = _f("auto", "memory layout of the convolutions, same maths: channels_last (NHWC), contiguous "
                          "(NCHW), or auto: channels_last on the CPU (its step ran faster, "
                          "measure/step_throughput.py --conv_layouts), contiguous on GPUs (not measured there)",
                          ["auto", *CONV_LAYOUTS])
    process_group: str = _f("auto", "when to join a torch.distributed process group (nccl on GPU, gloo on CPU) and "
                            "train under DistributedDataParallel: auto, when torchrun starts more than one "
                            "process; always, for one process too (a one-GPU run then all-reduces its gradients "
                            "and WER counts over NCCL, as a multi-GPU run does)", ["auto", "always"])
    # Preflight (benchmark/preflight.py)
    skip_bad_utterances: bool = _f(False, "drop manifest rows the preflight finds bad (missing or non-16 kHz WAV, "
                                   "shorter than one window, wrong wav_filesize, characters outside the alphabet), "
                                   "print and count them and log the count (skipped_utterances), instead of "
                                   "stopping with an error naming the row")
    check_only: bool = _f(False, "check flags, device, backend and every manifest row (headers only), print a "
                          "one-line summary and exit: 0 when the run could start, 2 when not; no log is written")

    def resolved_log_file(self):
        return self.log_file or os.path.join(self.output_dir, "mlperf_log.txt")

    def speed_range(self):
        """--speed_perturbation as (low, high), or None when off. Raises ValueError naming the flag."""
        if not self.speed_perturbation:
            return None
        try:
            low, high = (float(v) for v in self.speed_perturbation.split(","))
        except ValueError:
            raise ValueError(f"--speed_perturbation: expected LOW,HIGH such as 0.9,1.1, "
                             f"got {self.speed_perturbation!r}") from None
        if not 0 < low <= high:
            raise ValueError(f"--speed_perturbation: need 0 < LOW <= HIGH, got {self.speed_perturbation!r}")
        return low, high

    def validate(self):
        """Raise ValueError naming the flag for values no run can use; manifests are checked by the loader."""
        def bad(flag, why):
            raise ValueError(f"--{flag}: {why}")
        for f in fields(self):   # NaN passes every comparison below (nan < 0 is False): reject it first
            if f.type is float and not math.isfinite(getattr(self, f.name)):
                bad(f.name, f"must be a finite number, got {getattr(self, f.name)}")
        if not self.train_data_dir and not self.eval_only:
            bad("train_data_dir", "required (a manifest CSV)")
        if not self.eval_data_dir:
            bad("eval_data_dir", "required (a manifest CSV)")
        for name in ("batch_size", "eval_batch_size", "rnn_hidden_size", "rnn_layers", "conv_channels",
                     "max_epochs", "n_mels", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                bad(name, f"must be a positive integer, got {getattr(self, name)}")
        if not (0.0 < self.target_wer < 1.0):
            bad("target_wer", f"must lie between 0 and 1 (a WER fraction), got {self.target_wer}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            bad("learning_rate", f"must be positive, got {self.learning_rate}")
        if not (0.0 <= self.warmup_fraction < 1.0):
            bad("warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        for name in ("weight_decay", "grad_clip_norm", "max_duration", "schedule_epochs"):
            if getattr(self, name) < 0:
                bad(name, f"must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            bad("momentum", f"must be in [0, 1), got {self.momentum}")
        for name, low in (("num_workers", -1), ("num_threads", 0), ("log_every", 0), ("seed", 0)):
            if getattr(self, name) < low:
                bad(name, f"must be at least {low}, got {getattr(self, name)}")
        if self.num_gpus < -1:
            bad("num_gpus", f"must be -1 (all), 0 (CPU) or a count, got {self.num_gpus}")
        self.speed_range()
        if self.resume and not self.model_dir:
            bad("resume", "needs --model_dir")
        if self.eval_only and not self.model_dir:
            bad("eval_only", "needs --model_dir (the checkpoint folder)")
        if self.dist_timeout < 1:
            bad("dist_timeout", f"must be a positive number of seconds, got {self.dist_timeout}")
        return self


def parse_bool(text):
    if text in ("true", "false"):
        return text == "true"
    raise argparse.ArgumentTypeError(f"expected exactly 'true' or 'false', got {text!r}")


def build_parser(cls=TrainConfig, description=None):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(cls):
        kind = parse_bool if f.type is bool else f.type
        parser.add_argument(f"--{f.name}", type=kind, default=f.default, choices=f.metadata["choices"],
                            metavar="true|false" if kind is parse_bool else None, help=f.metadata["help"])
    return parser


def parse_config(argv=None, cls=TrainConfig, description=None):
    """argv -> validated config; argparse exits with status 2 naming the flag on any bad value."""
    parser = build_parser(cls, description)
    config = cls(**vars(parser.parse_args(argv)))
    try:
        return config.validate()
    except ValueError as error:
        parser.error(str(error))
