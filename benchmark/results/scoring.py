"""The MLPerf score of one system's runs of one benchmark, by the official rules (benchmark.results.rules).

Which runs count: those whose log passes the compliance checker and that converged. DeepSpeech2 logs are
checked by mlperf_logging's checker with our rules (benchmark.results.compliance) and must end with
run_stop status success; other benchmarks' logs by the checker with the official rules of their ruleset,
exactly as result_summarizer does (it ignores the run_stop status; an official rule file checks that the
target was reached). A run that does not count is never dropped silently: it is listed with its reasons
and counts as a failed run against the failures the rules tolerate.

The score is result_summarizer's own (`rules.official_score`): with N runs and k allowed failures (1, or 4
for unet3d) the slowest and fastest k are dropped, failed runs counting as the slowest; the mean of the
rest, times the folder's scaling.json factor. Fewer runs than the rules require still get a score, with a
note; with too few runs for any score (N <= 2k) the mean of the counted runs is given as
`provisional_mean_minutes`.
"""
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.mlperf_log import BENCHMARK_NAME, Status
from benchmark.results import compliance, rules


@dataclass
class SystemScore:
    runs: int
    converged: int                                 # runs that count
    rules: str = None                              # the rules applied, in words
    runs_required: int = None
    score_minutes: float = None
    provisional_mean_minutes: float = None
    scaling_factor: float = 1.0                    # from scaling.json, applied to the score
    counted: list = field(default_factory=list)    # paths of the runs averaged into the score
    dropped: list = field(default_factory=list)    # paths dropped as fastest / slowest / failed
    failed: dict = field(default_factory=dict)     # {path: why it does not count}
    min_minutes: float = None                      # spread of the runs that count
    max_minutes: float = None
    stdev_minutes: float = None
    notes: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def compliance_failures(runs, benchmark_rules):
    """{path: reason} of the runs that do not count: the checker's verdict, then convergence."""
    failed = {}
    if benchmark_rules.benchmark == BENCHMARK_NAME:
        verdicts = compliance.check_logs([r.path for r in runs])
    else:
        config = rules.official_common(benchmark_rules.ruleset)
        verdicts = [compliance.check_log(r.path, config, ruleset=benchmark_rules.ruleset, werror=False) for r in runs]
    for run, verdict in zip(runs, verdicts):
        if not verdict.passed:
            failed[run.path] = "fails the compliance checker: " + "; ".join(verdict.reasons or ["(no reason given)"])
        elif benchmark_rules.benchmark == BENCHMARK_NAME and run.status != Status.SUCCESS:
            failed[run.path] = f"did not converge (run_stop status {run.status})"
    return failed


def score_runs(folder, runs, benchmark_rules):
    """SystemScore of the RunSummary list `runs` of folder/result_*.txt under `benchmark_rules`."""
    failed = compliance_failures(runs, benchmark_rules)
    result = SystemScore(runs=len(runs), converged=len(runs) - len(failed), rules=benchmark_rules.describe(),
                         runs_required=benchmark_rules.runs_required, failed=failed)
    official = rules.official_score(folder, benchmark_rules.benchmark, benchmark_rules.ruleset,
                                    {os.path.abspath(p): why for p, why in failed.items()})
    by_path = {os.path.abspath(r.path): r.path for r in runs}
    times = sorted((minutes, by_path.get(p, p)) for p, minutes in official.minutes.items())
    if times:
        result.min_minutes, result.max_minutes = times[0][0], times[-1][0]
        result.stdev_minutes = statistics.stdev(m for m, _ in times) if len(times) > 1 else 0.0
    if failed:
        result.notes.append(f"{len(failed)} of {len(runs)} runs do not count: "
                            + "; ".join(f"{Path(p).name}: {why}" for p, why in failed.items()))
    result.scaling_factor = official.scaling_factor
    if official.scaling_factor != 1.0:
        result.notes.append(f"scaling.json: score multiplied by {official.scaling_factor:g}")
    k = benchmark_rules.dropped_each_end
    if len(failed) > k:
        result.notes.append(f"no score: at most {k} failed run{'s' if k > 1 else ''} allowed "
                            f"({benchmark_rules.benchmark}), {len(failed)} failed")
    elif official.score_minutes is None:
        if times:
            result.provisional_mean_minutes = statistics.fmean(m for m, _ in times)
        result.notes.append(f"no score: {len(runs)} runs leave none after dropping {k} at each end; "
                            f"provisional mean of {len(times)} counted run(s) only")
    else:
        result.score_minutes = official.score_minutes
        kept = times[k:len(times) - (k - len(failed))]
        result.counted = [p for _, p in kept]
        result.dropped = [p for m, p in times if (m, p) not in kept] + list(failed)
    if len(runs) != benchmark_rules.runs_required:
        result.notes.append(f"{len(runs)} runs: an official {benchmark_rules.benchmark} result has exactly "
                            f"{benchmark_rules.runs_required}")
    return result
