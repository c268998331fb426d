"""Reference convergence points (RCPs): MLPerf's test that a system does not converge in fewer epochs than
the reference distribution of epochs-to-target allows; DeepSpeech2's RCPs, built from our runs.

Usage:
  python -m benchmark.results.rcp build results/CPU [results/OTHER ...] [--out results/rcps_deepspeech2.json]
  python -m benchmark.results.rcp check results/CPU [--rcps results/rcps_deepspeech2.json]

The test is mlperf_logging's rcp_checker's, implemented here because the checker refuses any benchmark
outside its hard-coded table (KeyError 'deepspeech2', even with --custom_rcps); tests/test_rcp.py shows
that both agree on every official RCP file. Per RCP record (one global batch size): the mean of the
epochs-to-target after dropping the fastest and slowest k (k = 4 for unet3d, else 1), the population
standard deviation of all of them, and the smallest mean a submission may have: the lowest mean that a
one-sided two-sample t-test (alpha 0.05, equal variances) cannot tell apart from the reference's, found by
bisection. Records are pruned as the checker does (none below the batch size of the fastest, none above the
line between its neighbours); a batch size between two records is interpolated linearly. A system passes
when the olympic mean of its own epochs-to-target is at least that minimum; converging faster than the
reference mean but within the allowed speed-up scales the score by reference mean / submission mean (what
package_checker writes to scaling.json). Epochs-to-target of a run: the epoch_num (samples_count where only
that is logged) of its last eval, when run_stop says success; a run that did not converge counts as the
checker counts it: 1e9 epochs, and more than k of them fail the test.

`build` writes the RCP file in the format `rcp_checker --custom_rcps` reads: one record per global batch
size of the given folders' converged runs, with the runs' hyperparameters (which must agree) and the systems
they ran on. MLPerf asks for 2x the submission's runs per record (10 for DeepSpeech2's 5); fewer are
accepted and said so.
"""
import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.stats
from mlperf_logging.rcp_checker import rcp_checker

from benchmark.mlperf_log import BENCHMARK_NAME, Key, Status, read_log
from benchmark.results import logs, rules

ALPHA = 0.05
TOLERANCE = 1e-4
NOT_CONVERGED = 1e9                  # what the checker counts a failed run as
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "results" / f"rcps_{BENCHMARK_NAME}.json"
HYPERPARAMETER_PREFIX = "opt_"


def submission_runs(benchmark):
    """Runs a submission has: rcp_checker's own table, else the rules' count (DeepSpeech2: 5)."""
    return rcp_checker.submission_runs[rules.USAGE].get(benchmark) or rules.runs_required(benchmark)


def olympic_mean(values, k):
    ordered = sorted(values)
    return float(np.mean(ordered[k:len(ordered) - k]))


def _p_value(mean_a, stdev_a, n_a, mean_b, stdev_b, n_b):
    """One-sided p-value of a two-sample t-test with equal variances (the checker's conversion)."""
    t, p = scipy.stats.ttest_ind_from_stats(mean_a, stdev_a, n_a, mean_b, stdev_b, n_b, equal_var=True)
    return p / 2 if t < 0 else 1 - p / 2


def min_acceptable_mean(mean, stdev, n_reference, n_submission):
    """The smallest submission mean the t-test accepts, by bisection on [0, mean] to TOLERANCE. The sample
    counts go in the positions rcp_checker gives them (the reference's beside the candidate mean)."""
    if stdev == 0:
        return mean
    low, high = 0.0, mean
    middle = (low + high) / 2
    while high - low > TOLERANCE:
        if _p_value(middle, stdev, n_reference, mean, stdev, n_submission) > ALPHA:
            high = middle
        else:
            low = middle
        middle = (low + high) / 2
    return middle


@dataclass
class Reference:
    name: str
    benchmark: str
    batch_size: int
    epochs: list
    mean: float
    stdev: float
    min_epochs: float

    @property
    def max_speedup(self):
        return self.mean / self.min_epochs


def references(raw, benchmark):
    """Reference records of an RCP file's contents (dict of records), sorted by batch size."""
    k, runs = rules.dropped_each_end(benchmark), submission_runs(benchmark)
    found = []
    for name, record in raw.items():
        unit = "samples to converge" if "samples to converge" in record else "Epochs to converge"
        epochs = sorted(record[unit])
        mean, stdev = olympic_mean(epochs, k), float(np.std(epochs))
        found.append(Reference(name, record["Benchmark"], record["BS"], epochs, mean, stdev,
                               min_acceptable_mean(mean, stdev, len(epochs) - 2 * k, runs - 2)))
    return sorted(found, key=lambda r: r.batch_size)


def interpolate(batch_size, low, high, benchmark):
    mean = float(np.interp(batch_size, [low.batch_size, high.batch_size], [low.mean, high.mean]))
    stdev = float(np.interp(batch_size, [low.batch_size, high.batch_size], [low.stdev, high.stdev]))
    runs = submission_runs(benchmark)
    return Reference(f"{benchmark}_interp_{batch_size}", benchmark, batch_size, [], mean, stdev,
                     min_acceptable_mean(mean, stdev, 2 * runs, runs - 2))


def prune(refs, benchmark):
    """The checker's pruning: drop records below the batch size of the fastest-converging one, then each
    record whose mean lies above the interpolation of its neighbours."""
    if not refs:
        return []
    fastest = min(refs, key=lambda r: r.mean)
    kept = [r for r in refs if r.batch_size >= fastest.batch_size]
    i = 1
    while i < len(kept) - 1:
        if kept[i].mean > interpolate(kept[i].batch_size, kept[i - 1], kept[i + 1], benchmark).mean:
            del kept[i]
            i -= 1
        i += 1
    return kept


@dataclass
class Verdict:
    passed: bool
    message: str                     # rcp_checker's own wording
    batch_size: int = None
    submission_mean: float = None    # olympic mean of the system's epochs-to-target
    reference: dict = None           # the record compared with (mean, stdev, min_epochs, max_speedup)
    norm_factor: float = 1.0         # score scaling when faster than the reference mean but accepted
    epochs: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def _evaluate(reference, epochs, k):
    mean = olympic_mean(epochs, k)
    norm = max(reference.mean / mean, 1.0)
    return mean >= reference.mean / reference.max_speedup, mean, norm


def test(refs, batch_size, epochs, benchmark, pruned=True):
    """Verdict of a system's epochs-to-target (one per run; None: did not converge) at `batch_size`, as
    rcp_checker.check_directory. A run that did not converge enters the mean as NOT_CONVERGED, as there."""
    k = rules.dropped_each_end(benchmark)
    failed = sum(e is None for e in epochs)
    epochs = [NOT_CONVERGED if e is None else e for e in epochs]
    verdict = Verdict(False, "", batch_size, epochs=list(epochs))
    if len(epochs) <= 2 * k:   # the checker's olympic mean of nothing is NaN, which fails every comparison
        verdict.message = f"{len(epochs)} runs: too few for an olympic mean (drops {k} at each end)"
        return verdict
    if failed > k:
        verdict.message = "Insufficient convergence"
        return verdict
    pool = prune(refs, benchmark) if pruned else refs
    exact = next((r for r in pool if r.batch_size == batch_size), None)
    below = max((r for r in pool if r.batch_size < batch_size), key=lambda r: r.batch_size, default=None)
    above = min((r for r in pool if r.batch_size > batch_size), key=lambda r: r.batch_size, default=None)
    if exact:
        reference, verdict.message = exact, "RCP found"
    elif below and above:
        reference, verdict.message = interpolate(batch_size, below, above, benchmark), "RCP Interpolation"
    elif above:
        reference = min(pool, key=lambda r: r.batch_size)
    else:
        verdict.message = (f"Missing RCP, please submit RCP with BS = {batch_size}" if below
                           else "Cannot find any RCPs")
        return verdict
    verdict.passed, verdict.submission_mean, verdict.norm_factor = _evaluate(reference, epochs, k)
    verdict.reference = {"name": reference.name, "batch_size": reference.batch_size, "mean": reference.mean,
                         "stdev": reference.stdev, "min_epochs": reference.min_epochs,
                         "max_speedup": reference.max_speedup}
    if not exact and not below:
        verdict.message = ("RCP not found but slower convergence on smaller batch size" if verdict.passed
                           else f"Missing RCP, please submit RCP with BS = {batch_size}")
    return verdict


def epochs_to_target(run):
    """A RunSummary's convergence point as rcp_checker reads it (None unless status success)."""
    if run.status != Status.SUCCESS or not run.evals or run.evals[-1].epoch is None:
        return None
    return round(run.evals[-1].epoch, 3)


def official_file(benchmark, ruleset):
    return rules.RCP_DIR / f"{rules.USAGE}_{ruleset}" / f"rcps_{benchmark}.json"


def check_system(runs, benchmark, ruleset, rcp_file=None):
    """Verdict of one system's runs (RunSummary list) against the RCPs of `benchmark`: `rcp_file`
    (DeepSpeech2: ours, DEFAULT_FILE) or the official file of the ruleset. None when there are none."""
    path = Path(rcp_file) if rcp_file else (DEFAULT_FILE if benchmark == BENCHMARK_NAME else official_file(benchmark, ruleset))
    if not path.is_file():
        return None
    batch_sizes = {r.global_batch_size for r in runs}
    if len(batch_sizes) != 1 or None in batch_sizes:
        return Verdict(False, "Could not detect global_batch_size")
    raw = {n: r for n, r in json.loads(path.read_text()).items() if r.get("Benchmark") == benchmark}
    return test(references(raw, benchmark), batch_sizes.pop(), [epochs_to_target(r) for r in runs], benchmark)


# ------------------------------------------------------------------------------------------- building
def _hyperparameters(path):
    records, _ = read_log(path)
    return {r.key: r.value for r in records if r.key.startswith(HYPERPARAMETER_PREFIX)} | {
        r.key: r.value for r in records if r.key == Key.TARGET_WER}


def build(folders, benchmark=BENCHMARK_NAME):
    """(RCP records, notes) from the converged runs of the given system folders, one record per global batch."""
    groups, notes = {}, []
    for folder in map(Path, folders):
        for path in logs.result_logs(folder):
            run = logs.summarize_run(path)
            if run.benchmark != benchmark:
                continue
            if not run.converged:
                notes.append(f"{path}: {run.status}, left out (an RCP is the distribution of converged runs)")
                continue
            group = groups.setdefault(run.global_batch_size, {"runs": [], "hyperparameters": _hyperparameters(path)})
            if _hyperparameters(path) != group["hyperparameters"]:
                raise ValueError(f"{path}: hyperparameters differ from the other runs at global batch "
                                 f"{run.global_batch_size}: one RCP record is one recipe")
            group["runs"].append((run, folder.name))
    records = {}
    for batch, group in sorted(groups.items()):
        runs = group["runs"]
        wanted = 2 * submission_runs(benchmark)
        if len(runs) < wanted:
            notes.append(f"global batch {batch}: {len(runs)} runs; MLPerf asks for {wanted} per RCP")
        records[f"{benchmark}_ref_{batch}"] = {
            "Benchmark": benchmark, "Creator": "ds2perf", "When": "built by python -m benchmark.results.rcp build",
            "Platform": ", ".join(sorted({system for _, system in runs})), "BS": batch,
            "Hyperparams": group["hyperparameters"],
            "Epochs to converge": [epochs_to_target(r) for r, _ in runs],
            "Runs": [r.path for r, _ in runs]}
    return records, notes


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmark.results.rcp", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("command", choices=("build", "check"))
    parser.add_argument("folders", nargs="+", metavar="SYSTEM_FOLDER", help="results/<system> folders")
    parser.add_argument("--out", default=str(DEFAULT_FILE), help="build: the RCP file (default: %(default)s)")
    parser.add_argument("--rcps", default=None, help=f"check: the RCP file (default: {DEFAULT_FILE})")
    args = parser.parse_args(argv)
    if args.command == "build":
        try:
            records, notes = build(args.folders)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if not records:
            print("error: no converged DeepSpeech2 run in " + ", ".join(args.folders), file=sys.stderr)
            return 2
        from benchmark.results.report import write_text_atomic
        write_text_atomic(args.out, json.dumps(records, indent=2) + "\n")
        for note in notes:
            print(f"note: {note}")
        for name, ref in zip(records, references(records, BENCHMARK_NAME)):
            print(f"{name}: BS {ref.batch_size}, epochs {ref.epochs}, mean {ref.mean:.4f}, stdev {ref.stdev:.4f}, "
                  f"min epochs {ref.min_epochs:.4f}, max speed-up {ref.max_speedup:.4f} -> {args.out}")
        return 0
    failed = 0
    for folder in args.folders:
        runs = [logs.summarize_run(p) for p in logs.result_logs(folder)]
        verdict = check_system(runs, BENCHMARK_NAME, rules.DS2_RULESET, args.rcps) if runs else None
        if verdict is None:
            print(f"{folder}: no RCP file or no logs")
            failed += 1
            continue
        failed += not verdict.passed
        print(f"{'PASS' if verdict.passed else 'FAIL'}  {folder}: {verdict.message}; " + describe(verdict))
    return 1 if failed else 0


def describe(verdict):
    if verdict.reference is None:
        return f"epochs {verdict.epochs}"
    ref = verdict.reference
    finite = [e for e in verdict.epochs if e != NOT_CONVERGED]
    return (f"mean epochs to target {verdict.submission_mean:.4f} (runs {finite}"
            + (f", {len(verdict.epochs) - len(finite)} not converged" if len(finite) < len(verdict.epochs) else "")
            + f") vs reference {ref['name']} at BS {ref['batch_size']}: mean {ref['mean']:.4f}, "
            f"at least {ref['min_epochs']:.4f} allowed"
            + (f"; faster than the reference mean: score x{verdict.norm_factor:.4f}" if verdict.norm_factor > 1 and verdict.passed else ""))


if __name__ == "__main__":
    sys.exit(main())
