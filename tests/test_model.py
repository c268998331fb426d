import pytest
import torch

from benchmark.model import DeepSpeech2, reverse_padded


def padded_batch(lengths, features=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), features, max(lengths), generator=g)
    for i, n in enumerate(lengths):
        x[i, :, n:] = 0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("rnn_type,time_stride", [("lstm", 2), ("gru", 4)])
def test_padding_does_not_change_an_utterance(rnn_type, time_stride):
    torch.manual_seed(0)
    model = DeepSpeech2(num_features=40, conv_channels=4, time_stride=time_stride, rnn_type=rnn_type,
                        rnn_hidden_size=16, rnn_layers=2).eval()
    x, lengths = padded_batch([120, 77, 31])
    logits, out_lengths = model(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, alone_length = model(x[i:i + 1, :, :n], lengths[i:i + 1])
        assert alone_length.item() == out_lengths[i].item()
        torch.testing.assert_close(logits[:alone_length, i], alone[:, 0], atol=1e-5, rtol=1e-5)


def test_output_lengths_match_forward():
    model = DeepSpeech2(num_features=161, conv_channels=4, rnn_hidden_size=8, rnn_layers=1).eval()
    x, lengths = padded_batch([100, 57], features=161)
    logits, out_lengths = model(x, lengths)
    assert logits.shape == (50, 2, 29)
    assert out_lengths.tolist() == model.output_lengths(lengths).tolist() == [50, 29]


def test_reverse_padded_reverses_within_length():
    x = torch.arange(5.0).reshape(5, 1, 1).repeat(1, 2, 1)   # [T=5, B=2, 1]
    out = reverse_padded(x, torch.tensor([5, 3]))
    assert out[:, 0, 0].tolist() == [4, 3, 2, 1, 0]
    assert out[:, 1, 0].tolist() == [2, 1, 0, 3, 4]


def test_fused_lstm_equals_lstmcell_loop_with_padding():
    """The fused nn.LSTM layer equals an unfused LSTMCell loop on the same weights, padding included."""
    torch.manual_seed(0)
    model = DeepSpeech2(num_features=40, conv_channels=4, rnn_type="lstm", rnn_hidden_size=12, rnn_layers=1)
    layer = model.rnns[0]
    steps, batch, size = 9, 3, layer.forward_rnn.input_size
    x = torch.randn(steps, batch, size)
    lengths = torch.tensor([9, 6, 2])
    x[lengths.unsqueeze(0) <= torch.arange(steps).unsqueeze(1)] = 0
    fused = layer.padded(x, lengths)

    def cell_from(rnn):
        cell = torch.nn.LSTMCell(size, rnn.hidden_size)
        cell.load_state_dict({"weight_ih": rnn.weight_ih_l0, "weight_hh": rnn.weight_hh_l0,
                              "bias_ih": rnn.bias_ih_l0, "bias_hh": rnn.bias_hh_l0})
        return cell

    forward_cell, backward_cell = cell_from(layer.forward_rnn), cell_from(layer.backward_rnn)
    for b, n in enumerate(lengths.tolist()):
        h = c = torch.zeros(1, 12)
        forward_out = []
        for t in range(n):
            h, c = forward_cell(x[t, b:b + 1], (h, c))
            forward_out.append(h)
        h = c = torch.zeros(1, 12)
        backward_out = [None] * n
        for t in reversed(range(n)):
            h, c = backward_cell(x[t, b:b + 1], (h, c))
            backward_out[t] = h
        expected = torch.cat([torch.cat(forward_out), torch.cat(backward_out)], dim=1)
        torch.testing.assert_close(fused[:n, b], expected, atol=1e-6, rtol=1e-5)


def test_config_offers_exactly_the_models_recurrent_implementations():
    from benchmark import config, model
    assert config.RNN_IMPLS == tuple(model.RNN_IMPLS)
    assert config.CONV_LAYOUTS == tuple(model.CONV_LAYOUTS)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
@pytest.mark.parametrize("impl", ["packed", "streams"])
def test_recurrent_implementations_match_the_padded_one_in_outputs_and_gradients(rnn_type, impl):
    """Same parameters, same batch (unsorted lengths, train mode): outputs within each utterance's length and
    every gradient equal to the padded implementation's. `streams` runs its own code path here, on one stream
    (no CUDA); its two-stream overlap needs a GPU (measure/gpu_step_benchmark.py checks its parity there)."""
    assert_same_outputs_and_gradients(dict(rnn_type=rnn_type, rnn_impl="padded"), dict(rnn_type=rnn_type, rnn_impl=impl))


def test_channels_last_convolutions_match_contiguous_ones_in_outputs_and_gradients():
    assert_same_outputs_and_gradients(dict(conv_layout="contiguous"), dict(conv_layout="channels_last"))
    model = DeepSpeech2(num_features=40, conv_channels=4, conv_layout="channels_last")
    assert model.conv2[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv2[0].weight.is_contiguous()


def assert_same_outputs_and_gradients(flags, other_flags):
    """Two models of the same parameters on the same batch (unsorted lengths, train mode): outputs within
    each utterance's length, the input gradient and every parameter gradient equal up to float rounding."""
    results = []
    for model_flags in (flags, other_flags):
        torch.manual_seed(0)
        model = DeepSpeech2(num_features=40, conv_channels=4, rnn_hidden_size=16, rnn_layers=3, **model_flags)
        x, lengths = padded_batch([120, 31, 77, 120])
        x.requires_grad_(True)
        logits, out_lengths = model(x, lengths)
        valid = (torch.arange(logits.shape[0]).unsqueeze(1) < out_lengths).unsqueeze(2)
        weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
        (logits * weights * valid).sum().backward()
        results.append((logits.detach() * valid, x.grad, {n: p.grad for n, p in model.named_parameters()}))
    (out, x_grad, grads), (other_out, other_x_grad, other_grads) = results
    assert other_grads.keys() == grads.keys()   # one parameter layout: checkpoints fit every implementation
    for name, expected, got in [("logits", out, other_out), ("input gradient", x_grad, other_x_grad),
                                *((n, grads[n], other_grads[n]) for n in grads)]:
        # float rounding only: summation orders differ (oneDNN's fused sequence kernel against packed steps,
        # NHWC against NCHW convolution kernels)
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), name


def test_packed_implementation_gives_zeros_in_the_padding_and_keeps_padding_inert():
    torch.manual_seed(0)
    model = DeepSpeech2(num_features=40, conv_channels=4, rnn_hidden_size=16, rnn_layers=2, rnn_impl="packed").eval()
    x, lengths = padded_batch([120, 77, 31])
    logits, out_lengths = model(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, _ = model(x[i:i + 1, :, :n], lengths[i:i + 1])
        torch.testing.assert_close(logits[:out_lengths[i], i], alone[:, 0], atol=1e-5, rtol=1e-5)
