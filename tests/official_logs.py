"""Builds result logs of official MLPerf benchmarks from mlperf_logging's rule files, for tests.

Nothing is copied from real submissions: the keys a log must hold are the ones the ruleset's common.yaml,
<division>_common.yaml and <division>_<benchmark>.yaml require (REQ EXACTLY_ONE / AT_LEAST_ONE), and each
value is the first candidate its CHECK accepts when evaluated the way the checker evaluates it (candidates:
the literals the CHECK itself names, then a few plain values). The quality per eval comes from the
benchmark's ATLEAST_ONE_CHECK: evals before the last miss it, the last one meets it (or none do).
"""
import functools
import itertools
import json
import math
import re
from pathlib import Path

import yaml

from benchmark.results import rules

START_MS = 1_700_000_000_000
# Keys the generator writes itself (structure and timing), whatever the rules say about them.
STRUCTURE = {"cache_clear", "init_start", "init_stop", "run_start", "run_stop", "epoch_start", "epoch_stop",
             "block_start", "block_stop", "eval_start", "eval_stop", "eval_accuracy", "aggregated_eval_accuracy",
             "submission_benchmark", "submission_division", "submission_org", "submission_platform",
             "submission_status"}
PLAIN = [1, 0, 1.0, 0.5, 0.001, 2, 8, 16, 32, 256, 1000, "x", True, [1], {"a": 1}]


def _records(path):
    return yaml.load(Path(path).read_text(), Loader=yaml.BaseLoader) or [] if Path(path).is_file() else []


def _checks(key):
    check = key.get("CHECK", [])
    return [c.strip() for c in ([check] if isinstance(check, str) else check)]


def _literals(text):
    numbers = [float(n) for n in re.findall(r"(?<![\w'])-?\d+\.?\d*(?:[eE][-+]?\d+)?", text)]
    numbers += [int(n) for n in numbers if n == int(n)]
    strings = re.findall(r"'([^']*)'", text)
    return [n for n in numbers] + [s for s in strings if s not in ("value", "metadata")]


def _passes(checks, value, metadata, state):
    env = {"s": state, "math": math, "is_integer": lambda x: isinstance(x, int) or float(x).is_integer()}
    try:
        return all(eval(c, env, {"v": {"value": value, "metadata": metadata}, "ll": None})   # noqa: S307
                   for c in checks)
    except Exception:
        return False


def solve(checks, state):
    """(value, metadata): the first candidates every CHECK accepts; ValueError when none do. Values: the
    CHECK's literals, pairs of them (list-valued keys), plain values; metadata: none, or the CHECK's
    quoted names as keys."""
    literals = _literals(" ".join(checks))
    names = [x for x in literals if isinstance(x, str)]
    values = [*literals, *([x, x] for x in literals if not isinstance(x, str)), *PLAIN]
    for metadata in [{}, dict.fromkeys(names, 1)]:
        for value in values:
            if _passes(checks, value, metadata, state):
                return value, metadata
    raise ValueError(f"no candidate value passes {checks}")


@functools.lru_cache(maxsize=None)
def required_values(benchmark, ruleset, division="closed"):
    """{key: (value, metadata)} for every key the rule files require that the generator does not write
    itself; rule files a value enqueues (resnet's opt_name -> closed_resnet_lars.yaml) are followed."""
    folder = rules.CHECKER_DIR / f"{rules.USAGE}_{ruleset}"
    queue = [folder / "common.yaml", folder / f"{division}_common.yaml", folder / f"{division}_{benchmark}.yaml"]
    values = {}
    while queue:
        path = queue.pop(0)
        state = {}
        for record in _records(path):
            if "BEGIN" in record:
                exec(record["BEGIN"].get("CODE", ""), {"s": state})   # noqa: S102
        for record in _records(path):
            key = record.get("KEY") or {}
            if key.get("NAME") in STRUCTURE or key.get("REQ") not in ("EXACTLY_ONE", "AT_LEAST_ONE"):
                continue
            values[key["NAME"]] = value, metadata = solve(_checks(key), state)
            if "enqueue_config" in key.get("POST", ""):
                enqueued = []
                exec(key["POST"].strip(), {"s": dict(state), "enqueue_config": enqueued.append},   # noqa: S102
                     {"v": {"value": value, "metadata": metadata}})
                queue += [rules.CHECKER_DIR / name for name in enqueued]
    return values


def quality_values(target, header):
    """(a value that misses the target, one that meets it), per the rule's own expression."""
    subs = sorted({sub for sub, _, _ in target.thresholds}) or [""]
    numbers = [n for _, _, n in target.thresholds]
    candidates = sorted({round(n + d, 6) for n in numbers + [0.5] for d in (-0.2, -0.01, 0.0, 0.01, 0.2)})
    meets = misses = None
    for combo in itertools.product(candidates, repeat=len(subs)):
        value = combo[0] if subs == [""] else dict(zip(subs, combo))
        if target.met_by(value, header):
            meets = meets if meets is not None else value
        else:
            misses = misses if misses is not None else value
    assert meets is not None and misses is not None, target
    return misses, meets


def write_log(path, benchmark, ruleset, *, minutes=10.0, epochs=3, converge=True, division="closed", seed=1,
              start_ms=START_MS, overrides=None, omit=(), extra=(), epoch_unit=1):
    """One run following the rules of `benchmark` under `ruleset`: header keys the rules require, then
    `epochs` epochs (epoch_num 1..epochs) each ending in an eval, run_stop after `minutes` from run_start,
    status success when `converge` (the last eval meets the target) else aborted. overrides: header values
    to replace; omit: header keys left out; extra: (key, value, metadata) records appended before run_stop;
    epoch_unit: what one epoch is in epoch_num (BERT logs samples: 1e6 here)."""
    target = rules.quality_target(benchmark, ruleset, division)
    required = {**required_values(benchmark, ruleset, division), "seed": (seed, {}),
                **{k: (v, {}) for k, v in (overrides or {}).items()}}
    required = {k: v for k, v in required.items() if k not in omit}
    header = {k: value for k, (value, _) in required.items()}
    misses, meets = quality_values(target, header)
    lines = []

    def log(t, key, value=None, event="POINT_IN_TIME", **metadata):
        lines.append(":::MLLOG " + json.dumps({"namespace": "", "time_ms": int(t), "event_type": event, "key": key,
                                               "value": value, "metadata": {"file": "gen.py", "lineno": len(lines) + 1,
                                                                            **metadata}}))
    log(start_ms, "cache_clear", True)
    log(start_ms, "init_start", event="INTERVAL_START")
    for key, value in [("submission_benchmark", benchmark), ("submission_org", "acme"), ("submission_division", division),
                       ("submission_status", "onprem"), ("submission_platform", "sys1")]:
        log(start_ms + 1, key, value)
    for key, (value, metadata) in required.items():
        log(start_ms + 1, key, value, **metadata)
    log(start_ms + 2, "init_stop", event="INTERVAL_END")
    run_start = start_ms + 3
    log(run_start, "run_start", event="INTERVAL_START")
    for epoch in range(1, epochs + 1):
        t = run_start + minutes * 60_000 * epoch / epochs - 100
        number = epoch * epoch_unit
        log(t - 50, "epoch_start", event="INTERVAL_START", epoch_num=number)
        log(t - 40, "epoch_stop", event="INTERVAL_END", epoch_num=number)
        log(t - 30, "eval_start", event="INTERVAL_START", epoch_num=number)
        log(t - 20, target.key, meets if converge and epoch == epochs else misses, epoch_num=number)
        log(t - 10, "eval_stop", event="INTERVAL_END", epoch_num=number)
    for key, value, metadata in extra:
        log(run_start + minutes * 60_000 - 5, key, value, **metadata)
    log(run_start + minutes * 60_000, "run_stop", event="INTERVAL_END", status="success" if converge else "aborted",
        epoch_num=epochs * epoch_unit)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def write_package(root, benchmark, ruleset, runs, *, division="closed", org="acme", system="sys1", **kwargs):
    """<root>/<division>/<org>/{systems/<system>.json, results/<system>/<benchmark>/result_<i>.txt}, one log
    per (minutes, converge) of `runs`; the description is this machine's, generated. Returns the org folder."""
    from benchmark.results import system_desc
    org_dir = Path(root) / division / org
    folder = org_dir / "results" / system / benchmark
    for i, (minutes, converge) in enumerate(runs):
        write_log(folder / f"result_{i}.txt", benchmark, ruleset, minutes=minutes, converge=converge,
                  division=division, seed=i + 1, start_ms=START_MS + i * 10**8, **kwargs)
    desc = dict(system_desc.describe(), submitter=org, division=division, system_name=system)
    (org_dir / "systems").mkdir(parents=True, exist_ok=True)
    (org_dir / "systems" / f"{system}.json").write_text(json.dumps(desc, indent=2))
    return org_dir
