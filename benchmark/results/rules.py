"""The MLPerf training rules per benchmark and ruleset version, read from mlperf_logging's own rule files and
code, with DeepSpeech2's entry beside them; and the official olympic score of a folder of result logs.

Where each rule comes from (mlperf-logging 4.1.68, rulesets 0.7.0 to 6.1.0):
  quality target and direction   compliance_checker/training_<ruleset>/<division>_<benchmark>.yaml: the
                                 ATLEAST_ONE_CHECK of eval_accuracy (aggregated_eval_accuracy for
                                 stable_diffusion), kept verbatim and evaluated as the checker does
  benchmarks of a round          benchmark_meta.get_allowed_benchmarks (the summarizer's columns)
  runs required                  benchmark_meta.get_result_file_counts (package_checker wants exactly these)
  runs dropped / failures        result_summarizer._compute_strong_score_standalone itself: `official_score`
                                 calls it (drops, failed runs counted as the slowest, scaling.json), and
                                 `dropped_each_end` asks it how many failures it tolerates
  convergence unit               the official RCP files (rcp_checker/training_<ruleset>/rcps_<benchmark>.json):
                                 where their "epochs" run into the thousands, epoch_num counts samples (BERT)
DeepSpeech2 (never an MLPerf round benchmark) follows its own rules: compliance/*.yaml checked on top of
training_4.1.0/common.yaml (benchmark.results.compliance), the target is the log's own target_wer (lower is
better), 5 runs, and the summarizer's drop rule for any benchmark but unet3d (one run each end).
"""
import contextlib
import functools
import io
import json
import os
import re
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import yaml
from mlperf_logging import benchmark_meta
from mlperf_logging.compliance_checker import mlp_compliance
from mlperf_logging.compliance_checker.mlp_parser import parse_file
from mlperf_logging.result_summarizer import result_summarizer

from benchmark.mlperf_log import BENCHMARK_NAME
from benchmark.results.compliance import RULESET

USAGE = "training"
DS2_RULESET = RULESET           # the ruleset whose common.yaml our compliance rules extend
DS2_RUNS_REQUIRED = 5
CHECKER_DIR = Path(mlp_compliance.__file__).parent
RCP_DIR = CHECKER_DIR.parent / "rcp_checker"
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?|s\['\w+'\])"
_VALUE = r"v\['value'\](?:\['(\w+)'\])?"
_VALUE_FIRST = re.compile(_VALUE + r"\s*(>=|<=|>|<)\s*" + _NUMBER)    # v['value'] >= 0.34
_NUMBER_FIRST = re.compile(_NUMBER + r"\s*(>=|<=|>|<)\s*" + _VALUE)   # 0.0 <= v['value']['FID'] <= 90.0
# No MLPerf benchmark trains 100,000 epochs (unet3d's ~2,000 are real ones): an official RCP whose "epochs"
# are larger counts samples (BERT's epoch_num is the number of training samples seen).
SAMPLE_COUNT_RCP = 100_000
_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}


class RulesError(ValueError):
    """No official rules for this benchmark and ruleset (the checker would crash or refuse)."""


@dataclass(frozen=True)
class QualityTarget:
    key: str                 # the log key holding the quality (eval_accuracy, aggregated_eval_accuracy)
    expression: str          # the rule file's ATLEAST_ONE_CHECK, verbatim (ours for DeepSpeech2)
    thresholds: tuple        # ((sub-key or "", operator, number), ...): the target comparisons
    begin: str = ""          # the rule file's BEGIN code (defines s['target_accuracy'] where used)

    @property
    def lower_is_better(self):
        """True/False when every comparison agrees (stable_diffusion mixes FID <= and CLIP >=: None)."""
        sides = {op.startswith("<") for _, op, _ in self.thresholds}
        return sides.pop() if len(sides) == 1 else None

    def describe(self):
        text = ", ".join(f"{sub or self.key} {op} {number:g}" for sub, op, number in self.thresholds)
        return text + (" (or as the rule says for the log's header: " + self.expression + ")"
                       if " if " in self.expression else "")

    def met_by(self, value, header=None):
        """Whether one logged quality value meets the target, by the rule's own expression. `header`: the
        log's header values (global_batch_size, ...) that rules read from the checker's state s."""
        state = {}
        if self.begin:
            exec(self.begin, {"s": state})   # noqa: S102 - the installed rule file's own code, as the checker runs it
        state.update(header or {})
        try:
            return bool(eval(self.expression, {"s": state, "math": __import__("math")},   # noqa: S307
                             {"v": {"value": value, "metadata": {}}}))
        except Exception:   # a value of the wrong shape (a number where the rule reads a dict, ...)
            return False


@dataclass(frozen=True)
class BenchmarkRules:
    benchmark: str
    ruleset: str
    division: str
    target: QualityTarget    # None for DeepSpeech2: each log names its own target_wer
    runs_required: int
    dropped_each_end: int    # = failures (non-converged or non-compliant runs) tolerated
    progress_unit: str       # what epoch_num counts: "epochs" or "samples"
    source: str

    def describe(self):
        target = self.target.describe() if self.target else "eval_accuracy (WER) <= the log's target_wer"
        return (f"{self.benchmark} {self.division} {USAGE} {self.ruleset}: target {target}; "
                f"{self.runs_required} runs, {self.dropped_each_end} dropped at each end, up to "
                f"{self.dropped_each_end} failed; from {self.source}")


def _version(ruleset):
    return tuple(map(int, ruleset.split(".")))


def _ruleset_of(folder):
    """'4.1.0' of a training_4.1.0 folder; None for others (training_0.7.0_warn)."""
    name = folder.name.split("_", 1)[1]
    return name if re.fullmatch(r"\d+\.\d+\.\d+", name) else None


def rulesets():
    """The training rulesets mlperf_logging ships rule files for, oldest first."""
    return sorted(filter(None, map(_ruleset_of, CHECKER_DIR.glob(f"{USAGE}_*"))), key=_version)


def rule_file(benchmark, ruleset, division="closed"):
    return CHECKER_DIR / f"{USAGE}_{ruleset}" / f"{division}_{benchmark}.yaml"


def official_common(ruleset):
    """The top rule file the summarizer checks every log with."""
    return CHECKER_DIR / f"{USAGE}_{ruleset}" / "common.yaml"


def quality_target(benchmark, ruleset, division="closed"):
    """The target of `benchmark` under `ruleset`, from its rule file; RulesError when it has none."""
    path = rule_file(benchmark, ruleset, division)
    if not path.is_file():
        raise RulesError(f"mlperf_logging has no {path.name} for {USAGE} {ruleset}: "
                         f"its checker cannot check a {benchmark} log of that round")
    records = yaml.load(path.read_text(), Loader=yaml.BaseLoader) or []   # as the checker reads them
    begin = next((r["BEGIN"].get("CODE", "") for r in records if "BEGIN" in r), "")
    for record in records:
        key = record.get("KEY") or {}
        if "ATLEAST_ONE_CHECK" in key:
            expression = key["ATLEAST_ONE_CHECK"].strip()
            return QualityTarget(key["NAME"], expression, _thresholds(expression, begin), begin.strip())
    raise RulesError(f"{path} has no ATLEAST_ONE_CHECK: {ruleset} does not check the quality of {benchmark}")


def _thresholds(expression, begin):
    """The target comparisons of an ATLEAST_ONE_CHECK: per sub-key the first comparison that is not the
    0.0 / 1.0 sanity bound, as (sub-key, operator on the value, number)."""
    comparisons = [(m.start(), m.group(1) or "", m.group(2), m.group(3)) for m in _VALUE_FIRST.finditer(expression)]
    comparisons += [(m.start(), m.group(3) or "", _FLIP[m.group(2)], m.group(1))
                    for m in _NUMBER_FIRST.finditer(expression)]
    found = {}
    for _, sub, op, number in sorted(comparisons):
        if number.startswith("s["):   # s['target_accuracy'], set by the file's BEGIN code
            state = {}
            exec(begin, {"s": state})   # noqa: S102 - the installed rule file's own code
            number = state[number[3:-2]]
        number = float(number)
        if number not in (0.0, 1.0):
            found.setdefault(sub, (sub, op, number))
    return tuple(found.values())


def runs_required(benchmark):
    if benchmark == BENCHMARK_NAME:
        return DS2_RUNS_REQUIRED
    counts = benchmark_meta.get_result_file_counts(USAGE)
    if benchmark not in counts:
        raise RulesError(f"mlperf_logging's benchmark_meta has no result file count for {benchmark}")
    return counts[benchmark]


@functools.lru_cache(maxsize=None)
def dropped_each_end(benchmark):
    """How many failed runs result_summarizer tolerates for `benchmark` (it drops as many runs at each end),
    found by asking its scoring function: 20 runs, of which k fail, until it refuses to score."""
    with tempfile.TemporaryDirectory() as folder:
        for n in range(20):
            Path(folder, f"result_{n}.txt").touch()
        tolerated = 0
        for failing in range(1, 10):
            def read(path, usage, ruleset, failing=failing):
                n = int(Path(path).stem.split("_")[1])
                if n < failing:
                    raise ValueError("did not converge")
                return [SimpleNamespace(key="run_start", timestamp=0.0),
                        SimpleNamespace(key="run_stop", timestamp=60_000.0 * (n + 1))]
            score, *_ = _summarizer_score(benchmark, folder, DS2_RULESET, read)
            if score is None:
                break
            tolerated = failing
        return tolerated


@functools.lru_cache(maxsize=None)
def progress_unit(benchmark, ruleset):
    """What a log's eval epoch_num counts under `ruleset`: 'samples' where the official RCPs of that round
    (else of the latest earlier round that has some) count convergence in samples (BERT; unet3d from 3.1.0
    on; see SAMPLE_COUNT_RCP), else 'epochs'. Logs with samples_count instead say so themselves."""
    candidates = [p for p in RCP_DIR.glob(f"{USAGE}_*/rcps_{benchmark}.json")
                  if _version(_ruleset_of(p.parent)) <= _version(ruleset)]
    if not candidates:
        return "epochs"
    path = max(candidates, key=lambda p: _version(_ruleset_of(p.parent)))
    records = json.loads(path.read_text()).values()
    if any("samples to converge" in r for r in records):
        return "samples"
    values = [v for r in records for v in r.get("Epochs to converge", [])]
    return "samples" if values and statistics.median(values) >= SAMPLE_COUNT_RCP else "epochs"


def rules_for(benchmark, ruleset=None, division="closed"):
    """BenchmarkRules of `benchmark` under `ruleset` (DeepSpeech2: its own); RulesError when unknown."""
    if benchmark == BENCHMARK_NAME:
        return BenchmarkRules(benchmark, ruleset or DS2_RULESET, division, None, DS2_RUNS_REQUIRED,
                              dropped_each_end(benchmark), "epochs",
                              f"compliance/*.yaml over {USAGE}_{DS2_RULESET}/common.yaml (ds2perf)")
    if ruleset is None:
        raise RulesError(f"{benchmark}: give the ruleset (round) its logs follow, e.g. --ruleset 4.1.0")
    if ruleset not in rulesets():
        raise RulesError(f"mlperf_logging has no {USAGE} ruleset {ruleset} (it has {', '.join(rulesets())})")
    allowed = benchmark_meta.get_allowed_benchmarks(USAGE, ruleset)
    if benchmark not in allowed:
        raise RulesError(f"{benchmark} is not a benchmark of {USAGE} {ruleset} ({', '.join(sorted(set(allowed)))})")
    return BenchmarkRules(benchmark, ruleset, division, quality_target(benchmark, ruleset, division),
                          runs_required(benchmark), dropped_each_end(benchmark), progress_unit(benchmark, ruleset),
                          f"mlperf_logging {rule_file(benchmark, ruleset, division).relative_to(CHECKER_DIR.parent)}")


# ------------------------------------------------------------------------------------------- scoring
@dataclass
class OfficialScore:
    score_minutes: float     # None: too many failures, or nothing left after the drops
    minutes: dict            # {path: minutes} of the runs that count
    scaling_factor: float    # from the folder's scaling.json (1.0 without)
    printed: list            # the summarizer's own messages (NOTICE, CRITICAL ERROR, ...)


@contextlib.contextmanager
def _summarizer_reader(read):
    original = result_summarizer._read_result_file
    result_summarizer._read_result_file = read
    try:
        yield
    finally:
        result_summarizer._read_result_file = original


def _summarizer_score(benchmark, folder, ruleset, read):
    printed = io.StringIO()
    with _summarizer_reader(read), contextlib.redirect_stdout(printed):
        minutes, _, score, _, factor = result_summarizer._compute_strong_score_standalone(
            benchmark, Path(folder).name, False, str(folder), USAGE, ruleset, {"submitter": None},
            return_full_scores=True)
    return score, minutes, factor, printed.getvalue().splitlines()


def official_score(folder, benchmark, ruleset, failures):
    """result_summarizer's strong-scaling score of folder/result_*.txt, computed by its own function.

    `failures`: {absolute path: reason} of the runs that do not count (non-compliant or not converged, as
    decided by the caller with the official checker or ours); every other log is parsed by mlperf_logging's
    parser and timed by the summarizer (run_stop - run_start). The function reads scaling.json as the
    summarizer does; the package is never written to (the summarizer's RCP pass, which rewrites
    scaling.json, is not run: benchmark.results.rcp gives that verdict)."""
    def read(path, usage, ruleset):
        reason = failures.get(os.path.abspath(path))
        if reason:
            raise ValueError(reason)
        loglines, errors = parse_file(path, ruleset=ruleset)
        if errors:
            raise ValueError("Parse error")
        return loglines
    score, minutes, factor, printed = _summarizer_score(benchmark, folder, ruleset, read)
    return OfficialScore(score, {os.path.abspath(p): m for p, m in minutes.items()}, float(factor), printed)

