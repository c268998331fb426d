"""The MLPerf vocabulary of this benchmark, the log writer (rank 0) and the one reader of `:::MLLOG` lines.

Every key the project writes or reads is a name of `Key` (mllog's own keys under mllog's names, checked
against `mlperf_logging.mllog.constants` by the tests, then this benchmark's); `Status` holds run_stop's
statuses. A run logs, in this order:
  cache_clear, init_start, submission_*, seed, global_batch_size, opt_* hyperparameters, target_wer,
  train_samples, eval_samples, model_config, init_stop, run_start, per epoch [epoch_start, epoch_stop,
  train_loss, data_wait_seconds, train_throughput, eval_start, eval_accuracy (WER as a fraction),
  eval_stop], then nonfinite_steps_skipped and run_stop (metadata status); a resumed run adds `resume`
  after init_start.
  `machine` (between init_start and init_stop) records the machine the run ran on; with
  --skip_bad_utterances, `skipped_utterances` (there too) counts the manifest rows the preflight dropped.
The log file is the run's result file (results/<system>/result_<n>.txt), never next to the source.

Which run_start and run_stop count: `timed_region(records)`, the one rule every reader uses (report, RESULT
line, measuring scripts): a valid log has exactly one run_start and at most one run_stop after it; a log
with two of either is invalid (a resumed run, a forged or duplicated event) and has no time to train.

Reading: `read_log(path)` is the one parser of result logs (ours or anyone's), used by the report, the
compliance tool, the launchers' RESULT line (scripts/mllog_seconds.py) and the measuring scripts. A line
is a record when it holds `:::MLLOG {json}`; text before the token (`0: `, `[1,0]<stdout>:` prefixes of
launchers) is ignored, as mlperf_logging's own parser does. It never raises on bad input: unreadable
files, truncated or garbage records and records without key or time become warnings.

Only the standard library is imported here (mllog itself when a writer is made), so the launchers and
dry runs can read logs and keys without the training's dependencies.
"""
from dataclasses import dataclass
import json
import logging
import os

BENCHMARK_NAME = "deepspeech2"
TOKEN = ":::MLLOG"


class Key:
    """Every MLLOG key this project writes or reads."""
    # mllog's keys (mlperf_logging.mllog.constants, same names and values)
    CACHE_CLEAR = "cache_clear"
    INIT_START = "init_start"
    INIT_STOP = "init_stop"
    RUN_START = "run_start"
    RUN_STOP = "run_stop"
    EPOCH_START = "epoch_start"
    EPOCH_STOP = "epoch_stop"
    EVAL_START = "eval_start"
    EVAL_STOP = "eval_stop"
    EVAL_ACCURACY = "eval_accuracy"
    SUBMISSION_BENCHMARK = "submission_benchmark"
    SUBMISSION_ORG = "submission_org"
    SUBMISSION_DIVISION = "submission_division"
    SUBMISSION_STATUS = "submission_status"
    SUBMISSION_PLATFORM = "submission_platform"
    SEED = "seed"
    GLOBAL_BATCH_SIZE = "global_batch_size"
    OPT_NAME = "opt_name"
    OPT_BASE_LR = "opt_base_learning_rate"
    OPT_WEIGHT_DECAY = "opt_weight_decay"
    OPT_GRADIENT_CLIP_NORM = "opt_gradient_clip_norm"
    OPT_LR_WARMUP_STEPS = "opt_learning_rate_warmup_steps"
    OPT_LR_TRAINING_STEPS = "opt_learning_rate_training_steps"
    OPT_ADAMW_BETA_1 = "opt_adamw_beta_1"
    OPT_ADAMW_BETA_2 = "opt_adamw_beta_2"
    OPT_ADAMW_EPSILON = "opt_adamw_epsilon"
    OPT_ADAMW_WEIGHT_DECAY = "opt_adamw_weight_decay"
    TRAIN_SAMPLES = "train_samples"
    EVAL_SAMPLES = "eval_samples"
    # mllog's metadata keys
    EPOCH_NUM = "epoch_num"
    SAMPLES_COUNT = "samples_count"
    STATUS = "status"
    # this benchmark's keys
    TARGET_WER = "target_wer"
    DATA_WAIT_SECONDS = "data_wait_seconds"     # time the training loop waited for batches in one epoch
    # one epoch's useful model TFLOP/s (benchmark/flops.py); metadata: utt/s, audio s/s, useful and padded
    # TFLOP, the job's measured matmul peak at the run's precision and the fraction of it reached
    TRAIN_THROUGHPUT = "train_throughput"
    TRAIN_LOSS = "train_loss"
    NONFINITE_STEPS_SKIPPED = "nonfinite_steps_skipped"
    RESUME = "resume"                           # a resumed run: {"checkpoint": path or None, "epoch": last done}
    MODEL_CONFIG = "model_config"               # model flags, backend, world size, threads, device, process group
    OPT_LR_SCHEDULE = "opt_lr_schedule"
    OPT_MOMENTUM = "opt_momentum"
    MACHINE = "machine"                         # the machine's identity (benchmark.results.system_desc)
    # --skip_bad_utterances: rows the preflight dropped (benchmark/preflight.py); value the total,
    # metadata {"train": n, "eval": n}
    SKIPPED_UTTERANCES = "skipped_utterances"
    # read in other benchmarks' logs
    TARGET_ACCURACY = "target_accuracy"


class Status:
    """run_stop's metadata status."""
    SUCCESS = "success"
    ABORTED = "aborted"


OWN_KEYS = frozenset(v for k, v in vars(Key).items() if k.isupper())


def known_keys():
    """Keys a reader need not warn about: mllog's whole vocabulary (when installed) and ours."""
    try:
        from mlperf_logging.mllog import constants
    except ImportError:
        return OWN_KEYS
    return OWN_KEYS | {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)}


# ------------------------------------------------------------------------------------------- reading
@dataclass
class Record:
    line: int          # 1-based line number in the file
    time_ms: float
    key: str
    value: object
    metadata: dict


def token_lines(path):
    """(1-based line number, text after the token, is the file's last line) of every line holding
    `:::MLLOG`, in file order. Raises OSError when the file cannot be read."""
    with open(path, encoding="utf-8", errors="replace") as f:   # universal newlines, as the checker reads
        text = f.read()
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [(number, line.split(TOKEN, 1)[1].strip(), number == len(lines))
            for number, line in enumerate(lines, 1) if TOKEN in line]


def read_log(path):
    """(records, warnings) of one log file, records in file order; never raises."""
    records, warnings = [], []
    try:
        lines = token_lines(path)
    except OSError as error:
        return [], [f"cannot read {path}: {error.strerror or error}"]
    for number, text, last in lines:
        where = f"line {number}" + (" (last line: truncated?)" if last else "")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            warnings.append(f"{where}: unreadable MLLOG record {text[:60]!r}")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            warnings.append(f"{where}: MLLOG record without a key")
            continue
        try:
            time_ms = float(data["time_ms"])
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{where}: MLLOG record '{data['key']}' without a valid time_ms")
            continue
        metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        records.append(Record(number, time_ms, data["key"], data.get("value"), metadata))
    return records, warnings


@dataclass
class TimedRegion:
    """The run_start -> run_stop pair of one log, by the one rule (see the module docstring)."""
    start: Record = None
    stop: Record = None
    problems: list = None   # why the log has no valid timed region; empty when it has one

    @property
    def valid(self):
        return not self.problems and self.start is not None

    @property
    def status(self):
        """run_stop's status (None without a run_stop or status)."""
        return None if self.stop is None else self.stop.metadata.get(Key.STATUS)

    @property
    def milliseconds(self):
        """run_stop - run_start; None unless the region is valid and closed."""
        return self.stop.time_ms - self.start.time_ms if self.valid and self.stop is not None else None


def timed_region(records):
    """TimedRegion of a log's records. Problems: no run_start, more than one run_start or run_stop, a
    run_stop before run_start. A missing run_stop (an interrupted run) is not a problem here: stop is None."""
    starts = [r for r in records if r.key == Key.RUN_START]
    stops = [r for r in records if r.key == Key.RUN_STOP]
    problems = []
    if not starts:
        problems.append("no run_start")
    for key, found in ((Key.RUN_START, starts), (Key.RUN_STOP, stops)):
        if len(found) > 1:
            problems.append(f"{len(found)} {key} records (lines {', '.join(str(r.line) for r in found)}): "
                            "a valid log has one")
    start, stop = (starts or [None])[0], (stops or [None])[0]
    if start is not None and stop is not None and stop.time_ms < start.time_ms:
        problems.append(f"run_stop (line {stop.line}) before run_start (line {start.line})")
    return TimedRegion(start, stop, problems)


# ------------------------------------------------------------------------------------------- writing
class MLPerfLogger:
    """Logs mllog events on rank 0 to `log_file` (and stdout); a no-op on other ranks."""

    def __init__(self, log_file=None, rank=0, echo=True):
        self.enabled = rank == 0
        self._logger = None
        if not self.enabled:
            return
        from mlperf_logging import mllog
        if log_file:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        # mllog logs to the root 'mllog' logger; a fresh handler per run keeps tests independent.
        mllog.config(filename=log_file or os.devnull, default_stack_offset=2)
        self._logger = mllog.get_mllogger()
        self._logger.logger.propagate = False
        if not echo:
            for handler in list(self._logger.logger.handlers):
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    self._logger.logger.removeHandler(handler)

    def event(self, key, value=None, metadata=None):
        if self.enabled:
            self._logger.event(key=key, value=value, metadata=metadata or {})

    def start(self, key, value=None, metadata=None):
        if self.enabled:
            self._logger.start(key=key, value=value, metadata=metadata or {})

    def end(self, key, value=None, metadata=None):
        if self.enabled:
            self._logger.end(key=key, value=value, metadata=metadata or {})

    def close(self):
        """Flush and detach the file handler so the next run in this process writes its own file."""
        if self.enabled:
            for handler in list(self._logger.logger.handlers):
                handler.flush()
                if isinstance(handler, logging.FileHandler):
                    handler.close()
                    self._logger.logger.removeHandler(handler)

    def submission_info(self, org, platform, division="closed", status="onprem"):
        self.event(Key.SUBMISSION_BENCHMARK, BENCHMARK_NAME)
        self.event(Key.SUBMISSION_ORG, org)
        self.event(Key.SUBMISSION_DIVISION, division)
        self.event(Key.SUBMISSION_STATUS, status)
        self.event(Key.SUBMISSION_PLATFORM, platform)
