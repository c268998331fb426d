"""Writes DeepSpeech2 result logs for tests through the project's real logger (benchmark.mlperf_log).

The only thing replaced is mllog's clock, so a test decides how long each phase of a run takes and the
scores are known in advance.
"""
import contextlib

from mlperf_logging.mllog import mllog as mllog_impl

from benchmark.mlperf_log import Key, MLPerfLogger, Status

START_MS = 1_700_000_000_000


class FakeClock:
    def __init__(self, now_ms):
        self.now_ms = now_ms

    def __call__(self):
        return int(self.now_ms)

    def advance(self, minutes):
        self.now_ms += minutes * 60_000


@contextlib.contextmanager
def fake_mllog_clock(start_ms):
    clock = FakeClock(start_ms)
    real = mllog_impl._current_time_ms
    mllog_impl._current_time_ms = clock
    try:
        yield clock
    finally:
        mllog_impl._current_time_ms = real


def write_run_log(path, wers, *, target_wer=0.30, status="auto", epoch_minutes=1.0, init_minutes=0.5,
                  seed=1, start_ms=START_MS, omit=(), duplicate=(), stop=True, benchmark_name=None,
                  run_stop_metadata=None, eval_samples=100, division="closed", machine=None, extra_evals=(),
                  global_batch_size=32):
    """One run: init, then per epoch train (epoch_minutes) and eval with the next WER of `wers`.

    status 'auto' logs success when the last WER meets the target, else aborted. omit: keys not logged;
    duplicate: keys logged twice; stop=False leaves the run without run_stop (an interrupted run).
    machine: the Key.MACHINE record (a system_desc identity), none by default (as in the published logs);
    extra_evals: (epoch, WER) eval_accuracy records added after the last eval (a forged one).
    """
    if status == "auto":
        status = Status.SUCCESS if wers and wers[-1] <= target_wer else Status.ABORTED
    logger = MLPerfLogger(str(path), echo=False)

    def log(kind, key, value=None, metadata=None):
        if key in omit:
            return
        for _ in range(2 if key in duplicate else 1):
            getattr(logger, kind)(key, value, metadata)

    with fake_mllog_clock(start_ms) as clock:
        log("event", Key.CACHE_CLEAR, True)
        log("start", Key.INIT_START)
        for key, value in [(Key.SUBMISSION_BENCHMARK, benchmark_name or "deepspeech2"),
                           (Key.SUBMISSION_ORG, "ds2perf"), (Key.SUBMISSION_DIVISION, division),
                           (Key.SUBMISSION_STATUS, "onprem"), (Key.SUBMISSION_PLATFORM, "CPU"),
                           (Key.SEED, seed), (Key.GLOBAL_BATCH_SIZE, global_batch_size),
                           (Key.OPT_NAME, "adamw"), (Key.OPT_BASE_LR, 5e-4),
                           (Key.OPT_WEIGHT_DECAY, 1e-5), (Key.OPT_ADAMW_BETA_1, 0.9),
                           (Key.OPT_ADAMW_BETA_2, 0.999), (Key.OPT_ADAMW_EPSILON, 1e-8),
                           (Key.OPT_GRADIENT_CLIP_NORM, 400.0), (Key.OPT_LR_WARMUP_STEPS, 100),
                           (Key.TARGET_WER, target_wer), (Key.TRAIN_SAMPLES, 1000),
                           (Key.EVAL_SAMPLES, eval_samples)]:
            log("event", key, value)
        if machine is not None:
            log("event", Key.MACHINE, machine)
        clock.advance(init_minutes)
        log("end", Key.INIT_STOP)
        log("start", Key.RUN_START)
        for epoch, wer in enumerate(wers, 1):
            meta = {"epoch_num": epoch}
            log("start", Key.EPOCH_START, metadata=meta)
            clock.advance(epoch_minutes * 0.9)
            log("event", Key.DATA_WAIT_SECONDS, 1.5, meta)
            log("event", Key.TRAIN_LOSS, 100.0 / epoch, meta)
            log("event", Key.NONFINITE_STEPS_SKIPPED, 0, meta)
            log("end", Key.EPOCH_STOP, metadata=meta)
            log("start", Key.EVAL_START, metadata=meta)
            clock.advance(epoch_minutes * 0.1)
            log("event", Key.EVAL_ACCURACY, wer, meta)
            log("end", Key.EVAL_STOP, metadata=meta)
        for epoch, wer in extra_evals:
            log("event", Key.EVAL_ACCURACY, wer, {"epoch_num": epoch})
        if stop:
            log("end", Key.RUN_STOP,
                metadata=run_stop_metadata if run_stop_metadata is not None else {"status": status})
    logger.close()
    return path
