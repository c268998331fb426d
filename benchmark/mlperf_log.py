"""Thin wrapper over mlperf-logging's `mllog`: rank 0 writes, everyone else is silent.

Every timing point of a run goes through here, so the event vocabulary lives in one place:
  cache_clear, init_start, submission_*, seed, global_batch_size, opt_* hyperparameters, target_wer,
  train_samples, eval_samples, init_stop, run_start, epoch_start/epoch_stop, eval_start,
  eval_accuracy (WER as a fraction, metadata epoch_num), eval_stop, run_stop (metadata status);
  resume (a resumed run's checkpoint and epoch).
The log file is the run's result file (results/<system>/result_<n>.txt), never next to the source.
"""
import logging
import os

from mlperf_logging import mllog
from mlperf_logging.mllog import constants

BENCHMARK_NAME = "deepspeech2"
# Benchmark-specific keys the common mllog constants don't have.
TARGET_WER = "target_wer"
DATA_WAIT_SECONDS = "data_wait_seconds"   # time the training loop waited for batches in one epoch
TRAIN_LOSS = "train_loss"
NONFINITE_STEPS_SKIPPED = "nonfinite_steps_skipped"
RESUME = "resume"   # resumed run: {"checkpoint": path or None, "epoch": last finished epoch}


class MLPerfLogger:
    """Logs mllog events on rank 0 to `log_file` (and stdout); a no-op on other ranks."""

    def __init__(self, log_file=None, rank=0, echo=True):
        self.enabled = rank == 0
        self._logger = None
        if not self.enabled:
            return
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
        self.event(constants.SUBMISSION_BENCHMARK, BENCHMARK_NAME)
        self.event(constants.SUBMISSION_ORG, org)
        self.event(constants.SUBMISSION_DIVISION, division)
        self.event(constants.SUBMISSION_STATUS, status)
        self.event(constants.SUBMISSION_PLATFORM, platform)
