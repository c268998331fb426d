"""Score and compare MLPerf training result logs by the official rules: time to train, convergence, olympic
score, RCP test, curves.

Usage:
  python -m benchmark.results.report results                       # every results/<system>/result_*.txt
  python -m benchmark.results.report results/CPU                   # one system (a folder holding the logs)
  python -m benchmark.results.report submission/closed/acme --ruleset 4.1.0   # an official package
  python -m benchmark.results.report results --json > summary.json
  python -m benchmark.results.report results --plot curves.png --html report.html --baseline CPU

For each run: time to train (run_stop - run_start, minutes), epochs (or samples, where the benchmark's
epoch_num counts them), final quality, status, and whether it counts. For each system: the rules applied
(benchmark.results.rules: DeepSpeech2's own, or the official ones of the benchmark and --ruleset), the
score computed by mlperf_logging's result_summarizer function (benchmark.results.scoring: runs required,
runs dropped, failures allowed, scaling.json), the RCP test of its convergence (benchmark.results.rcp:
our RCPs for DeepSpeech2, the official ones otherwise), the official system_desc_checker's verdict on its
description, and the speed-up against a baseline system (default: the slowest).

Trust: a log that fails the compliance checker (two run_stop, a forged extra eval_accuracy, missing
events) is listed with the checker's reasons and never counted. A folder whose logs ran on different
machines (each log records its machine; logs older than that record are taken to be from the machine the
folder's system_desc.json describes) gets no score. The ruleset of another benchmark's logs: --ruleset,
else a 'vX.Y' in the path (training_results_v4.1/...), else no score.

Input layouts: results/<system>/result_*.txt with results/<system>/system_desc.json (this project's), or
the official <division>/<org>/results/<system>/<benchmark>/result_*.txt with systems/<system>.json.
--plot and --html never overwrite a file they did not write (the result logs above all); they write
atomically, readable by all (0644 less the umask).
Exit status: 0 report written, 2 no result logs found, bad arguments or an output path that is not a report.
"""
import argparse
import base64
import html
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

from benchmark.mlperf_log import BENCHMARK_NAME
from benchmark.results import logs, package, rcp, rules, scoring, system_desc

DESCRIPTION_FIELDS = ("system_name", "number_of_nodes", "host_processor_model_name", "host_processors_per_node",
                      "host_processor_core_count", "host_memory_capacity", "accelerator_model_name",
                      "accelerators_per_node", "framework", "operating_system")
WRITER_MARK = "benchmark.results.report"   # in every HTML and PNG file this tool writes


# ------------------------------------------------------------------------------------------- systems
def _systems(results_dir):
    """[(name, folder, log paths, description path, benchmark from the layout or None)]."""
    entries = package.find_entries(results_dir)
    if entries:
        return [(e.name, e.folder, logs.result_logs(e.folder), e.description_path, e.benchmark) for e in entries]
    return [(name, Path(paths[0]).parent, paths, Path(paths[0]).parent / system_desc.DESCRIPTION_FILE, None)
            for name, paths in logs.find_systems(results_dir).items()]


def _ruleset(benchmark, folder, given, warnings, name):
    """DeepSpeech2: ours. Others: --ruleset, else a vX.Y in the path (training_results_v4.1), else None."""
    if benchmark == BENCHMARK_NAME:
        return rules.DS2_RULESET
    if given:
        return given
    m = re.search(r"v(\d+)\.(\d+)(?:\.(\d+))?(?![\d.])", str(Path(folder).resolve()))
    if not m:
        return None
    found = f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}"
    warnings.append(f"{name}: ruleset {found} taken from the path (give --ruleset to choose)")
    return found


def _description(path, warnings):
    try:
        data = system_desc.read_description(path.parent) if path.name == system_desc.DESCRIPTION_FILE else (
            json.loads(path.read_text()) if path.is_file() else None)
    except ValueError as error:
        warnings.append(str(error))
        return None, None
    if data is None:
        return None, None
    valid, reasons = system_desc.check(path)
    return data, {"valid": valid, "reasons": reasons, "ruleset": system_desc.CHECKER_RULESET}


def machine_problem(runs, description):
    """Why the runs cannot be scored together as one machine's, or None. A log's machine is its own
    Key.MACHINE record, else (older logs) the machine of the folder's description."""
    machines, unknown = {}, []
    for run in runs:
        if run.machine is not None:
            ident = system_desc.identity(run.machine)
            if description is not None and system_desc.differences(run.machine, description):
                return (f"{Path(run.path).name} ran on another machine than the folder's description: "
                        + "; ".join(system_desc.differences(run.machine, description)))
        elif description is not None:
            ident = system_desc.identity(description)
        else:
            unknown.append(Path(run.path).name)
            continue
        machines.setdefault(json.dumps(ident, sort_keys=True), []).append(Path(run.path).name)
    if len(machines) > 1:
        return f"logs from {len(machines)} machines: " + " | ".join(
            f"{', '.join(names)}: {json.loads(key)['host_processor_model_name']}" for key, names in machines.items())
    if machines and unknown:
        return f"{', '.join(unknown)} record no machine and the folder has no description to vouch for them"
    return None


def _quality_summary(runs, score):
    counted = [r for r in runs if r.path not in score.failed]
    finals = [r.final_quality for r in counted if isinstance(r.final_quality, float)]
    epochs = [r.epochs for r in counted if r.epochs is not None]
    targets = sorted({r.target_text for r in runs if r.target_text})
    summary = {"target": targets[0] if len(targets) == 1 else (targets or None),
               "lower_is_better": all(r.lower_is_better for r in runs),
               "final_mean": statistics.fmean(finals) if finals else None,
               "final_min": min(finals, default=None), "final_max": max(finals, default=None),
               "epochs_mean": statistics.fmean(epochs) if epochs else None,
               "progress_unit": runs[0].progress_unit if runs else "epochs"}
    numbers = {r.target for r in counted if r.target is not None}
    if len(numbers) == 1 and summary["final_mean"] is not None:
        summary["final_minus_target"] = summary["final_mean"] - numbers.pop()
    return summary


def system_report(name, folder, paths, description_path, layout_benchmark, ruleset, warnings, rcp_file=None):
    """(JSON-able report of one system, its RunSummary list)."""
    runs = [logs.summarize_run(path) for path in paths]
    named = {run.benchmark for run in runs} - {None}   # an unreadable log names none: the checker fails it
    benchmark = layout_benchmark or (next(iter(named)) if len(named) == 1 else None)
    used = _ruleset(benchmark, folder, ruleset, warnings, name)
    if used and benchmark != BENCHMARK_NAME:
        runs = [logs.summarize_run(p, used) for p in paths]
    for run in runs:
        warnings += [f"{run.path}: {w}" for w in run.warnings]
    description, description_check = _description(Path(description_path), warnings)
    report = {"folder": str(folder), "benchmark": benchmark, "ruleset": used,
              "description": {k: description[k] for k in DESCRIPTION_FIELDS if k in description} if description else None,
              "description_check": description_check, "runs": None, "score": None, "rcp": None}
    if benchmark is None:
        refusal = (f"logs of several benchmarks ({', '.join(sorted(named))})" if named
                   else "no log names its benchmark (submission_benchmark)")
    elif named != {benchmark}:
        refusal = f"logs name other benchmarks than {benchmark}: {', '.join(sorted(named - {benchmark}))}"
    else:
        refusal = machine_problem(runs, description)
    benchmark_rules = None
    if refusal is None:
        try:
            benchmark_rules = rules.rules_for(benchmark, used, (description or {}).get("division") or
                                              runs[0].division or "closed")
        except rules.RulesError as error:
            refusal = str(error)
    if refusal is None:
        score = scoring.score_runs(folder, runs, benchmark_rules)
        verdict = rcp.check_system(runs, benchmark, used, rcp_file if benchmark == BENCHMARK_NAME else None)
        report["rcp"] = verdict.to_dict() if verdict else None
        if verdict:
            report["rcp"]["text"] = rcp.describe(verdict)
    else:
        score = scoring.SystemScore(runs=len(runs), converged=0, notes=[f"no score: {refusal}"])
        warnings.append(f"{name}: not scored: {refusal}")
    report["runs"] = [r.to_dict() | {"counts": r.path not in score.failed and refusal is None} for r in runs]
    report["score"] = score.to_dict()
    report["quality"] = _quality_summary(runs, score)
    return report, runs


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


def build_report(results_dir, ruleset=None, baseline=None, rcp_file=None):
    """The whole report as a JSON-able dict, plus the RunSummary objects per system (for plots)."""
    warnings, systems, runs_by_system = [], {}, {}
    for name, folder, paths, description_path, benchmark in _systems(results_dir):
        systems[name], runs_by_system[name] = system_report(name, folder, paths, description_path, benchmark,
                                                            ruleset, warnings, rcp_file)
    report = {"results_dir": str(results_dir), "systems": systems,
              "comparison": _comparison(systems, baseline), "warnings": warnings}
    return report, runs_by_system


# ------------------------------------------------------------------------------------------- text
def _fmt(value, digits=2):
    if isinstance(value, dict):
        return ",".join(f"{k}={v:.{digits}f}" for k, v in value.items())
    return "-" if value is None else f"{value:.{digits}f}"


def _progress(value, unit):
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if unit == "samples" and value >= 1e5 else f"{value:g}"


def format_text(report):
    lines = []
    for name, system in report["systems"].items():
        quality, score = system["quality"], system["score"]
        runs = f"{score['runs']} run{'s' if score['runs'] != 1 else ''}"
        target = f"target {quality['target']}" if quality["target"] else "no target"
        lines.append(f"== {name}: {system['benchmark']}, {runs}, {score['converged']} count, {target}")
        if score["rules"]:
            lines.append(f"   rules: {score['rules']}")
        if system["description"]:
            lines.append("   " + ", ".join(f"{k}={v}" for k, v in system["description"].items()))
        check = system["description_check"]
        if check:
            lines.append(f"   system description: {'PASS' if check['valid'] else 'FAIL'} (mlperf_logging "
                         f"system_desc_checker, training {check['ruleset']})"
                         + "".join(f"; {r}" for r in check["reasons"]))
        unit = quality["progress_unit"]
        lines.append(f"   {'run':<24} {'status':<12} {'counts':<6} {'minutes':>9} {unit:>8} {'final':>8}")
        for run in system["runs"]:
            lines.append(f"   {Path(run['path']).name:<24} {run['status']:<12} {'yes' if run['counts'] else 'NO':<6} "
                         f"{_fmt(run['minutes']):>9} {_progress(run['epochs'], run['progress_unit']):>8} "
                         f"{_fmt(run['final_quality'], 4):>8}")
        if score["score_minutes"] is not None:
            lines.append(f"   SCORE {score['score_minutes']:.3f} minutes (mean of {len(score['counted'])} runs; "
                         f"dropped {', '.join(Path(p).name for p in score['dropped']) or 'none'})")
        elif score["provisional_mean_minutes"] is not None:
            lines.append(f"   SCORE none; provisional mean {score['provisional_mean_minutes']:.3f} minutes")
        else:
            lines.append("   SCORE none")
        if score["min_minutes"] is not None:
            lines.append(f"   spread of the runs that count: {score['min_minutes']:.3f} to {score['max_minutes']:.3f} "
                         f"minutes, stdev {score['stdev_minutes']:.3f}")
        if quality["final_mean"] is not None and "final_minus_target" in quality:
            lines.append(f"   final quality of the runs that count: mean {quality['final_mean']:.4f} (min "
                         f"{quality['final_min']:.4f}, max {quality['final_max']:.4f}), "
                         f"{quality['final_minus_target']:+.4f} from the target; mean {unit} "
                         f"{_progress(quality['epochs_mean'], unit)}")
        if system["rcp"]:
            verdict = system["rcp"]
            lines.append(f"   RCP: {'PASS' if verdict['passed'] else 'FAIL'} ({verdict['message']}): {verdict['text']}")
            if not verdict["passed"] and verdict["reference"]:
                lines.append("   FLAG: converges in fewer epochs than the reference distribution allows: "
                             "a recipe change that shortens convergence must come with new RCPs")
        elif score["rules"]:
            lines.append("   RCP: no reference convergence points for this benchmark and ruleset")
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
    return (f"<!DOCTYPE html>\n<!-- written by {WRITER_MARK} -->\n<html><head><meta charset='utf-8'>"
            "<title>MLPerf results</title><style>body{font-family:sans-serif;margin:2em}pre{font-size:13px}</style>"
            "</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ------------------------------------------------------------------------------------------- output files
class OutputError(ValueError):
    """An output path this tool must not write."""


def check_output(path, inputs=()):
    """OutputError unless `path` is new or a report this tool wrote (never one of the input logs)."""
    path = Path(path)
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise OutputError(f"{path} is one of the result logs being reported")
    if path.is_dir():
        raise OutputError(f"{path} is a folder")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError as error:
            raise OutputError(f"{path}: {error.strerror}") from error
        if WRITER_MARK.encode() not in head:
            raise OutputError(f"{path} exists and is not a report written by {WRITER_MARK}: not overwritten")


def write_bytes_atomic(path, data):
    """Writes through a temporary file renamed into place, mode 0666 less the umask (mkstemp's is 0600)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".report.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode())


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmark.results.report",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="folder of system folders holding result logs, one system's folder, or a package")
    parser.add_argument("--ruleset", choices=rules.rulesets(), metavar="X.Y.Z",
                        help="the MLPerf round other benchmarks' logs follow (e.g. 4.1.0); DeepSpeech2 logs "
                        f"follow ours ({rules.DS2_RULESET})")
    parser.add_argument("--rcps", metavar="FILE.json", default=None,
                        help=f"DeepSpeech2 RCP file (default: {rcp.DEFAULT_FILE})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    parser.add_argument("--plot", metavar="FILE.png", help="write WER-vs-time and WER-vs-epoch curves")
    parser.add_argument("--html", metavar="FILE.html", help="write an HTML page with the report and curves")
    parser.add_argument("--baseline", metavar="SYSTEM", help="system the speed-ups are relative to "
                        "(default: the slowest)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        print(f"error: {args.results_dir} is not a folder", file=sys.stderr)
        return 2
    found = _systems(args.results_dir)
    if not found:
        print(f"error: no {logs.RESULT_PATTERN} logs in {args.results_dir} or its subfolders", file=sys.stderr)
        return 2
    inputs = [p for _, _, paths, _, _ in found for p in paths]
    try:
        for output in filter(None, (args.plot, args.html)):
            check_output(output, inputs)
        if args.plot and args.html and Path(args.plot).resolve() == Path(args.html).resolve():
            raise OutputError("--plot and --html name the same file")
    except OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report, runs = build_report(args.results_dir, args.ruleset, args.baseline, args.rcps)
    if args.baseline and report["comparison"] and report["comparison"]["baseline"] != args.baseline:
        report["warnings"].append(f"--baseline {args.baseline} has no time; using {report['comparison']['baseline']}")
    if args.plot or args.html:
        from benchmark.results import report_plots
        png = report_plots.png_bytes(runs, software=WRITER_MARK)
        if args.plot:
            write_bytes_atomic(args.plot, png)
        if args.html:
            write_text_atomic(args.html, format_html(report, png))
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
