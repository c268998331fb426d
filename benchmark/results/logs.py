"""Reads MLPerf training result logs, ours or anyone's, into one summary per run; never raises on bad input.

Records come from benchmark.mlperf_log.read_log (any text file; its `:::MLLOG {json}` lines), the timed
region from benchmark.mlperf_log.timed_region (the one rule: one run_start, at most one run_stop). The
quality target is the log's own target_wer for DeepSpeech2 and the official rule of the log's benchmark
and ruleset otherwise (benchmark.results.rules), evaluated by the rule's own expression, so dict-valued
qualities (maskrcnn's BBOX/SEGM, stable_diffusion's FID/CLIP) work. Everything odd is kept as a warning on
the run: unreadable files, truncated or garbage records, records without time or key, keys outside our
vocabulary (in DeepSpeech2 logs; other benchmarks have their own), two run_start or run_stop (status
'invalid'), a run without run_stop ('interrupted'), qualities of the wrong shape, and a 'success' run whose
quality never met the target. Whether a run counts in a score is decided by benchmark.results.scoring.
"""
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.mlperf_log import BENCHMARK_NAME, Key, Status, known_keys, read_log, timed_region
from benchmark.results import rules


@dataclass
class EvalPoint:
    minutes: float     # since run_start
    epoch: float       # epoch_num (or samples_count); None when neither is logged
    value: object      # a number, or a dict of numbers (multi-metric benchmarks)


@dataclass
class RunSummary:
    path: str
    benchmark: str = None
    platform: str = None
    division: str = None
    seed: object = None
    global_batch_size: object = None
    machine: dict = None         # the machine the log says it ran on (Key.MACHINE); None in older logs
    status: str = "unreadable"   # success | aborted | interrupted | invalid | no run_start | unreadable
    minutes: float = None        # run_stop - run_start
    epochs: float = None         # the last epoch_num (or samples_count) logged in the run
    progress_unit: str = "epochs"   # what `epochs` counts: epochs, or samples (BERT's epoch_num, samples_count)
    final_quality: object = None    # the last eval's quality
    target: float = None         # the target number, where the rule has one (curves); see target_text
    target_text: str = None      # the rule in words: "eval_accuracy <= 0.3", "BBOX >= 0.377, SEGM >= 0.339"
    lower_is_better: bool = True
    reached_target: bool = False     # some eval met the target
    converged: bool = False          # status success and the target reached
    evals: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _quality(value):
    """A number, or a dict of numbers; None for anything else."""
    if isinstance(value, dict):
        numbers = {k: _number(v) for k, v in value.items()}
        return numbers if numbers and None not in numbers.values() else None
    return _number(value)


def _first(records, key):
    return next((r.value for r in records if r.key == key), None)


def ds2_target(target_wer):
    """DeepSpeech2's quality rule: the corpus WER at most the log's own target_wer."""
    return rules.QualityTarget(Key.EVAL_ACCURACY, f"v['value'] <= {target_wer!r}", (("", "<=", target_wer),))


def _target(run, records, ruleset):
    """The run's QualityTarget, or None (with a warning) when none is known."""
    if run.benchmark == BENCHMARK_NAME:
        target_wer = _number(_first(records, Key.TARGET_WER))
        if target_wer is None:
            run.warnings.append("no target_wer logged: convergence taken from run_stop status")
            return None
        return ds2_target(target_wer)
    try:
        return rules.quality_target(run.benchmark, ruleset, run.division or "closed") if ruleset else None
    except rules.RulesError as error:
        run.warnings.append(str(error))
        return None


def summarize_run(path, ruleset=None):
    """Reads one result log into a RunSummary (status 'unreadable' when it holds no usable records).
    `ruleset`: the round whose rules apply to another benchmark's log (DeepSpeech2 logs need none)."""
    records, warnings = read_log(path)
    run = RunSummary(str(path), warnings=warnings)
    if not records:
        run.warnings.append("no MLLOG records")
        return run
    run.benchmark = _first(records, Key.SUBMISSION_BENCHMARK)
    run.platform = _first(records, Key.SUBMISSION_PLATFORM)
    run.division = _first(records, Key.SUBMISSION_DIVISION)
    run.seed = _first(records, Key.SEED)
    run.global_batch_size = _first(records, Key.GLOBAL_BATCH_SIZE)
    machine = _first(records, Key.MACHINE)
    run.machine = machine if isinstance(machine, dict) else None
    if run.benchmark == BENCHMARK_NAME:   # other benchmarks have keys of their own: their rules judge them
        foreign = sorted({r.key for r in records} - known_keys())
        if foreign:
            run.warnings.append(f"keys unknown to mllog and this benchmark, ignored: {', '.join(foreign)}")
    elif run.benchmark and not ruleset:
        run.warnings.append(f"{run.benchmark} log and no ruleset given (--ruleset): its quality target is unknown")
    target = _target(run, records, ruleset)
    if target is not None:
        run.target_text = target.describe()
        run.lower_is_better = target.lower_is_better is not False
        run.target = target.thresholds[0][2] if len(target.thresholds) == 1 else None
    if any(r.key == Key.RESUME for r in records):
        run.warnings.append("resumed after an interruption: the time includes the downtime; not a valid result")

    region = timed_region(records)
    if region.start is None:
        run.status = "no run_start"
        run.warnings.append("no run_start: no time to train")
        return run
    if region.problems:
        run.status = "invalid"
        run.warnings += [f"invalid log: {problem}" for problem in region.problems]
    elif region.stop is None:
        run.status = "interrupted"
        run.warnings.append("no run_stop: the run was interrupted")
    else:
        run.minutes = region.milliseconds / 60_000
        run.status = str(region.status or "no status").lower()
        if region.status is None:
            run.warnings.append(f"line {region.stop.line}: run_stop without status")
    start_ms = region.start.time_ms
    end_ms = region.stop.time_ms if region.stop is not None and not region.problems else math.inf
    in_run = [r for r in records if start_ms <= r.time_ms <= end_ms]
    header = {r.key: r.value for r in records if r.time_ms < start_ms}
    _collect_evals(run, in_run, start_ms, target, header)
    if run.evals and any(e.epoch is not None for e in run.evals):
        run.epochs = max(e.epoch for e in run.evals if e.epoch is not None)
    else:
        epochs = [_number(r.metadata.get(Key.EPOCH_NUM)) for r in in_run if r.key in (Key.EPOCH_START, Key.EPOCH_STOP)]
        run.epochs = max((e for e in epochs if e is not None), default=None)
    if run.benchmark and run.benchmark != BENCHMARK_NAME and ruleset and run.progress_unit == "epochs":
        run.progress_unit = rules.progress_unit(run.benchmark, ruleset)
    run.converged = run.status == Status.SUCCESS and (target is None or run.reached_target)
    if run.status == Status.SUCCESS and not run.converged:
        run.warnings.append(f"status success but no eval met the target ({run.target_text}; last "
                            f"{run.final_quality}): counted as not converged")
    return run


def _collect_evals(run, records, start_ms, target, header):
    key = target.key if target is not None else Key.EVAL_ACCURACY
    skipped = 0
    for r in records:
        if r.key != key:
            continue
        value = _quality(r.value)
        if value is None:
            skipped += 1
            continue
        epoch = _number(r.metadata.get(Key.EPOCH_NUM))
        if epoch is None:
            epoch = _number(r.metadata.get(Key.SAMPLES_COUNT))
            if epoch is not None:
                run.progress_unit = "samples"
        run.evals.append(EvalPoint((r.time_ms - start_ms) / 60_000, epoch, value))
        if target is not None and target.met_by(value, header):
            run.reached_target = True
    if skipped:
        run.warnings.append(f"{skipped} {key} values are neither numbers nor dicts of numbers; left out")
    if run.evals:
        run.final_quality = run.evals[-1].value
    else:
        run.warnings.append(f"no usable {key} inside the run")


def _natural(path):
    """result_2 before result_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


RESULT_PATTERN = "result_*.txt"   # what mlperf_logging's summarizer and checkers read in a folder


def result_logs(folder):
    """The result logs of one folder, in natural order."""
    return sorted(Path(folder).glob(RESULT_PATTERN), key=_natural)


def find_systems(results_dir):
    """{system name: [log paths]}: each subfolder with logs is a system; a folder of logs is one system."""
    results_dir = Path(results_dir)
    own = result_logs(results_dir)
    if own:
        return {results_dir.resolve().name: own}
    return {sub.name: result_logs(sub) for sub in sorted(p for p in results_dir.iterdir() if p.is_dir())
            if result_logs(sub)}
