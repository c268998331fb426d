"""The reference's flags: the subset of benchmark.train's that the plain implementation has, same names.

No --data_backend (always the torch DataLoader), no --amp (always float32), no distributed flags and no
checkpoints. Values are checked by benchmark.config's rules, so both implementations reject the same
inputs with the same messages.
"""
from dataclasses import dataclass, field, fields
import os

from benchmark.config import TrainConfig, build_parser


def _f(default, help, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ReferenceConfig:
    # Data
    train_data_dir: str = _f("", "training manifest CSV(s) `wav_filename,wav_filesize,transcript`, comma-separated")
    eval_data_dir: str = _f("", "evaluation manifest CSV(s), comma-separated")
    max_duration: float = _f(0.0, "drop training utterances longer than this many seconds (0: keep all)")
    features: str = _f("spectrogram", "input features: 161-bin log spectrogram, or log-mel", ["spectrogram", "logmel"])
    n_mels: int = _f(80, "mel bins when --features logmel")
    num_workers: int = _f(-1, "DataLoader worker processes (-1: one per core but one, 0: in the main process)")
    # Model
    rnn_type: str = _f("lstm", "recurrent cell of the bidirectional stack", ["lstm", "gru"])
    rnn_hidden_size: int = _f(800, "hidden units per direction in each recurrent layer")
    rnn_layers: int = _f(5, "number of bidirectional recurrent layers")
    conv_channels: int = _f(32, "channels of both convolution layers")
    time_stride: int = _f(2, "total time subsampling of the conv front end: 2 (DS2 paper) or 4", [2, 4])
    # Optimization
    batch_size: int = _f(32, "utterances per step")
    eval_batch_size: int = _f(64, "utterances per evaluation step")
    learning_rate: float = _f(3e-3, "peak learning rate")
    optimizer: str = _f("adamw", "optimizer", ["adamw", "sgd"])
    momentum: float = _f(0.9, "SGD momentum (--optimizer sgd)")
    weight_decay: float = _f(1e-2, "decoupled weight decay (AdamW) or L2 (SGD)")
    lr_schedule: str = _f("onecycle", "onecycle: linear warm-up then cosine decay over --schedule_epochs; "
                          "constant: fixed rate after warm-up", ["onecycle", "constant"])
    warmup_fraction: float = _f(0.1, "fraction of the schedule spent warming up")
    schedule_epochs: int = _f(0, "epochs the one-cycle schedule spans (0: --max_epochs)")
    grad_clip_norm: float = _f(5.0, "clip the global gradient norm to this (0: off)")
    sortagrad: bool = _f(True, "first epoch in order of increasing duration, later epochs shuffled batch-wise")
    # Run control
    target_wer: float = _f(0.23, "stop with status success once the evaluation WER is at most this fraction")
    max_epochs: int = _f(50, "stop with status aborted after this many epochs without reaching the target")
    seed: int = _f(1, "random seed")
    num_gpus: int = _f(-1, "0: train on the CPU; -1 or more: on the first GPU when there is one (one process)")
    num_threads: int = _f(0, "torch intra-op threads (0: all cores)")
    max_nonfinite_steps: int = _f(10, "abort after this many consecutive steps with non-finite loss or gradients")
    # Files
    output_dir: str = _f("runs/reference", "folder for the run's files (MLPerf log unless --log_file)")
    log_file: str = _f("", "MLPerf log path (default: OUTPUT_DIR/mlperf_log.txt)")
    system: str = _f("CPU", "system name written as submission_platform")
    log_every: int = _f(50, "print training progress every N steps (0: never)")

    def resolved_log_file(self):
        return self.log_file or os.path.join(self.output_dir, "mlperf_log.txt")

    def workers(self):
        return self.num_workers if self.num_workers >= 0 else max(1, (os.cpu_count() or 1) - 1)

    def validate(self):
        """Raise ValueError naming the flag (benchmark.config's rules on the shared flags)."""
        shared = {f.name for f in fields(TrainConfig)}
        TrainConfig(**{f.name: getattr(self, f.name) for f in fields(self) if f.name in shared}).validate()
        return self


def parse_config(argv=None, description=None):
    """argv -> validated ReferenceConfig; argparse exits with status 2 naming the flag on a bad value."""
    parser = build_parser(ReferenceConfig, description)
    config = ReferenceConfig(**vars(parser.parse_args(argv)))
    try:
        return config.validate()
    except ValueError as error:
        parser.error(str(error))


def flag_names():
    return [f.name for f in fields(ReferenceConfig)]
