"""Train DeepSpeech2 until the evaluation WER reaches the target; the MLPerf log says how long it took.

Usage:
  # one process (CPU, or one GPU)
  python -m benchmark.train --train_data_dir data/synthetic/train.csv --eval_data_dir data/synthetic/dev.csv \
      --target_wer 0.30 --output_dir runs/try1 --model_dir runs/try1/ckpt
  # after a crash or pre-emption: the same command plus --resume true (continues after the last checkpoint)
  # 8 GPUs on one node (or 2 CPU processes with gloo: --nproc_per_node=2 --num_gpus 0)
  torchrun --standalone --nproc_per_node=8 -m benchmark.train --train_data_dir ... --eval_data_dir ...
  # two nodes, one agent on each (same command, --node_rank 0 and 1)
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 \
      -m benchmark.train ...
  # WER of the latest checkpoint (any number of processes; no MLPerf log)
  python -m benchmark.train --eval_only true --model_dir runs/try1/ckpt --train_data_dir ... --eval_data_dir ...
  # check flags, device, backend and every manifest row (headers only) and exit 0/2, writing nothing
  python -m benchmark.train --train_data_dir ... --eval_data_dir ... --check_only true
  python -m benchmark.train --help        # every flag, with its default

Before init_start: the configuration is validated, the preflight (benchmark/preflight.py) checks every
manifest row by its WAV header and the transcripts, and the run plan checks backend and device; any
problem stops with exit status 2 naming the flag or the manifest line, and no log file is created (a
result number is not used up). --skip_bad_utterances true drops bad rows instead and logs their count.

Timeline (MLPerf): init_start -> build data, model, optimizer -> init_stop -> run_start -> epochs of
[epoch_start, steps, epoch_stop, eval_start, eval_accuracy (WER), eval_stop] -> run_stop with status
success (WER <= target) or aborted (--max_epochs reached, too many non-finite steps, a failed rank, SIGTERM).

Results are never overwritten: the run refuses a non-empty --log_file (or one another run holds open)
unless --resume true. Checkpoints (--model_dir) are written atomically at every epoch end by rank 0.
A resumed run appends to the same log: after the killed run's events (epochs from 1, no run_stop) come a
second init_start, a `resume` event naming the checkpoint and epoch, init_stop, run_start, the remaining
epochs numbered as they continue, and run_stop. Such a log is a record of what happened, not a valid
MLPerf result (its timed region was interrupted; the compliance checker rejects the second run_start).
Non-finite steps: skipped (no optimizer step), counted (`nonfinite_steps_skipped` at run_stop), and
--max_nonfinite_steps in a row abort the run. Faults can be injected for tests: see benchmark/faults.py.
Exit status: 0 success, 3 aborted, 2 bad configuration, 143 terminated (SIGTERM), 1 error (e.g. a dead rank).
"""
from dataclasses import replace
import fcntl
import json
import os
import signal
import sys

import torch

from benchmark import checkpoint, distributed
from benchmark.config import ConfigError, parse_config
from benchmark.data.manifest import ManifestError
from benchmark.faults import FaultInjector
from benchmark.flops import measure_matmul_peak
from benchmark.mlperf_log import Key, MLPerfLogger, Status
from benchmark.optim import optimizer_hyperparameters
from benchmark.plan import MODEL_FLAGS, make_plan
from benchmark.preflight import check_run
from benchmark.results import system_desc
from benchmark.trainer import Evaluator, NonFiniteError, Trainer, wer_of

EXIT_ABORTED, EXIT_BAD_CONFIG, EXIT_TERMINATED = 3, 2, 128 + signal.SIGTERM
# Flags a resumed run may change: where files go, how it reports, when it stops; every other flag
# (model, data, optimizer, schedule, seed) must equal the checkpointed run's or it would be another run.
RESUME_MAY_DIFFER = frozenset({"train_data_dir", "eval_data_dir", "data_backend", "num_workers", "num_gpus",
                               "num_threads", "eval_batch_size", "target_wer", "max_nonfinite_steps",
                               "dist_timeout", "model_dir", "output_dir", "log_file", "resume", "eval_only",
                               "system", "log_every", "check_only", "skip_bad_utterances"})


class Terminated(BaseException):
    """SIGTERM (torchrun stopping the group after a rank failed, SLURM pre-emption): stop, log aborted."""


def _raise_terminated(signum, frame):
    raise Terminated(f"received {signal.Signals(signum).name}")


def claim_log_file(config):
    """Open the MLPerf log for this run (rank 0), refusing one that holds a result or another run's lock.

    The flock is held until the process exits, so two runs started at once on one file can't both write.
    Returns the open descriptor (keep it referenced).
    """
    path = config.resolved_log_file()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"--log_file {path}: another running training holds it; give this run its own file")
    size = os.fstat(fd).st_size
    if size and not config.resume:
        os.close(fd)
        raise ConfigError(f"--log_file {path}: already holds a run's log ({size} bytes); results are never "
                          "overwritten: give a new file, or add --resume true to continue that run")
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")   # the killed run died mid-line: keep our first event on a line of its own
    return fd


def config_mismatches(saved_config, config, names):
    return [f"--{n} {saved_config[n]!r} in the checkpoint, {getattr(config, n)!r} now"
            for n in names if n in saved_config and saved_config[n] != getattr(config, n)]


def load_latest(config, ctx):
    """(path, state) of the newest checkpoint in --model_dir, read by rank 0 and sent to every rank."""
    found = None
    if ctx.is_main:
        path = checkpoint.latest_checkpoint(config.model_dir)
        found = (str(path), checkpoint.load_checkpoint(path)) if path else (None, None)
    return distributed.broadcast_object(found)


def log_header(log, plan, eval_samples, skipped=None):
    """The MLPerf events between init_start and init_stop: submission, hyperparameters, data, model."""
    config, ctx = plan.config, plan.ctx
    log.submission_info(org="ds2perf", platform=config.system)
    log.event(Key.SEED, config.seed)
    log.event(Key.GLOBAL_BATCH_SIZE, plan.global_batch)
    for key, value in optimizer_hyperparameters(config, plan.total_steps).items():
        log.event(key, value)
    log.event(Key.TARGET_WER, config.target_wer)
    log.event(Key.TRAIN_SAMPLES, plan.train_samples)
    log.event(Key.EVAL_SAMPLES, eval_samples)
    if skipped is not None:   # --skip_bad_utterances: how many manifest rows the preflight dropped
        log.event(Key.SKIPPED_UTTERANCES, sum(skipped.values()), metadata=skipped)
    if ctx.is_main:   # the machine this run ran on (rank 0's node; only rank 0 logs)
        accelerators = ctx.local_world_size if plan.device.type == "cuda" else 0
        log.event(Key.MACHINE, system_desc.identity(system_desc.describe(
            accelerators, nodes=max(ctx.world_size // ctx.local_world_size, 1))))
    log.event(Key.MODEL_CONFIG, {k: getattr(config, k) for k in (
        "rnn_type", "rnn_hidden_size", "rnn_layers", "conv_channels", "time_stride", "features", "n_mels",
        "amp", "data_backend")} | {"backend": plan.backend.name, "world_size": ctx.world_size,
                                   "threads_per_process": plan.threads, "device": str(plan.device),
                                   "process_group": distributed.backend_name()})


def evaluate_only(config, ctx, eval_utts):
    """--eval_only: the WER of the latest checkpoint, built with the model flags stored in it."""
    path, state = load_latest(config, ctx)
    if path is None:
        raise ConfigError(f"--eval_only: no checkpoint in --model_dir {config.model_dir}")
    plan = make_plan(replace(config, **{n: state["config"][n] for n in MODEL_FLAGS if n in state["config"]}), ctx)
    model = plan.build_model()
    model.load_state_dict(state["model"])
    errors, words = Evaluator(plan, eval_utts).counts(model)
    if ctx.is_main:
        print("EVAL_ONLY " + json.dumps({"checkpoint": path, "epoch": state["epoch"], "wer": wer_of(errors, words),
                                         "errors": errors, "words": words, "world_size": ctx.world_size}),
              flush=True)
    distributed.shutdown()
    return 0


def train(plan, train_utts, eval_utts, faults, saved, skipped=None):
    """init -> run_start -> epochs -> run_stop. Returns the exit status."""
    config, ctx = plan.config, plan.ctx
    log = MLPerfLogger(config.resolved_log_file(), rank=ctx.rank)
    log.event(Key.CACHE_CLEAR, True)
    log.start(Key.INIT_START)
    sampler = plan.build_sampler([u.duration for u in train_utts])
    train_loader = plan.build_loader(train_utts, train=True)
    evaluator = Evaluator(plan, eval_utts)
    trainer = Trainer(plan, faults, matmul_peak=measure_matmul_peak(plan))   # the peak: in init, not timed
    if config.resume:
        path, state = saved
        if state is None:
            print(f"resume: no checkpoint in {config.model_dir}, starting fresh", flush=True)
        else:
            trainer.load(state)
            print(f"resume: continuing after epoch {state['epoch']} from {path}", flush=True)
        log.event(Key.RESUME, {"checkpoint": path, "epoch": state["epoch"] if state else 0})
    log_header(log, plan, len(eval_utts), skipped)
    log.end(Key.INIT_STOP)
    distributed.barrier()
    log.start(Key.RUN_START)
    status, epoch, exit_status = Status.ABORTED, trainer.start_epoch - 1, EXIT_ABORTED
    try:
        for epoch in range(trainer.start_epoch, config.max_epochs + 1):
            log.start(Key.EPOCH_START, metadata={Key.EPOCH_NUM: epoch})
            stats = trainer.train_epoch(epoch, train_loader.batches(sampler.epoch_batches(epoch)))
            log.end(Key.EPOCH_STOP, metadata={Key.EPOCH_NUM: epoch})
            log.event(Key.TRAIN_LOSS, stats["loss"], metadata={Key.EPOCH_NUM: epoch})
            log.event(Key.DATA_WAIT_SECONDS, round(stats["data_wait"], 3),
                      metadata={Key.EPOCH_NUM: epoch, "epoch_seconds": round(stats["seconds"], 3),
                                "fraction": round(stats["data_wait"] / stats["seconds"], 4)})
            throughput = stats["throughput"]
            log.event(Key.TRAIN_THROUGHPUT, round(throughput.tflops, 6),
                      metadata={Key.EPOCH_NUM: epoch, **throughput.metadata()})
            log.start(Key.EVAL_START, metadata={Key.EPOCH_NUM: epoch})
            wer = wer_of(*evaluator.counts(trainer.model))
            log.event(Key.EVAL_ACCURACY, wer, metadata={Key.EPOCH_NUM: epoch})
            log.end(Key.EVAL_STOP, metadata={Key.EPOCH_NUM: epoch})
            if ctx.is_main:
                print(f"epoch {epoch}: loss {stats['loss']:.3f}, WER {wer:.4f} (target {config.target_wer}), "
                      f"{stats['samples'] / stats['seconds']:.1f} utt/s, {throughput.text()}, "
                      f"data wait {100 * stats['data_wait'] / stats['seconds']:.1f}%"
                      + (f", {stats['skipped']} non-finite steps skipped" if stats["skipped"] else ""), flush=True)
            if config.model_dir and ctx.is_main:
                checkpoint.save_checkpoint(config.model_dir, epoch, trainer.state(epoch))
            if wer <= config.target_wer:
                status = Status.SUCCESS
                break
    except NonFiniteError as error:
        print(f"error: {error}; stopping with status aborted", file=sys.stderr, flush=True)
    except Terminated as error:
        print(f"error: {error}; stopping with status aborted", file=sys.stderr, flush=True)
        exit_status = EXIT_TERMINATED
    except Exception as error:   # e.g. a peer rank died: log the abort, then let the traceback say why
        print(f"error: {type(error).__name__}: {error}; stopping with status aborted", file=sys.stderr, flush=True)
        raise
    finally:
        log.event(Key.NONFINITE_STEPS_SKIPPED, trainer.nonfinite_skipped)
        log.end(Key.RUN_STOP, metadata={Key.STATUS: status, Key.EPOCH_NUM: epoch})
        log.close()
    distributed.shutdown()
    return 0 if status == Status.SUCCESS else exit_status


def check_resumable(saved, config, ctx):
    """ConfigError when the checkpoint `saved` = (path, state) belongs to another run than `config`."""
    path, state = saved
    if state is None:
        return
    problems = config_mismatches(state["config"], config, [n for n in state["config"] if n not in RESUME_MAY_DIFFER])
    if state.get("world_size", ctx.world_size) != ctx.world_size:
        problems.append(f"{state['world_size']} processes in the checkpoint, {ctx.world_size} now")
    if problems:
        raise ConfigError(f"--resume: {path} belongs to another run: " + "; ".join(problems))


def run(config):
    """One timed run (or, with --eval_only, one evaluation). Returns the process exit status."""
    ctx = distributed.context_from_environment()
    log_fd = None   # held open (with its lock) until the process exits
    try:
        faults = FaultInjector(ctx.rank)
        config.validate()   # again: run() may be called without parse_config
        # The preflight and the plan, before init_start: a bad manifest row, an empty evaluation set, a
        # backend or device this machine lacks fails here, naming it, and no log file is created.
        checked = check_run(config, report=print if ctx.is_main else lambda text: None)
        train_utts, eval_utts = checked.train, checked.eval
        plan = make_plan(config, ctx, None if config.eval_only else len(train_utts))
        if config.check_only:
            if ctx.is_main:
                print("PREFLIGHT " + json.dumps({
                    "ok": True, "train_utterances": len(train_utts), "eval_utterances": len(eval_utts),
                    "skipped": checked.skipped, "device": str(plan.device), "backend": plan.backend.name,
                    "global_batch": plan.global_batch, "steps_per_epoch": plan.steps_per_epoch}), flush=True)
            return 0
        if not config.eval_only and ctx.is_main:
            log_fd = claim_log_file(config)
    except (ConfigError, ManifestError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    distributed.init_distributed(plan.device.type == "cuda", config.dist_timeout,
                                 always=config.process_group == "always")
    torch.set_num_threads(plan.threads)
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if config.eval_only:
            return evaluate_only(config, ctx, eval_utts)
        saved = load_latest(config, ctx) if config.resume else (None, None)
        check_resumable(saved, config, ctx)
        return train(plan, train_utts, eval_utts, faults, saved,
                     checked.skipped if config.skip_bad_utterances else None)
    except (ConfigError, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except Terminated as error:
        print(f"error: {error} before the run started", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if log_fd is not None:
            os.close(log_fd)


def main(argv=None):
    config = parse_config(argv, description=__doc__.split("\n\n")[0])
    return run(config)


if __name__ == "__main__":
    distributed.exit_process(main())
