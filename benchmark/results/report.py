"""Score and compare MLPerf training result logs: time to train, convergence, olympic score, curves.

Usage:
  python -m benchmark.results.report results                       # every results/<system>/result_*.txt
  python -m benchmark.results.report results/CPU                   # one system (a folder holding the logs)
  python -m benchmark.results.report results --json > summary.json
  python -m benchmark.results.report results --plot curves.png --html report.html --baseline CPU

For each run: time to train (run_stop - run_start, minutes), epochs, final WER (eval_accuracy), status.
For each system: the MLPerf score (mean of N runs after dropping the fastest and the slowest; at most one
non-converged run, which counts as the slowest; no score with fewer than 3 runs, see benchmark/results/scoring.py),
the spread of the converged runs, the final WER against the target, and the speed-up against a baseline
system (default: the slowest). Reads any MLPerf training log (for other benchmarks the target comes from
mlperf_logging's rules); unreadable files, truncated or garbage lines, foreign keys and interrupted runs
are listed as warnings, never fatal. System descriptions (MLPerf system_desc JSON) are shown when found
at <system folder>/system_desc.json.
Exit status: 0 report written, 2 no result logs found or bad arguments.
"""
import argparse
import base64
import html
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmark.results import logs, scoring

DESCRIPTION_FIELDS = ("system_name", "number_of_nodes", "host_processor_model_name", "host_processors_per_node",
                      "host_processor_core_count", "host_memory_capacity", "accelerator_model_name",
                      "accelerators_per_node", "framework", "operating_system")


def _system_description(folder, warnings):
    path = Path(folder) / "system_desc.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        warnings.append(f"{path}: unreadable system description ({error})")
        return None
    return {k: data[k] for k in DESCRIPTION_FIELDS if isinstance(data, dict) and k in data}


def _quality_summary(runs, warnings, system):
    targets = sorted({r.target for r in runs if r.target is not None})
    if len(targets) > 1:
        warnings.append(f"{system}: runs log different targets {targets}; comparing with the first")
    finals = [r.final_quality for r in runs if r.converged and r.final_quality is not None]
    summary = {"target": targets[0] if targets else None,
               "lower_is_better": all(r.lower_is_better for r in runs),
               "final_mean": statistics.fmean(finals) if finals else None,
               "final_min": min(finals, default=None), "final_max": max(finals, default=None),
               "epochs_mean": statistics.fmean([r.epochs for r in runs if r.converged and r.epochs is not None]
                                               or [float("nan")])}
    if summary["target"] is not None and summary["final_mean"] is not None:
        summary["final_minus_target"] = summary["final_mean"] - summary["target"]
    if summary["epochs_mean"] != summary["epochs_mean"]:   # NaN: no converged run with epochs
        summary["epochs_mean"] = None
    return summary


def _time_of(score):
    """(minutes, provisional): the score, or the provisional mean when there are too few runs."""
    if score["score_minutes"] is not None:
        return score["score_minutes"], False
    return score["provisional_mean_minutes"], score["provisional_mean_minutes"] is not None


def _comparison(systems, baseline):
    times = {name: _time_of(s["score"]) for name, s in systems.items()}
    times = {name: t for name, t in times.items() if t[0]}
    if not times:
        return None
    if baseline not in times:
        baseline = max(times, key=lambda name: times[name][0])
    base = times[baseline][0]
    return {"baseline": baseline,
            "speedup_vs_baseline": {name: base / t for name, (t, _) in times.items()},
            "provisional": sorted(name for name, (_, p) in times.items() if p),
            "time_ratio": {a: {b: ta / tb for b, (tb, _) in times.items()} for a, (ta, _) in times.items()}}


def build_report(results_dir, pattern="result_*.txt", baseline=None):
    """The whole report as a JSON-able dict, plus the RunSummary objects per system (for plots)."""
    found = logs.find_systems(results_dir, pattern)
    warnings, systems, runs_by_system = [], {}, {}
    for name, paths in found.items():
        runs = [logs.summarize_run(p) for p in paths]
        runs_by_system[name] = runs
        for run in runs:
            warnings += [f"{run.path}: {w}" for w in run.warnings]
        folder = Path(paths[0]).parent
        systems[name] = {"folder": str(folder), "description": _system_description(folder, warnings),
                         "runs": [r.to_dict() for r in runs], "score": scoring.score_runs(runs).to_dict(),
                         "quality": _quality_summary(runs, warnings, name)}
    report = {"results_dir": str(results_dir), "systems": systems,
              "comparison": _comparison(systems, baseline), "warnings": warnings}
    return report, runs_by_system


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def format_text(report):
    lines = []
    for name, system in report["systems"].items():
        quality, score = system["quality"], system["score"]
        relation = "<=" if quality["lower_is_better"] else ">="
        target = f"target {relation} {quality['target']:g}" if quality["target"] is not None else "no target"
        runs = f"{score['runs']} run{'s' if score['runs'] != 1 else ''}"
        lines.append(f"== {name}: {runs}, {score['converged']} converged, {target}")
        if system["description"]:
            lines.append("   " + ", ".join(f"{k}={v}" for k, v in system["description"].items()))
        lines.append(f"   {'run':<24} {'status':<12} {'minutes':>9} {'epochs':>7} {'final':>8}")
        for run in system["runs"]:
            lines.append(f"   {Path(run['path']).name:<24} {run['status']:<12} {_fmt(run['minutes']):>9} "
                         f"{_fmt(run['epochs'], 0):>7} {_fmt(run['final_quality'], 4):>8}")
        if score["score_minutes"] is not None:
            lines.append(f"   SCORE {score['score_minutes']:.3f} minutes (mean of {len(score['counted'])} runs; "
                         f"dropped {', '.join(Path(p).name for p in score['dropped'])})")
        elif score["provisional_mean_minutes"] is not None:
            lines.append(f"   SCORE none; provisional mean {score['provisional_mean_minutes']:.3f} minutes")
        else:
            lines.append("   SCORE none")
        if score["min_minutes"] is not None:
            lines.append(f"   spread of converged runs: {score['min_minutes']:.3f} to {score['max_minutes']:.3f} "
                         f"minutes, stdev {score['stdev_minutes']:.3f}")
        if quality["final_mean"] is not None and quality["target"] is not None:
            lines.append(f"   final quality of converged runs: mean {quality['final_mean']:.4f} "
                         f"(min {quality['final_min']:.4f}, max {quality['final_max']:.4f}) vs target "
                         f"{quality['target']:g}: {quality['final_minus_target']:+.4f}; mean epochs "
                         f"{_fmt(quality['epochs_mean'], 1)}")
        lines += [f"   note: {note}" for note in score["notes"]]
    comparison = report["comparison"]
    if comparison and len(comparison["speedup_vs_baseline"]) > 1:
        lines.append(f"== comparison (speed-up vs {comparison['baseline']}; higher is faster)")
        for name, speedup in sorted(comparison["speedup_vs_baseline"].items(), key=lambda kv: -kv[1]):
            flag = " (provisional)" if name in comparison["provisional"] else ""
            lines.append(f"   {name:<24} {speedup:8.2f}x{flag}")
    if report["warnings"]:
        lines.append(f"== {len(report['warnings'])} warnings")
        lines += [f"   {w}" for w in report["warnings"]]
    return "\n".join(lines)


def format_html(report, png=None):
    body = [f"<h1>MLPerf results: {html.escape(report['results_dir'])}</h1>"]
    body.append(f"<pre>{html.escape(format_text(report))}</pre>")
    if png:
        body.append(f'<img alt="convergence curves" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>MLPerf results</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{font-size:13px}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmark.results.report",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="folder of system folders holding result logs, or one system's folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    parser.add_argument("--plot", metavar="FILE.png", help="write WER-vs-time and WER-vs-epoch curves")
    parser.add_argument("--html", metavar="FILE.html", help="write an HTML page with the report and curves")
    parser.add_argument("--baseline", metavar="SYSTEM", help="system the speed-ups are relative to "
                        "(default: the slowest)")
    parser.add_argument("--pattern", default="result_*.txt", help="glob of the logs in a system folder "
                        "(default: %(default)s)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        print(f"error: {args.results_dir} is not a folder", file=sys.stderr)
        return 2
    report, runs = build_report(args.results_dir, args.pattern, args.baseline)
    if not report["systems"]:
        print(f"error: no {args.pattern} logs in {args.results_dir} or its subfolders", file=sys.stderr)
        return 2
    if args.baseline and report["comparison"] and report["comparison"]["baseline"] != args.baseline:
        report["warnings"].append(f"--baseline {args.baseline} has no time; using {report['comparison']['baseline']}")
    if args.plot or args.html:
        from benchmark.results import report_plots
        if args.plot:
            report_plots.save_png(runs, args.plot)
        if args.html:
            _write_atomic(args.html, format_html(report, report_plots.png_bytes(runs)))
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
