"""Reads MLPerf training result logs, ours or anyone's, into one summary per run; never raises on bad input.

Records come from benchmark.mlperf_log.read_log (any text file; its `:::MLLOG {json}` lines). Everything
odd is kept as a warning on the run instead: unreadable files, truncated or garbage records, records without
time or key, keys that neither mllog nor this benchmark defines, repeated run_start or run_stop, a run
without run_stop (interrupted), non-numeric accuracies, and a 'success' run whose final quality misses the
target.
"""
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.mlperf_log import Key, Status, known_keys, read_log

# Quality targets of the MLPerf training benchmarks whose logs don't carry their own target, from the
# ATLEAST_ONE_CHECK lines of mlperf_logging's training_3.1.0/4.1.0 closed_<benchmark>.yaml rules.
# (target, True when lower is better)
KNOWN_TARGETS = {"resnet": (0.759, False), "ssd": (0.340, False), "bert": (0.720, False),
                 "rnnt": (0.058, True), "unet3d": (0.908, False), "gnn": (0.72, False),
                 "dlrm_dcnv2": (0.80275, False), "minigo": (0.5, False), "gpt3": (2.69, True),
                 "llama2_70b_lora": (0.925, True)}


@dataclass
class EvalPoint:
    minutes: float     # since run_start
    epoch: float       # epoch_num, or samples_count / train_samples; None when neither is logged
    value: float


@dataclass
class RunSummary:
    path: str
    benchmark: str = None
    platform: str = None
    seed: object = None
    status: str = "unreadable"   # success | aborted | interrupted (no run_stop) | no run_start | unreadable
    minutes: float = None        # run_stop - run_start
    epochs: float = None
    final_quality: float = None  # last eval_accuracy
    target: float = None
    lower_is_better: bool = True
    converged: bool = False
    evals: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _first(records, key):
    return next((r.value for r in records if r.key == key), None)


def summarize_run(path):
    """Reads one result log into a RunSummary (status 'unreadable' when it holds no usable records)."""
    records, warnings = read_log(path)
    run = RunSummary(str(path), warnings=warnings)
    if not records:
        run.warnings.append("no MLLOG records")
        return run
    run.benchmark = _first(records, Key.SUBMISSION_BENCHMARK)
    run.platform = _first(records, Key.SUBMISSION_PLATFORM)
    run.seed = _first(records, Key.SEED)
    foreign = sorted({r.key for r in records} - known_keys())
    if foreign:
        run.warnings.append(f"keys unknown to mllog and this benchmark, ignored: {', '.join(foreign)}")
    _set_target(run, records)

    starts = [r for r in records if r.key == Key.RUN_START]
    if not starts:
        run.status = "no run_start"
        run.warnings.append("no run_start: no time to train")
        return run
    if len(starts) > 1:
        run.warnings.append(f"{len(starts)} run_start records (lines {', '.join(str(r.line) for r in starts)}); "
                            "timing from the first")
    if any(r.key == Key.RESUME for r in records):
        run.warnings.append("resumed after an interruption: the time includes the downtime; not a valid result")
    start = starts[0]
    stops = [r for r in records if r.key == Key.RUN_STOP and r.time_ms >= start.time_ms]
    if len(stops) > 1:
        run.warnings.append(f"{len(stops)} run_stop records; using the first")
    if stops:
        run.minutes = (stops[0].time_ms - start.time_ms) / 60_000
        run.status = str(stops[0].metadata.get(Key.STATUS, "no status")).lower()
        if run.status == "no status":
            run.warnings.append(f"line {stops[0].line}: run_stop without status")
        end_ms = stops[0].time_ms
    else:
        run.status = "interrupted"
        run.warnings.append("no run_stop: the run was interrupted")
        end_ms = math.inf
    in_run = [r for r in records if start.time_ms <= r.time_ms <= end_ms]
    _collect_evals(run, in_run, start.time_ms, _number(_first(records, Key.TRAIN_SAMPLES)))
    epochs = [_number(r.metadata.get(Key.EPOCH_NUM)) for r in in_run
              if r.key in (Key.EPOCH_START, Key.EPOCH_STOP, Key.EVAL_ACCURACY)]
    epochs = [e for e in epochs if e is not None]
    run.epochs = max(epochs) if epochs else (run.evals[-1].epoch if run.evals else None)
    run.converged = run.status == Status.SUCCESS and _meets_target(run)
    if run.status == Status.SUCCESS and not run.converged:
        run.warnings.append(f"status success but the final quality {run.final_quality} misses the target "
                            f"{run.target}: counted as not converged")
    return run


def _set_target(run, records):
    target_wer = _number(_first(records, Key.TARGET_WER))
    target_accuracy = _number(_first(records, Key.TARGET_ACCURACY))
    if target_wer is not None:
        run.target, run.lower_is_better = target_wer, True
    elif run.benchmark in KNOWN_TARGETS:
        run.target, run.lower_is_better = KNOWN_TARGETS[run.benchmark]
    elif target_accuracy is not None:
        run.target, run.lower_is_better = target_accuracy, False
    else:
        run.warnings.append("no quality target known for this log: convergence taken from run_stop status")


def _collect_evals(run, records, start_ms, train_samples):
    skipped = 0
    for r in records:
        if r.key != Key.EVAL_ACCURACY:
            continue
        value = _number(r.value)
        if value is None:
            skipped += 1
            continue
        epoch = _number(r.metadata.get(Key.EPOCH_NUM))
        samples = _number(r.metadata.get(Key.SAMPLES_COUNT))
        if epoch is None and samples is not None and train_samples:
            epoch = samples / train_samples
        run.evals.append(EvalPoint((r.time_ms - start_ms) / 60_000, epoch, value))
    if skipped:
        run.warnings.append(f"{skipped} eval_accuracy values are not numbers; left out of the curves")
    if run.evals:
        run.final_quality = run.evals[-1].value
    else:
        run.warnings.append("no numeric eval_accuracy inside the run")


def _meets_target(run):
    if run.target is None:
        return True       # nothing to compare with: trust the status
    if run.final_quality is None:
        return False
    return run.final_quality <= run.target if run.lower_is_better else run.final_quality >= run.target


def _natural(path):
    """result_2 before result_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def find_systems(results_dir, pattern="result_*.txt"):
    """{system name: [log paths]}: each subfolder with logs is a system; a folder of logs is one system."""
    results_dir = Path(results_dir)
    own = sorted(results_dir.glob(pattern), key=_natural)
    if own:
        return {results_dir.resolve().name: own}
    systems = {}
    for sub in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        logs = sorted(sub.glob(pattern), key=_natural)
        if logs:
            systems[sub.name] = logs
    return systems
