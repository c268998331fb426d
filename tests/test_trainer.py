"""benchmark.trainer's step without host synchronisation: skips decided on the device, counted at check points."""
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.data.batch import Batch
from benchmark.faults import FaultInjector
from benchmark.plan import make_plan
from benchmark.trainer import (APPLIED, NONFINITE_GRADS, NONFINITE_LOSS, OVERFLOW, NonFiniteError, NonFiniteSteps,
                               Trainer)


def tiny_plan(**flags):
    config = TrainConfig(train_data_dir="t.csv", eval_data_dir="d.csv", num_gpus=0, features="logmel", n_mels=40,
                         rnn_type="gru", rnn_hidden_size=8, rnn_layers=1, conv_channels=2, batch_size=2, **flags)
    return make_plan(config, num_train_utterances=16)


def tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(2, 40, 50, generator=g), torch.tensor([50, 40]), torch.randint(1, 29, (2, 5), generator=g),
                 torch.tensor([5, 4]))


def weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_nonfinite_step_is_skipped_on_the_device_and_a_finite_one_applied(optimizer):
    trainer = Trainer(tiny_plan(optimizer=optimizer), FaultInjector(environ={"DS2_INJECT_NONFINITE": "1"}))
    assert trainer.skips_on_device == (optimizer == "adamw")   # fused AdamW; SGD reads the status on the host
    before = weights(trainer)
    result = trainer.train_step(tiny_batch(), global_step=1)
    assert result.status.shape == () and int(result.status) == NONFINITE_LOSS and not result.applied
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert all(float(s.get("step", 0)) == 0 for s in trainer.optimizer.state.values())   # no AdamW step counted
    assert trainer.scheduler.last_epoch == 1   # the schedule moves on, as before
    result = trainer.train_step(tiny_batch(), global_step=2)
    assert int(result.status) == APPLIED and result.applied
    assert not all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert not hasattr(trainer.optimizer, "found_inf")


def test_device_skipping_leaves_the_maths_of_an_applied_step_unchanged():
    """Fused AdamW given found_inf = 0 updates bitwise as a plain optimizer.step() does (the old step)."""
    device_side, host_side = Trainer(tiny_plan()), Trainer(tiny_plan())
    host_side.skips_on_device = False
    for seed in range(3):
        device_side.train_step(tiny_batch(seed))
        host_side.train_step(tiny_batch(seed))
    assert all(torch.equal(a, b) for a, b in zip(weights(device_side).values(), weights(host_side).values()))


def test_fp16_overflows_are_the_scalers_until_its_scale_falls_below_one():
    trainer = Trainer(tiny_plan(amp="fp16"))
    statuses = [int(trainer.train_step(tiny_batch()).status) for _ in range(12)]
    # The default scale (65536) overflows fp16 gradients of this loss; halved each time until it fits.
    assert statuses[0] == OVERFLOW and APPLIED in statuses
    assert set(statuses[:statuses.index(APPLIED)]) == {OVERFLOW}
    # Infinite gradients with a finite loss: an overflow while the (halved) scale is >= 1, a fault below.
    trainer.model.fc[1].bias.register_hook(lambda grad: grad * float("inf"))
    assert int(trainer.train_step(tiny_batch()).status) == OVERFLOW
    trainer.scaler.update(new_scale=1.0)
    assert int(trainer.train_step(tiny_batch()).status) == NONFINITE_GRADS   # halved to 0.5


def record_all(steps, statuses):
    for step, status in enumerate(statuses, 1):
        steps.record(epoch=2, step=step, status=torch.tensor(status))


def test_nonfinite_steps_are_counted_in_step_order_when_read(capsys):
    steps = NonFiniteSteps(limit=3)
    record_all(steps, [APPLIED, NONFINITE_LOSS, NONFINITE_GRADS, APPLIED, OVERFLOW, NONFINITE_LOSS, NONFINITE_LOSS])
    assert steps.skipped == 0   # nothing read yet: no synchronisation happened
    steps.check()
    assert (steps.skipped, steps.consecutive, steps.pending) == (5, 2, [])
    assert capsys.readouterr().err.splitlines() == [
        "warning: epoch 2 step 2: non-finite loss, step skipped",
        "warning: epoch 2 step 3: non-finite gradients, step skipped",
        "warning: epoch 2 step 5: non-finite gradients, step skipped",   # an fp16 overflow: counted, not a fault
        "warning: epoch 2 step 6: non-finite loss, step skipped",
        "warning: epoch 2 step 7: non-finite loss, step skipped"]


def test_the_limit_raises_naming_the_step_that_reached_it_even_when_read_later(capsys):
    steps = NonFiniteSteps(limit=3)
    record_all(steps, [NONFINITE_LOSS, NONFINITE_LOSS, APPLIED, NONFINITE_GRADS, NONFINITE_LOSS, NONFINITE_LOSS,
                       NONFINITE_LOSS, APPLIED, APPLIED])
    with pytest.raises(NonFiniteError, match=r"^3 consecutive steps with non-finite loss or gradients \(epoch 2, "
                                             r"step 6; --max_nonfinite_steps 3\)$"):
        steps.check()
    # Counted up to the step that reached the limit, as an immediate check would have stopped there.
    assert steps.skipped == 5 and capsys.readouterr().err.count("step skipped") == 5
    with pytest.raises(NonFiniteError):
        steps.check()


def test_an_epoch_reads_the_statuses_at_check_points_and_reports_throughput(tiny_corpus):
    from benchmark.data.manifest import read_manifest
    plan = tiny_plan(max_nonfinite_steps=2, log_every=0)
    utterances = read_manifest(tiny_corpus / "train.csv")
    plan = make_plan(plan.config, num_train_utterances=len(utterances))
    trainer = Trainer(plan, FaultInjector(environ={"DS2_INJECT_NONFINITE": "3"}), matmul_peak=(1e11, "fp32"))
    sampler = plan.build_sampler([u.duration for u in utterances])
    loader = plan.build_loader(utterances, train=True)
    stats = trainer.train_epoch(1, loader.batches(sampler.epoch_batches(1)))
    assert stats["skipped"] == 1 and trainer.nonfinite_skipped == 1 and trainer.nonfinite.pending == []
    rate = stats["throughput"]
    assert rate.utterances == 16 and rate.precision == "fp32" and rate.peak_flops == 1e11
    frames = sum(int(b.feature_lengths.sum()) for b in loader.batches(sampler.epoch_batches(1)))
    assert rate.audio_seconds == frames / 100
    batches = list(loader.batches(sampler.epoch_batches(1)))
    useful = sum(trainer.costs.utterance_flops(int(n)) for b in batches for n in b.feature_lengths)
    padded = sum(len(b.feature_lengths) * trainer.costs.utterance_flops(b.features.shape[2]) for b in batches)
    assert rate.useful_flops == useful and rate.padded_flops == padded
