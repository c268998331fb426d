"""benchmark.flops: the analytic FLOP counts agree with torch.utils.flop_counter where it can see the matmuls."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.data.batch import Batch
from benchmark.flops import StepCosts, Throughput, forward_flops_per_frame, matmul_peak
from benchmark.model import DeepSpeech2, ModelArgs
from benchmark.trainer import ctc_loss

SMALL = ModelArgs(num_features=40, conv_channels=4, time_stride=2, rnn_type="lstm", rnn_hidden_size=16, rnn_layers=2)


def batch_of(lengths, features=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), features, max(lengths), generator=g)
    for i, n in enumerate(lengths):
        x[i, :, n:] = 0
    targets = torch.randint(1, 29, (len(lengths), 5), generator=g)
    return Batch(x, torch.tensor(lengths), targets, torch.full((len(lengths),), 5))


@pytest.mark.parametrize("time_stride", [2, 4])
def test_non_recurrent_flops_equal_torchs_flop_counter(time_stride):
    """Conv and fully connected layers, forward + backward of a real training step: the counter sees every
    matmul there, and none of oneDNN's fused LSTM (so the whole count is the non-recurrent part)."""
    args = ModelArgs(**{**vars(SMALL), "time_stride": time_stride})
    model = DeepSpeech2.from_args(args)
    batch = batch_of([90, 61, 33])
    with FlopCounterMode(display=False) as counter:
        logits, lengths = model(batch.features, batch.feature_lengths)
        ctc_loss(logits, lengths, batch).backward()
    rnn_counted = sum(sum(counts.values()) for name, counts in counter.get_flop_counts().items()
                      if name.startswith("DeepSpeech2.rnns"))
    assert rnn_counted == 0   # oneDNN's fused LSTM: invisible to the counter
    costs = StepCosts(args)
    t1, t2 = (int(t) for t in costs.output_frames(90))
    per_frame = forward_flops_per_frame(args)
    expected = 3 * (2 * per_frame["conv1"] * t1 + 3 * (per_frame["conv2"] + per_frame["fc"]) * t2)
    assert counter.get_total_flops() == expected
    # What the step computes on the padded batch = every utterance at the longest length.
    _, padded = costs.batch_flops(batch.feature_lengths, batch.features.shape[2])
    assert padded == expected + 3 * 3 * per_frame["rnn"] * t2


def cell_loop_flops(cell_class, input_size, hidden, steps, batch):
    """Forward + backward FLOPs of an unrolled LSTMCell/GRUCell loop, as torch's flop counter counts them."""
    cell = cell_class(input_size, hidden)
    x = torch.randn(steps, batch, input_size, requires_grad=True)
    h = torch.zeros(batch, hidden, requires_grad=True)
    state = (h, torch.zeros(batch, hidden)) if cell_class is torch.nn.LSTMCell else h
    with FlopCounterMode(display=False) as counter:
        outputs = []
        for t in range(steps):
            state = cell(x[t], state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
        torch.stack(outputs).sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("rnn_type,cell_class", [("lstm", torch.nn.LSTMCell), ("gru", torch.nn.GRUCell)])
def test_recurrent_flops_equal_the_gate_matmuls_of_an_unrolled_cell(rnn_type, cell_class):
    args = ModelArgs(**{**vars(SMALL), "rnn_type": rnn_type, "rnn_layers": 3})
    steps, batch = 7, 3
    conv_out = DeepSpeech2.from_args(args).rnns[0].forward_rnn.input_size
    inputs = [conv_out] + [2 * args.rnn_hidden_size] * (args.rnn_layers - 1)
    # Two directions per layer, each an unrolled cell over `steps` frames of `batch` utterances.
    counted = sum(2 * cell_loop_flops(cell_class, size, args.rnn_hidden_size, steps, batch) for size in inputs)
    assert counted == 3 * forward_flops_per_frame(args)["rnn"] * steps * batch


def test_useful_flops_count_each_utterance_at_its_length_on_the_device():
    costs = StepCosts(SMALL)
    lengths = [90, 61, 33]
    useful, padded = costs.batch_flops(torch.tensor(lengths), 90)
    assert useful.dtype == torch.float64 and useful.shape == ()
    assert float(useful) == sum(costs.utterance_flops(n) for n in lengths)
    assert padded == 3 * costs.utterance_flops(90) > float(useful)


def test_full_model_costs_what_the_architecture_notes_say():
    """8.6 GFLOP forward per second of audio (100 frames), 87% in the LSTMs; ~25.7 to train."""
    args = ModelArgs()   # 161 bins, conv 32, 5 x BiLSTM-800, time stride 2
    per_frame = forward_flops_per_frame(args)
    t1, t2 = (int(t) for t in StepCosts(args).output_frames(100))
    forward = per_frame["conv1"] * t1 + (per_frame["conv2"] + per_frame["rnn"] + per_frame["fc"]) * t2
    assert forward / 1e9 == pytest.approx(8.6, rel=0.01)
    assert per_frame["rnn"] * t2 / forward == pytest.approx(0.87, abs=0.005)
    assert StepCosts(args).utterance_flops(100) / 1e9 == pytest.approx(25.7, rel=0.01)


def test_throughput_reports_rates_and_the_fraction_of_the_peak():
    rate = Throughput(seconds=2.0, utterances=32, audio_seconds=100.0, useful_flops=4e12, padded_flops=5e12,
                      peak_flops=10e12, precision="bf16")
    assert rate.tflops == 2.0 and rate.fraction_of_peak == 0.2 and rate.padding_fraction == pytest.approx(0.2)
    assert rate.text() == "50.0 audio s/s 2 TFLOP/s (20.0% of bf16 matmul peak 10), padding 20.0%"
    assert rate.metadata() == {"utterances_per_second": 16.0, "audio_seconds_per_second": 50.0,
                               "useful_tflop": 4.0, "padded_tflop": 5.0, "matmul_peak_tflop_per_second": 10.0,
                               "fraction_of_peak": 0.2, "precision": "bf16"}
    unknown = Throughput(2.0, 32, 100.0, 4e12, 5e12)
    assert unknown.fraction_of_peak is None and "peak" not in unknown.text()


def test_matmul_peak_is_a_rate():
    peak = matmul_peak("cpu", torch.float32, n=256, repeats=2)
    assert 1e8 < peak < 1e14   # FLOP/s of one core or a few
