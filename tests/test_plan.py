"""benchmark.plan: every derived value of a run comes from one plan, checked before init_start."""
from dataclasses import asdict
import subprocess
import sys

import pytest
import torch

from benchmark.config import ConfigError, TrainConfig
from benchmark.distributed import DistContext
from benchmark.model import DeepSpeech2
from benchmark.optim import OPTIMIZERS
from benchmark.plan import MODEL_FLAGS, make_plan
from benchmark.trainer import Trainer


def config(**flags):
    return TrainConfig(train_data_dir="t.csv", eval_data_dir="d.csv", num_gpus=0, **flags)


def test_plan_derives_batch_epoch_and_schedule_from_config_and_context():
    plan = make_plan(config(batch_size=8, max_epochs=3, features="logmel", n_mels=40, rnn_hidden_size=64),
                     DistContext(rank=1, local_rank=1, world_size=2, local_world_size=2), num_train_utterances=101)
    assert plan.global_batch == 16 and plan.steps_per_epoch == 6 and plan.train_samples == 96   # ragged 5 dropped
    assert plan.total_steps == 18 and plan.device == torch.device("cpu") and plan.backend.name == "torch"
    assert plan.feature_spec.num_features == 40 and plan.model_args.num_features == 40
    assert plan.model_args.rnn_hidden_size == 64 and plan.autocast_dtype is None
    sampler = plan.build_sampler([float(i % 7) for i in range(101)])
    assert (len(sampler), sampler.samples_per_epoch, len(sampler.epoch_batches(1)[0])) == (6, 96, 8)
    single = make_plan(config(batch_size=8, schedule_epochs=5), num_train_utterances=101)
    assert (single.steps_per_epoch, single.train_samples, single.total_steps) == (13, 101, 65)
    assert make_plan(config(amp="bf16")).autocast_dtype == torch.bfloat16
    assert make_plan(config()).conv_layout == "channels_last"   # auto on the CPU
    assert make_plan(config(conv_layout="contiguous")).build_model().conv1[0].weight.is_contiguous()
    assert make_plan(config(), num_train_utterances=None).steps_per_epoch is None   # --eval_only


def test_model_flags_cover_the_model_and_its_features():
    assert set(MODEL_FLAGS) == {"features", "n_mels", "conv_channels", "time_stride", "rnn_type", "rnn_hidden_size",
                                "rnn_layers"}
    plan = make_plan(config(rnn_type="gru", rnn_layers=2, rnn_hidden_size=16, conv_channels=4, time_stride=4))
    model = plan.build_model()
    assert len(model.rnns) == 2 and model.rnns[0].forward_rnn.hidden_size == 16
    torch.manual_seed(plan.config.seed)
    same = DeepSpeech2(**asdict(plan.model_args))   # build_model seeds with --seed: same initial weights
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    other = make_plan(config(rnn_type="gru", rnn_layers=2, rnn_hidden_size=16, conv_channels=4, time_stride=4,
                             seed=2)).build_model()
    assert not torch.equal(other.fc[1].weight, model.fc[1].weight)


@pytest.mark.parametrize("flags,message", [
    ({"data_backend": "dali_gpu"}, "needs a GPU"),
    ({"speed_perturbation": "0.9,1.1", "data_backend": "torch"}, "needs a DALI backend"),
    ({"rnn_impl": "streams"}, "--rnn_impl streams needs a CUDA device"),
])
def test_what_cannot_run_here_is_a_config_error(flags, message):
    with pytest.raises(ConfigError, match=message):
        make_plan(config(**flags))


def test_too_few_utterances_for_one_global_batch_is_a_config_error():
    with pytest.raises(ConfigError, match="3 training utterances make no global batch of 4"):
        make_plan(config(batch_size=2), DistContext(world_size=2, local_world_size=2), num_train_utterances=3)


def test_optimizer_table_gives_the_choices_and_builds_each(tmp_path):
    assert list(OPTIMIZERS) == ["adamw", "sgd"]
    for name, cls in (("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        plan = make_plan(config(optimizer=name, rnn_hidden_size=8, rnn_layers=1, conv_channels=2), num_train_utterances=4)
        trainer = Trainer(plan)
        assert type(trainer.optimizer) is cls and trainer.training_model is trainer.model   # one process: no DDP
    with pytest.raises(ValueError, match="--optimizer 'lamb': unknown; choose one of adamw, sgd"):
        make_plan(config(optimizer="lamb"), num_train_utterances=4).build_optimizer(torch.nn.Linear(1, 1))


def test_the_recurrent_implementation_is_built_and_workers_follow_the_cores_this_process_may_use():
    import os
    plan = make_plan(config(rnn_impl="packed", rnn_hidden_size=8, rnn_layers=1, conv_channels=2),
                     DistContext(local_world_size=2, world_size=2))
    assert plan.build_model().rnn_impl == "packed"
    cores = len(os.sched_getaffinity(0))
    assert plan.threads == max(1, cores // 2) and plan.workers == max(1, cores // 2 - 1)
    if os.cpu_count() < 2:
        return
    # A process granted one core (taskset, SLURM, docker --cpuset) gets one thread, whatever the machine has.
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from benchmark.config import TrainConfig; from benchmark.plan import make_plan; "
            "plan = make_plan(TrainConfig(num_gpus=0)); print(plan.threads, plan.workers)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["1", "1"]
