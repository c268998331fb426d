"""MLPerf olympic scoring of one system's runs (mirrors mlperf_logging's result_summarizer, which crashes in
mlperf-logging 4.1.68).

A run counts when it converged (status success and final quality meets the target). Of N runs, at most one
may fail to converge; that run counts as the slowest. The score is the mean time to train after dropping
the fastest and the slowest run. With N = 5 and all converged: the middle 3; with one non-converged: the
2nd to 4th fastest of the 4 converged runs.

Fewer than 3 runs (N = 1 or 2): dropping two runs would leave nothing, so there is no score; the mean of
the converged runs is given as `provisional_mean_minutes` and flagged as such. Fewer than REQUIRED_RUNS
runs still get a score, with a note that an official MLPerf result needs more.
"""
import statistics
from dataclasses import asdict, dataclass, field

MAX_NON_CONVERGED = 1
MIN_RUNS_FOR_SCORE = 3
REQUIRED_RUNS = 5   # what MLPerf asks of most benchmarks (resnet, ssd, maskrcnn in benchmark_meta)


@dataclass
class SystemScore:
    runs: int
    converged: int
    score_minutes: float = None
    provisional_mean_minutes: float = None
    counted: list = field(default_factory=list)   # paths of the runs averaged into the score
    dropped: list = field(default_factory=list)   # paths dropped as fastest / slowest / non-converged
    min_minutes: float = None                      # spread of the converged runs
    max_minutes: float = None
    stdev_minutes: float = None
    notes: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def olympic_mean(converged_minutes, non_converged):
    """Mean after dropping the fastest and the slowest; non-converged runs are the slowest. None if nothing
    is left or too many runs did not converge."""
    if non_converged > MAX_NON_CONVERGED:
        return None
    ordered = sorted(converged_minutes)
    counted = ordered[1:len(ordered) - (1 - non_converged)]
    return sum(counted) / len(counted) if counted else None


def score_runs(runs):
    """SystemScore of a list of RunSummary."""
    good = sorted((r for r in runs if r.converged), key=lambda r: r.minutes)
    bad = [r for r in runs if not r.converged]
    result = SystemScore(runs=len(runs), converged=len(good))
    times = [r.minutes for r in good]
    if times:
        result.min_minutes, result.max_minutes = times[0], times[-1]
        result.stdev_minutes = statistics.stdev(times) if len(times) > 1 else 0.0
    if bad:
        result.notes.append(f"{len(bad)} of {len(runs)} runs did not converge: "
                            + ", ".join(f"{r.path} ({r.status})" for r in bad))
    if len(bad) > MAX_NON_CONVERGED:
        result.notes.append(f"no score: at most {MAX_NON_CONVERGED} non-converged run is allowed")
        return result
    if len(runs) < MIN_RUNS_FOR_SCORE:
        if times:
            result.provisional_mean_minutes = sum(times) / len(times)
        result.notes.append(f"no score: olympic scoring needs at least {MIN_RUNS_FOR_SCORE} runs; "
                            f"provisional mean of {len(times)} converged run(s) only")
        return result
    result.score_minutes = olympic_mean(times, len(bad))
    kept = good[1:len(good) - (1 - len(bad))]
    result.counted = [r.path for r in kept]
    result.dropped = [r.path for r in good + bad if r not in kept]
    if len(runs) < REQUIRED_RUNS:
        result.notes.append(f"{len(runs)} runs: an official MLPerf result needs {REQUIRED_RUNS}")
    return result
