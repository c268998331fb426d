"""Seconds between `run_start` and `run_stop` in an MLPerf log: a run's time-to-train; or its status.

Usage: python scripts/mllog_seconds.py LOG            # e.g. 812.345
       python scripts/mllog_seconds.py --status LOG   # run_stop's status: success, aborted, ...
Prints the seconds with millisecond precision (the log's resolution) and exits 0; exits 1 with a message
when the log lacks either event (an interrupted run), so the caller can fall back to wall time.
The status lets a launcher recover the training's outcome, which torchrun reduces to exit status 1.
Records are read by benchmark.mlperf_log.read_log, which skips lines that do not parse: a truncated last
line must not hide the events before it. Only the standard library is needed (no torch, no mllog).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmark.mlperf_log import Key, read_log  # noqa: E402  (path set up above: runs as a plain script)


def run_times(records):
    """(run_start time_ms, run_stop time_ms, run_stop status), None when absent; first start, last stop."""
    start = stop = status = None
    for record in records:
        if record.key == Key.RUN_START and start is None:
            start = record.time_ms
        elif record.key == Key.RUN_STOP:
            stop, status = record.time_ms, record.metadata.get(Key.STATUS)
    return start, stop, status


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
    start, stop, status = run_times(records)
    if want_status:
        if status is None:
            print(f"mllog_seconds: {argv[0]}: no run_stop with a status", file=sys.stderr)
            return 1
        print(status)
        return 0
    if start is None or stop is None:
        missing = " and ".join(k for k, v in (("run_start", start), ("run_stop", stop)) if v is None)
        print(f"mllog_seconds: {argv[0]}: no {missing}", file=sys.stderr)
        return 1
    print(f"{(stop - start) / 1000.0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
