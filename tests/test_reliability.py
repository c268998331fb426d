"""Reliability of one training process: kill -9 and resume, non-finite steps, result files never overwritten.

Faults are injected through benchmark/faults.py's environment variables; everything else is the real
training on the tiny espeak-ng corpus with a tiny model (4 steps per epoch).
"""
import os
import signal
import subprocess
import sys
import time

import torch

from test_train_e2e import SMALL_MODEL, read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 4   # 16 training utterances, --batch_size 4


def train_cmd(corpus, log_file, model_dir, *extra):
    return [sys.executable, "-m", "benchmark.train", "--train_data_dir", str(corpus / "train.csv"),
            "--eval_data_dir", str(corpus / "dev.csv"), "--log_file", str(log_file), "--model_dir", str(model_dir),
            "--target_wer", "0.01", *SMALL_MODEL, *extra]


def env_with(**variables):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS2_INJECT_")}
    return env | variables


def run(cmd, timeout=120, **variables):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env_with(**variables))


def wait_for_line(process, prefix):
    """Read the process's stderr until a line starts with prefix."""
    lines = []
    for line in process.stderr:
        if line.startswith(prefix):
            return
        lines.append(line)
    raise AssertionError(f"no line {prefix!r}: " + "".join(lines))


def values(events, key):
    return [(e["metadata"].get("epoch_num"), e["value"]) for e in events if e["key"] == key]


def test_kill_9_mid_epoch_then_resume_matches_uninterrupted_run(tiny_corpus, tmp_path):
    # 14 epochs at a high rate: the model starts to emit words, so the later WERs are not a trivial 1.0.
    epochs = ["--max_epochs", "14", "--schedule_epochs", "40", "--learning_rate", "1e-2"]
    straight = run(train_cmd(tiny_corpus, tmp_path / "straight.txt", tmp_path / "straight_ckpt", *epochs))
    assert straight.returncode == 3, straight.stderr   # target unreachable: aborted after 14 epochs
    expected = read_log(tmp_path / "straight.txt")

    # Same run, stalled at epoch 2's second step (global step 6) and killed there with SIGKILL.
    log_file, model_dir = tmp_path / "result.txt", tmp_path / "ckpt"
    cmd = train_cmd(tiny_corpus, log_file, model_dir, *epochs)
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=env_with(DS2_INJECT_STALL=str(STEPS_PER_EPOCH + 2)))
    try:
        wait_for_line(victim, "fault injection: rank 0 stalled at epoch 2")
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()
    killed = read_log(log_file)
    assert [e["metadata"]["epoch_num"] for e in killed if e["key"] == "epoch_start"] == [1, 2]
    assert "run_stop" not in [e["key"] for e in killed]
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoint_epoch0001.pt"]

    resumed = run(cmd + ["--resume", "true"])
    assert resumed.returncode == 3, resumed.stderr
    assert f"resume: continuing after epoch 1 from {model_dir / 'checkpoint_epoch0001.pt'}" in resumed.stdout
    events = read_log(log_file)   # the killed run's events, then the resumed run's, in one file
    keys = [e["key"] for e in events]
    assert keys.count("init_start") == 2 and keys.count("run_start") == 2 and keys.count("run_stop") == 1
    resume_events = [e for e in events if e["key"] == "resume"]
    assert len(resume_events) == 1 and resume_events[0]["value"]["epoch"] == 1
    second_run = events[keys.index("init_start", keys.index("init_start") + 1):]
    assert [e["metadata"]["epoch_num"] for e in second_run if e["key"] == "epoch_start"] == list(range(2, 15))
    assert second_run[-1]["key"] == "run_stop" and second_run[-1]["metadata"]["status"] == "aborted"
    # Bitwise equal on the CPU: single-threaded oneDNN/ATen kernels are deterministic and the resumed run
    # restores weights, optimizer, schedule and RNG; the sampler's order depends only on (seed, epoch).
    for key in ("eval_accuracy", "train_loss"):
        assert values(events, key) == values(expected, key), key
    wers = [wer for _, wer in values(events, "eval_accuracy")]
    assert len(wers) == 14 and min(wers) < 1.0
    final, final_expected = (torch.load(d / "checkpoint_epoch0014.pt", weights_only=False)["model"]
                             for d in (model_dir, tmp_path / "straight_ckpt"))
    assert all(torch.equal(final[name], final_expected[name]) for name in final_expected)


def test_resume_starts_fresh_without_checkpoint_and_refuses_another_runs_checkpoint(tiny_corpus, tmp_path):
    first = run(train_cmd(tiny_corpus, tmp_path / "a.txt", tmp_path / "ckpt", "--max_epochs", "1", "--resume", "true"))
    assert first.returncode == 3, first.stderr
    assert f"resume: no checkpoint in {tmp_path / 'ckpt'}, starting fresh" in first.stdout
    events = read_log(tmp_path / "a.txt")
    assert [e["value"] for e in events if e["key"] == "resume"] == [{"checkpoint": None, "epoch": 0}]
    assert [e["metadata"]["epoch_num"] for e in events if e["key"] == "epoch_start"] == [1]

    done = run(train_cmd(tiny_corpus, tmp_path / "b.txt", tmp_path / "ckpt", "--max_epochs", "1",
                         "--resume", "true", "--learning_rate", "0.01"))
    assert done.returncode == 2
    assert "--learning_rate 0.003 in the checkpoint, 0.01 now" in done.stderr
    assert read_log(tmp_path / "b.txt") == []


def test_nonfinite_steps_are_skipped_counted_and_not_applied(tiny_corpus, tmp_path):
    log_file, model_dir = tmp_path / "log.txt", tmp_path / "ckpt"
    done = run(train_cmd(tiny_corpus, log_file, model_dir, "--max_epochs", "1", "--max_nonfinite_steps", "3"),
               DS2_INJECT_NONFINITE="2,3")
    assert done.returncode == 3, done.stderr   # ran to --max_epochs: two bad steps in a row are tolerated
    assert done.stderr.count("non-finite loss, step skipped") == 2
    events = read_log(log_file)
    assert [e["value"] for e in events if e["key"] == "nonfinite_steps_skipped"] == [2]
    (_, loss), = values(events, "train_loss")
    (_, wer), = values(events, "eval_accuracy")
    assert torch.isfinite(torch.tensor([loss, wer])).all()
    state = torch.load(model_dir / "checkpoint_epoch0001.pt", weights_only=False)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    # AdamW counted only the two good steps of the four: the bad ones never reached the weights.
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {2.0}
    assert state["nonfinite_skipped"] == 2


def test_too_many_nonfinite_steps_in_a_row_abort(tiny_corpus, tmp_path):
    log_file = tmp_path / "log.txt"
    done = run(train_cmd(tiny_corpus, log_file, tmp_path / "ckpt", "--max_epochs", "2", "--max_nonfinite_steps", "3"),
               DS2_INJECT_NONFINITE="1,3,4,5")
    assert done.returncode == 3
    assert ("3 consecutive steps with non-finite loss or gradients (epoch 2, step 1; --max_nonfinite_steps 3); "
            "stopping with status aborted") in done.stderr
    events = read_log(log_file)
    assert [e["value"] for e in events if e["key"] == "nonfinite_steps_skipped"] == [4]
    assert [e["metadata"]["epoch_num"] for e in events if e["key"] == "eval_accuracy"] == [1]
    assert events[-1]["key"] == "run_stop" and events[-1]["metadata"] == {
        **events[-1]["metadata"], "status": "aborted", "epoch_num": 2}


def test_a_log_file_with_a_result_is_never_overwritten(tiny_corpus, tmp_path):
    log_file = tmp_path / "result_1.txt"
    log_file.write_text(":::MLLOG {\"key\": \"run_stop\"}\n")
    done = run(train_cmd(tiny_corpus, log_file, tmp_path / "ckpt", "--max_epochs", "1"))
    assert done.returncode == 2
    assert f"--log_file {log_file}: already holds a run's log" in done.stderr
    assert log_file.read_text() == ":::MLLOG {\"key\": \"run_stop\"}\n"
    assert not (tmp_path / "ckpt").exists()


def test_two_runs_on_one_log_file_do_not_collide(tiny_corpus, tmp_path):
    log_file = tmp_path / "result_1.txt"
    first = subprocess.Popen(train_cmd(tiny_corpus, log_file, tmp_path / "ckpt1", "--max_epochs", "2"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=env_with(DS2_INJECT_STALL="1"))
    try:
        wait_for_line(first, "fault injection: rank 0 stalled")   # it holds the log file now
        second = run(train_cmd(tiny_corpus, log_file, tmp_path / "ckpt2", "--max_epochs", "1", "--resume", "true"))
        assert second.returncode == 2
        assert f"--log_file {log_file}: another running training holds it" in second.stderr
    finally:
        first.kill()
        first.wait()
    assert [e["key"] for e in read_log(log_file)].count("init_start") == 1


def test_bad_fault_injection_value_is_a_configuration_error(tiny_corpus, tmp_path):
    done = run(train_cmd(tiny_corpus, tmp_path / "log.txt", tmp_path / "ckpt"), DS2_INJECT_NONFINITE="two")
    assert done.returncode == 2 and "DS2_INJECT_NONFINITE='two'" in done.stderr
    assert not (tmp_path / "log.txt").exists()
