"""Check DeepSpeech2 result logs with the official MLPerf compliance checker and our rules.

Usage:
  python -m benchmark.results.compliance results/CPU/result_*.txt
  python -m benchmark.results.compliance --target-wer 0.30 --eval-samples 2703 LOG...
  python -m benchmark.results.compliance --write-rules /tmp/ds2_rules   # then run the official CLI yourself

Prints one verdict per log (PASS, or FAIL with the reasons) and exits 1 if any log fails, 2 on bad usage.

The rules: mlperf_logging's training_4.1.0/common.yaml (cache_clear, init/run start and stop, submission
keys, epochs, evals...) followed by ours in compliance/ (deepspeech2 benchmark, exactly one run_start,
run_stop status 'success' or 'aborted', seed, batch size, sample counts, WER at most target_wer for a
success run). The checker only finds enqueued rule files by absolute path, so the templates in compliance/
are resolved into a temporary folder at run time. Duplicate identical events (two run_starts) are errors,
as with the official CLI's --werror. The same verdicts come from:
  python -m mlperf_logging.compliance_checker --usage training --ruleset 4.1.0 --werror \\
      --config RULES_DIR/common.yaml LOG
"""
import argparse
import contextlib
import json
import logging
import re
import string
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlperf_logging.compliance_checker import mlp_compliance, mlp_parser

from benchmark.mlperf_log import token_lines

RULESET = "4.1.0"
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "compliance"
TEMPLATE_FILES = ("closed_common.yaml", "open_common.yaml", "deepspeech2.yaml", "closed_deepspeech2.yaml")
UPSTREAM_COMMON = Path(mlp_compliance.__file__).parent / f"training_{RULESET}" / "common.yaml"
# The one line of upstream common.yaml we redirect: its division rule enqueues the upstream per-division
# file, whose benchmark list lacks deepspeech2; ours takes its place.
UPSTREAM_ENQUEUE = f"'training_{RULESET}/{{}}_common.yaml'"


@dataclass
class Verdict:
    path: str
    passed: bool
    reasons: list = field(default_factory=list)


def write_rules(rules_dir, target_wer=None, eval_samples=None):
    """Writes the resolved rule files into rules_dir; returns the path of the top config (common.yaml)."""
    rules_dir = Path(rules_dir).resolve()
    if re.search(r"['\"\\\s]", str(rules_dir)):
        # The path is pasted into Python code inside the YAML rules.
        raise ValueError(f"rules folder {rules_dir} must not contain quotes, backslashes or spaces")
    rules_dir.mkdir(parents=True, exist_ok=True)
    upstream = UPSTREAM_COMMON.read_text()
    if UPSTREAM_ENQUEUE not in upstream:
        raise RuntimeError(f"{UPSTREAM_COMMON} no longer contains {UPSTREAM_ENQUEUE}; "
                           "mlperf-logging changed, update benchmark/results/compliance.py")
    (rules_dir / "common.yaml").write_text(
        f"# Generated from {UPSTREAM_COMMON} by benchmark.results.compliance; do not edit.\n"
        + upstream.replace(UPSTREAM_ENQUEUE, f"'{rules_dir}/{{}}_common.yaml'"))
    values = {"RULES_DIR": str(rules_dir),
              "TARGET_WER": "None" if target_wer is None else repr(float(target_wer)),
              "EVAL_SAMPLES": "None" if eval_samples is None else str(int(eval_samples))}
    for name in TEMPLATE_FILES:
        text = string.Template((TEMPLATES_DIR / name).read_text()).substitute(values)
        (rules_dir / name).write_text(text)
    return rules_dir / "common.yaml"


class _CaptureLogging(logging.Handler):
    """Collects the checker's root-logger messages so they don't spill onto stderr."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


@contextlib.contextmanager
def _captured_root_logging():
    handler = _CaptureLogging()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _context(text, test):
    """'name=value' for each s['name'] the failed test reads, from the checker's context dump."""
    m = re.search(r"current context\[s\]=(\{.*?\n\})", text, re.S)
    if not m:
        return ""
    try:
        state = json.loads(m.group(1))
    except json.JSONDecodeError:
        return ""
    names = dict.fromkeys(re.findall(r"s\['(\w+)'\]", test))
    return ", ".join(f"{n}={state[n]!r}" for n in names if n in state)


def _summarize(message, file_lines):
    """One readable line from one of the checker's multi-line messages."""
    first = message.strip().splitlines()[0]
    test = re.search(r"failed test: (.*)", message)
    test = test.group(1).strip() if test else ""
    m = re.match(r"CHECK for '(\w+)' failed in line (\d+):", first)
    if m:
        key, index = m.group(1), int(m.group(2))
        where = f"line {file_lines[index]}" if index < len(file_lines) else f"record {index}"
        context = _context(message, test)
        value = re.search(r"current line\[v\]=(\{.*\})", message, re.S)
        value = json.loads(value.group(1)).get("value") if value else None
        return f"{key} ({where}, value {value!r}): failed `{test}`" + (f" [{context}]" if context else "")
    if first.startswith("failed test:"):
        context = _context(message, test)
        return f"end of log: failed `{test}`" + (f" [{context}]" if context else "")
    if first.startswith("Failed executing"):
        code = message.strip().splitlines()[1:2]
        return f"{first.rstrip(':')}: {code[0].strip() if code else ''}"
    return first


def check_log(path, config_path, ruleset=RULESET, werror=True):
    """Runs the official checker on one log with the rules of config_path; returns a Verdict. Our rules run
    with werror (as --werror: duplicate identical events fail); result_summarizer checks other benchmarks'
    logs with their official common.yaml and werror=False, which benchmark.results.scoring repeats."""
    path = str(path)
    if not Path(path).is_file():
        return Verdict(path, False, [f"no such file: {path}"])
    checker = mlp_compliance.make_checker("training", ruleset, quiet=False, werror=werror)
    mlp_compliance.enqueued_configs.clear()   # module-global queue; a crashed earlier check may leave items
    with _captured_root_logging():
        try:
            valid = checker.check_file(path, str(config_path))
        except Exception as error:  # the checker's parser raises on records without time_ms/key
            return Verdict(path, False, [f"the checker could not read the log: {type(error).__name__}: {error}"])
        finally:
            mlp_compliance.enqueued_configs.clear()
    if valid:
        return Verdict(path, True)
    file_lines = [number for number, _, _ in token_lines(path)]   # the checker numbers these lines
    reasons = []
    for message in [*checker.warnings.values(), *checker.overwritable.values(), *checker.not_overwritable]:
        if message.startswith("Log lines had parsing errors"):
            _, errors = mlp_parser.parse_file(path, ruleset=ruleset)
            reasons += [f"unparsable MLLOG record: {line[:80]!r} ({error})" for line, error in errors]
        else:
            reasons.append(_summarize(message, file_lines))
    return Verdict(path, False, reasons)


def check_logs(paths, target_wer=None, eval_samples=None):
    with tempfile.TemporaryDirectory(prefix="ds2_rules_") as rules_dir:
        config = write_rules(rules_dir, target_wer, eval_samples)
        return [check_log(p, config) for p in paths]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.results.compliance", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("logs", nargs="*", metavar="LOG", help="result logs (result_<n>.txt) to check")
    parser.add_argument("--target-wer", type=float, default=None,
                        help="also require the logged target_wer to equal this value (default: any in (0, 1))")
    parser.add_argument("--eval-samples", type=int, default=None,
                        help="also require the logged eval_samples to equal this count (default: any > 0)")
    parser.add_argument("--write-rules", metavar="DIR", default=None,
                        help="write the resolved rule files to DIR and print the official checker command")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.target_wer is not None and not 0.0 < args.target_wer < 1.0:
        parser.error(f"--target-wer must be a fraction in (0, 1), got {args.target_wer}")
    if args.eval_samples is not None and args.eval_samples <= 0:
        parser.error(f"--eval-samples must be positive, got {args.eval_samples}")
    if args.write_rules:
        try:
            config = write_rules(args.write_rules, args.target_wer, args.eval_samples)
        except ValueError as error:
            parser.error(str(error))
        print(f"python -m mlperf_logging.compliance_checker --usage training --ruleset {RULESET} "
              f"--werror --config {config} LOG")
        if not args.logs:
            return 0
    elif not args.logs:
        parser.error("give at least one LOG (or --write-rules DIR)")
    verdicts = check_logs(args.logs, args.target_wer, args.eval_samples)
    for verdict in verdicts:
        print(f"{'PASS' if verdict.passed else 'FAIL'}  {verdict.path}")
        for reason in verdict.reasons:
            print(f"      - {reason}")
    failed = sum(not v.passed for v in verdicts)
    print(f"{len(verdicts) - failed} of {len(verdicts)} logs pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
