"""DistributedDataParallel on the CPU (gloo) through torchrun: training, global WER, failed ranks, two nodes.

Every run is the real `python -m benchmark.train` under the real torchrun, 2 processes with 1 thread each,
on the tiny espeak-ng corpus; faults are injected through benchmark/faults.py's environment variables.
"""
import os
import socket
import subprocess
import sys
import time

from test_train_e2e import SMALL_MODEL, read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# 2 utterances per rank: 4 global steps per epoch on the 16 training utterances; eval batches of 2 so that
# both ranks evaluate part of the 6 dev utterances.
DDP_MODEL = SMALL_MODEL + ["--batch_size", "2", "--eval_batch_size", "2", "--num_gpus", "0"]


def train_args(corpus, log_file, model_dir, *extra):
    return ["-m", "benchmark.train", "--train_data_dir", str(corpus / "train.csv"),
            "--eval_data_dir", str(corpus / "dev.csv"), "--log_file", str(log_file), "--model_dir", str(model_dir),
            "--target_wer", "0.01", *DDP_MODEL, *extra]


def env_with(**variables):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS2_INJECT_")}
    return env | {"OMP_NUM_THREADS": "1"} | variables


def torchrun(args, timeout=180, **variables):
    return subprocess.run(TORCHRUN + ["--standalone", "--nproc_per_node=2", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env_with(**variables))


def keys(events):
    return [e["key"] for e in events]


def test_two_processes_train_and_their_global_wer_equals_one_process_eval(tiny_corpus, tmp_path):
    log_file, model_dir = tmp_path / "result.txt", tmp_path / "ckpt"
    # Enough steps (14 epochs at a high rate) for the model to emit words, so the WER is not a trivial 1.0.
    done = torchrun(train_args(tiny_corpus, log_file, model_dir, "--max_epochs", "14", "--schedule_epochs", "40",
                               "--learning_rate", "1e-2"))
    assert "exitcode  : 3" in done.stderr, done.stderr   # ran all epochs without the target: aborted
    events = read_log(log_file)
    # Only rank 0 logs: every once-per-run event once, every per-epoch event once per epoch.
    for key in ("init_start", "init_stop", "run_start", "run_stop", "global_batch_size", "seed"):
        assert keys(events).count(key) == 1, key
    assert keys(events).count("eval_accuracy") == 14
    by_key = {e["key"]: e for e in events}
    assert by_key["global_batch_size"]["value"] == 4 and by_key["model_config"]["value"]["world_size"] == 2
    assert by_key["run_stop"]["metadata"]["status"] == "aborted"
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoint_epoch0013.pt", "checkpoint_epoch0014.pt"]
    ddp_wer = [e["value"] for e in events if e["key"] == "eval_accuracy"][-1]
    assert 0.0 < ddp_wer < 1.0

    single = subprocess.run([sys.executable, *train_args(tiny_corpus, tmp_path / "unused.txt", model_dir,
                                                         "--eval_only", "true")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env_with())
    assert single.returncode == 0, single.stderr
    (line,) = [line for line in single.stdout.splitlines() if line.startswith("EVAL_ONLY ")]
    result = __import__("json").loads(line.removeprefix("EVAL_ONLY "))
    assert result["epoch"] == 14 and result["world_size"] == 1
    # Same utterances, same batches, rank 0's weights and batch-norm statistics: the same corpus WER exactly.
    assert result["wer"] == ddp_wer and result["errors"] / result["words"] == ddp_wer
    assert not (tmp_path / "unused.txt").exists()   # evaluation only: no MLPerf log
    # --eval_only needs no training manifest: the same WER without --train_data_dir
    no_train = [arg for arg in train_args(tiny_corpus, tmp_path / "unused.txt", model_dir, "--eval_only", "true")]
    del no_train[no_train.index("--train_data_dir"):no_train.index("--train_data_dir") + 2]
    alone = subprocess.run([sys.executable, *no_train], capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env=env_with())
    assert alone.returncode == 0, alone.stderr
    assert f'"wer": {ddp_wer}' in alone.stdout


def run_with_fault(tiny_corpus, tmp_path, fault, *extra):
    """Launch 2 ranks with a fault; return (completed process, seconds from the fault to torchrun's exit)."""
    log_file = tmp_path / "result.txt"
    cmd = TORCHRUN + ["--standalone", "--nproc_per_node=2",
                      *train_args(tiny_corpus, log_file, tmp_path / "ckpt", "--max_epochs", "3", *extra)]
    with open(tmp_path / "stdout.txt", "w") as stdout:
        process = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                   env=env_with(**fault))
        try:
            stderr = []
            for line in process.stderr:
                stderr.append(line)
                if line.startswith("fault injection:"):
                    break
            fault_time = time.monotonic()
            stderr += process.stderr.readlines()   # until torchrun exits and closes the pipe
            process.wait(timeout=60)
            seconds = time.monotonic() - fault_time
        finally:
            process.kill()
            process.wait()
    return process.returncode, "".join(stderr), read_log(log_file), seconds


def test_a_dead_rank_stops_the_run_with_status_aborted(tiny_corpus, tmp_path):
    status, stderr, events, seconds = run_with_fault(tiny_corpus, tmp_path, {"DS2_INJECT_EXIT": "1:6"},
                                                     "--dist_timeout", "30")
    assert "fault injection: rank 1 killed at epoch 2, global step 6" in stderr
    assert status != 0 and seconds < 20, (status, seconds, stderr[-2000:])
    # Rank 0's collective failed when the peer's connection closed (gloo's wording varies with the
    # collective it was in); it logged the abort and failed.
    assert "stopping with status aborted" in stderr, stderr[-3000:]
    assert events[-1]["key"] == "run_stop" and events[-1]["metadata"]["status"] == "aborted"
    assert events[-1]["metadata"]["epoch_num"] == 2


def test_when_rank_0_dies_the_others_stop_and_its_log_ends_without_run_stop(tiny_corpus, tmp_path):
    status, stderr, events, seconds = run_with_fault(tiny_corpus, tmp_path, {"DS2_INJECT_EXIT": "0:6"},
                                                     "--dist_timeout", "30")
    assert "fault injection: rank 0 killed at epoch 2, global step 6" in stderr
    assert status != 0 and seconds < 20, (status, seconds, stderr[-2000:])
    # The writer itself was killed: its log stops at epoch 2's start, no run_stop. A run without
    # run_stop is never scored (the launch scripts and the report treat it as failed).
    assert keys(events)[-1] == "epoch_start" and "run_stop" not in keys(events)


def test_a_hung_rank_is_caught_by_the_collective_timeout(tiny_corpus, tmp_path):
    status, stderr, events, seconds = run_with_fault(tiny_corpus, tmp_path, {"DS2_INJECT_STALL": "1:6"},
                                                     "--dist_timeout", "5")
    assert status != 0 and 5 <= seconds < 25, (status, seconds, stderr[-2000:])
    assert "stopping with status aborted" in stderr
    assert events[-1]["key"] == "run_stop" and events[-1]["metadata"]["status"] == "aborted"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_agents_form_a_two_node_job(tiny_corpus, tmp_path):
    port, log_file = free_port(), tmp_path / "result.txt"
    agents = [subprocess.Popen(TORCHRUN + ["--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1",
                                           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                                           "--rdzv_id=ds2perf-test", "--max_restarts=0",
                                           *train_args(tiny_corpus, log_file, tmp_path / "ckpt", "--max_epochs", "1")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env_with())
              for node in (0, 1)]
    try:
        outputs = [agent.communicate(timeout=150) for agent in agents]
    finally:
        for agent in agents:
            agent.kill()
            agent.wait()
    # Both workers ran the epoch and stopped with status aborted (exit 3: one epoch can't reach the target).
    for agent, (_, stderr) in zip(agents, outputs):
        assert "exitcode  : 3" in stderr, stderr[-3000:]
    events = read_log(log_file)
    by_key = {e["key"]: e for e in events}
    assert keys(events).count("run_start") == 1 and keys(events).count("eval_accuracy") == 1
    assert by_key["model_config"]["value"]["world_size"] == 2 and by_key["global_batch_size"]["value"] == 4
    assert by_key["train_samples"]["value"] == 16 and by_key["run_stop"]["metadata"]["status"] == "aborted"


def test_process_group_always_trains_one_process_under_ddp_with_the_same_numbers(tiny_corpus, tmp_path):
    """--process_group always (config_SYNTH_1GPU.sh: DDP over NCCL on one GPU) forms a group of one process,
    under torchrun and without it, and trains exactly as the plain single process does (gloo here)."""
    def run(name, *launcher, group="auto"):
        log_file = tmp_path / f"{name}.txt"
        args = train_args(tiny_corpus, log_file, tmp_path / f"ckpt_{name}", "--max_epochs", "2",
                          "--process_group", group)
        done = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=180, cwd=ROOT, env=env_with())
        assert "exitcode  : 3" in done.stderr or done.returncode == 3, done.stderr[-3000:]
        events = read_log(log_file)
        config = next(e for e in events if e["key"] == "model_config")["value"]
        numbers = [(e["key"], e["value"]) for e in events if e["key"] in ("train_loss", "eval_accuracy")]
        return config, numbers

    plain_config, plain = run("plain", sys.executable)
    torchrun_config, under_torchrun = run("torchrun", *TORCHRUN, "--standalone", "--nproc_per_node=1", group="always")
    alone_config, alone = run("alone", sys.executable, group="always")   # no torchrun: an in-process store
    assert plain_config["process_group"] is None
    for config in (torchrun_config, alone_config):
        assert config["process_group"] == "gloo" and config["world_size"] == 1
    assert len(plain) == 4 and under_torchrun == plain and alone == plain


EXIT_AFTER_GROUP = """
import atexit, sys
import torch
from benchmark import distributed
atexit.register(lambda: print(" finalized", end=""))
if sys.argv[1] == "gloo":
    distributed.init_distributed(use_cuda=False, always=True)   # a gloo group of one, in-process store
    distributed.all_reduce_sum(torch.ones(2))
    distributed.shutdown()
print("written", end="")   # a pipe is block-buffered: lost unless exit_process flushes it
distributed.exit_process(3)
"""


def test_after_a_gloo_group_the_process_exits_with_its_status_flushed_and_without_finalization():
    """distributed.exit_process: a gloo group's worker threads can abort the interpreter's finalization
    (SIGABRT on the rank that exits right after the last all-reduce), so that exit skips it; the status
    and everything printed still arrive. Without a group the exit is the ordinary one (atexit runs)."""
    for group, tail in (("gloo", ""), ("none", " finalized")):
        done = subprocess.run([sys.executable, "-c", EXIT_AFTER_GROUP, group], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, env=env_with())
        assert done.returncode == 3, done.stderr
        assert done.stdout == "written" + tail, (group, done.stdout, done.stderr)
