"""Seconds between `run_start` and `run_stop` in an MLPerf log: a run's time-to-train; or its status.

Usage: python scripts/mllog_seconds.py LOG            # e.g. 812.345
       python scripts/mllog_seconds.py --status LOG   # run_stop's status: success, aborted, ...
Prints the seconds with millisecond precision (the log's resolution) and exits 0; exits 1 with a message
when the log has no valid timed region: no run_start or no run_stop (an interrupted run), or two of either
(an invalid log: benchmark.mlperf_log.timed_region is the one rule every reader follows), so the caller
can fall back to wall time. The status lets a launcher recover the training's outcome, which torchrun
reduces to exit status 1.
Records are read by benchmark.mlperf_log.read_log, which skips lines that do not parse: a truncated last
line must not hide the events before it. Only the standard library is needed (no torch, no mllog).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmark.mlperf_log import read_log, timed_region  # noqa: E402  (path set up above: runs as a plain script)


def main(argv):
    want_status = argv[:1] == ["--status"]
    argv = argv[1:] if want_status else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    records, warnings = read_log(argv[0])
    if not records and warnings and warnings[0].startswith("cannot read"):
        print(f"mllog_seconds: {warnings[0]}", file=sys.stderr)
        return 1
    region = timed_region(records)
    problems = list(region.problems)
    if region.stop is None:
        problems.append("no run_stop")
    elif want_status and region.status is None:
        problems.append("run_stop without a status")
    if problems:
        print(f"mllog_seconds: {argv[0]}: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print(region.status if want_status else f"{region.milliseconds / 1000.0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
