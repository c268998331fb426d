"""Seconds between `run_start` and `run_stop` in an MLPerf log: a run's time-to-train; or its status.

Usage: python scripts/mllog_seconds.py LOG            # e.g. 812.345
       python scripts/mllog_seconds.py --status LOG   # run_stop's status: success, aborted, ...
Prints the seconds with millisecond precision (the log's resolution) and exits 0; exits 1 with a message
when the log lacks either event (an interrupted run), so the caller can fall back to wall time.
The status lets a launcher recover the training's outcome, which torchrun reduces to exit status 1.
Lines that are not `:::MLLOG {json}` or do not parse are skipped: a truncated last line must not hide
the events before it. Only the standard library is used.
"""
import json
import sys

PREFIX = ":::MLLOG "


def run_times(lines):
    """(run_start time_ms, run_stop time_ms, run_stop status), None when absent; first start, last stop."""
    start = stop = status = None
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
            metadata = record.get("metadata")
            status = metadata.get("status") if isinstance(metadata, dict) else None
    return start, stop, status


def main(argv):
    want_status = argv[:1] == ["--status"]
    argv = argv[1:] if want_status else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8", errors="replace") as log:
            start, stop, status = run_times(log)
    except OSError as error:
        print(f"mllog_seconds: {error}", file=sys.stderr)
        return 1
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
