"""measure/system_recipe.py: the benchmark scripts read config_<SYSTEM>.sh through run_and_time.sh's dry run."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from measure.system_recipe import parse_launch_command, system_recipe  # noqa: E402


def test_cpu_recipe_is_config_cpu_with_its_plans_global_batch_and_absolute_manifests(monkeypatch):
    for name in ("RNN_LAYERS", "BATCH_SIZE", "NPROC", "SYSTEM", "TRAIN_DATA_DIR", "EVAL_DATA_DIR", "DATASET"):
        monkeypatch.delenv(name, raising=False)
    recipe = system_recipe("CPU")
    assert recipe.nproc == 2 and recipe.nnodes == 1
    flags = recipe.flags
    assert flags["rnn_type"] == "lstm" and flags["time_stride"] == "2" and flags["amp"] == "off"
    assert flags["batch_size"] == "8"
    assert recipe.plan(["--num_gpus=0"]).global_batch == 16   # BATCH_SIZE 8 x NPROC 2
    assert flags["train_data_dir"] == str(ROOT / "data/synthetic/train.csv")
    assert flags["eval_data_dir"] == str(ROOT / "data/synthetic/dev.csv")
    assert not {"seed", "log_file", "output_dir", "system", "num_gpus"} & set(flags)
    assert "--rnn_hidden_size=128" in recipe.argv()


def test_environment_overrides_the_config_as_in_run_and_time(monkeypatch):
    monkeypatch.setenv("RNN_LAYERS", "2")
    monkeypatch.setenv("NPROC", "1")
    recipe = system_recipe("CPU")
    assert recipe.flags["rnn_layers"] == "2" and recipe.nproc == 1 and recipe.flags["batch_size"] == "8"
    assert recipe.plan(["--num_gpus=0"]).global_batch == 8


def test_a_bad_system_or_variable_is_an_error_naming_it(monkeypatch):
    with pytest.raises(SystemExit, match="no ./config_NOPE.sh"):
        system_recipe("NOPE")
    monkeypatch.setenv("AMP", "yes")
    with pytest.raises(SystemExit, match="AMP='yes'"):
        system_recipe("CPU")


def test_multi_node_launch_line_gives_the_plans_global_batch_and_keeps_absolute_paths():
    recipe = parse_launch_command("torchrun --nnodes=2 --nproc_per_node=8 --rdzv_endpoint=h:1 -m benchmark.train "
                                  "--batch_size=64 --train_data_dir=/data/a.csv,/data/b.csv --seed=3 --amp=bf16")
    assert (recipe.nproc, recipe.nnodes) == (8, 2)
    assert recipe.flags == {"batch_size": "64", "train_data_dir": "/data/a.csv,/data/b.csv", "amp": "bf16"}
    plan = recipe.plan(["--eval_data_dir=/data/dev.csv", "--num_gpus=0"], rank=9)
    assert plan.global_batch == 1024 and (plan.ctx.rank, plan.ctx.local_rank, plan.ctx.world_size) == (9, 1, 16)
