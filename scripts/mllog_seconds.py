"""Seconds between `run_start` and `run_stop` in an MLPerf log: a run's time-to-train.

Usage: python scripts/mllog_seconds.py LOG
Prints the seconds with millisecond precision (the log's resolution) and exits 0; exits 1 with a message
when the log lacks either event (an interrupted run), so the caller can fall back to wall time.
Lines that are not `:::MLLOG {json}` or do not parse are skipped: a truncated last line must not hide
the events before it. Only the standard library is used.
"""
import json
import sys

PREFIX = ":::MLLOG "


def run_times(lines):
    """(run_start time_ms, run_stop time_ms), either None when absent; first start, last stop."""
    start = stop = None
    for line in lines:
        position = line.find(PREFIX)
        if position < 0:
            continue
        try:
            record = json.loads(line[position + len(PREFIX):])
            key, time_ms = record["key"], float(record["time_ms"])
        except (ValueError, KeyError, TypeError):
            continue
        if key == "run_start" and start is None:
            start = time_ms
        elif key == "run_stop":
            stop = time_ms
    return start, stop


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8", errors="replace") as log:
            start, stop = run_times(log)
    except OSError as error:
        print(f"mllog_seconds: {error}", file=sys.stderr)
        return 1
    if start is None or stop is None:
        missing = " and ".join(k for k, v in (("run_start", start), ("run_stop", stop)) if v is None)
        print(f"mllog_seconds: {argv[0]}: no {missing}", file=sys.stderr)
        return 1
    print(f"{(stop - start) / 1000.0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
