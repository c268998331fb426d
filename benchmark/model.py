"""DeepSpeech2: conv front end, bidirectional RNN stack, fully connected layer to the 29 CTC symbols.

Padding never changes an utterance's result (in eval mode, where batch norm uses running statistics):
conv outputs beyond each utterance's length are zeroed before the next layer, and every recurrent
implementation starts the backward direction at each sequence's last real frame, not in the padding.
The recurrent stack has interchangeable implementations (`--rnn_impl`, RNN_IMPLS below) over the same
parameters (two single-direction nn.LSTM/nn.GRU per layer, so checkpoints and initial weights do not
depend on the implementation), equal up to float rounding (tests/test_model.py):
  padded   each direction is a fused nn.LSTM/nn.GRU (cuDNN on GPU, oneDNN on CPU) on the length-sorted
           *padded* batch; the backward one reads every sequence reversed within its own length
           (reverse_padded). The default on CPU and GPU. Packed sequences were 4-5x slower on the CPU.
  packed   the batch is packed once (pack_padded_sequence), each layer is one bidirectional call over the
           packed frames (cuDNN/oneDNN reverse each sequence within its length; padding is never
           computed), unpacked once at the end. Packing needs the lengths on the host: one device-to-host
           copy (a synchronisation) per forward.
  streams  as padded, with the backward direction of each layer on a second CUDA stream so the two
           directions overlap (forward and backward pass: autograd runs each op's backward on the stream
           of its forward). GPU only (the run plan refuses it on the CPU); without CUDA the same code
           runs both directions on one stream, which is how its parity is tested on the CPU.
"""
import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import _VF, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from benchmark.text import NUM_CLASSES

CONV1_KERNEL, CONV2_KERNEL = (41, 11), (21, 11)   # (frequency, time)
CONV_PADDING = ((20, 5), (10, 5))


def conv_output_length(lengths, kernel, stride, padding):
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


def reverse_padded(x, lengths):
    """Reverse each sequence of x [T, B, H] within its own length; padding stays at the end."""
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)                 # [T, 1]
    index = torch.where(t < lengths.unsqueeze(0), lengths.unsqueeze(0) - 1 - t, t)  # [T, B]
    return x.gather(0, index.unsqueeze(2).expand_as(x))


class BidirectionalLayer(nn.Module):
    """One bidirectional recurrent layer; forward and backward outputs concatenated.

    The parameters are those of two single-direction cells (forward_rnn, backward_rnn) whatever the
    implementation: `padded(x, lengths)` and `two_streams(x, lengths)` take and give padded [T, B, *]
    tensors, `packed(data, batch_sizes)` the frames of a PackedSequence."""

    def __init__(self, input_size, hidden_size, rnn_type):
        super().__init__()
        cell = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn_type]
        self.rnn_type, self.hidden_size = rnn_type, hidden_size
        self.forward_rnn = cell(input_size, hidden_size)
        self.backward_rnn = cell(input_size, hidden_size)

    def padded(self, x, lengths):
        forward_out, _ = self.forward_rnn(x)
        backward_out, _ = self.backward_rnn(reverse_padded(x, lengths))
        return torch.cat([forward_out, reverse_padded(backward_out, lengths)], dim=2)

    def packed(self, data, batch_sizes):
        """One bidirectional call over packed frames, as nn.LSTM(bidirectional=True) makes it."""
        weights = [getattr(rnn, name) for rnn in (self.forward_rnn, self.backward_rnn)
                   for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
        h0 = torch.zeros(2, int(batch_sizes[0]), self.hidden_size, dtype=data.dtype, device=data.device)
        if self.rnn_type == "lstm":
            out, _, _ = _VF.lstm(data, batch_sizes, (h0, torch.zeros_like(h0)), weights, True, 1, 0.0,
                                 self.training, True)
        else:
            out, _ = _VF.gru(data, batch_sizes, h0, weights, True, 1, 0.0, self.training, True)
        return out

    def two_streams(self, x, lengths):
        """padded() with the backward direction on a side stream (CUDA), overlapping the forward one."""
        side = side_stream(x.device)
        main = torch.cuda.current_stream(x.device) if side is not None else None
        if side is not None:
            side.wait_stream(main)          # x and lengths are ready on the main stream
            x.record_stream(side)           # ... and must not be reused while the side stream reads them
            lengths.record_stream(side)
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            backward_out, _ = self.backward_rnn(reverse_padded(x, lengths))
            backward_out = reverse_padded(backward_out, lengths)
        forward_out, _ = self.forward_rnn(x)
        if side is not None:
            main.wait_stream(side)
            backward_out.record_stream(main)
        return torch.cat([forward_out, backward_out], dim=2)


_SIDE_STREAMS = {}


def side_stream(device):
    """The second CUDA stream of `device` (one per device, made on first use); None off CUDA."""
    if device.type != "cuda":
        return None
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


def run_padded(layers, x, lengths):
    for layer in layers:
        x = layer.padded(x, lengths)
    return x


def run_packed(layers, x, lengths):
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    data = packed.data
    for layer in layers:
        data = layer.packed(data, packed.batch_sizes)
    out, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                                                packed.unsorted_indices), total_length=x.shape[0])
    return out


def run_two_streams(layers, x, lengths):
    for layer in layers:
        x = layer.two_streams(x, lengths)
    return x


# --rnn_impl: name -> (layers, x [T, B, F] padded, lengths [B]) -> [T, B, 2H]; values within each length.
RNN_IMPLS = {"padded": run_padded, "packed": run_packed, "streams": run_two_streams}
CUDA_ONLY_RNN_IMPLS = ("streams",)
# Memory layouts of the convolutions' activations and weights (--conv_layout), same maths. NHWC lets
# oneDNN pick direct kernels for the 21x11 convolution at few channels: its weight gradient was the
# slowest part of the CPU step in NCHW (measure/step_throughput.py --conv_layouts).
CONV_LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass(frozen=True)
class ModelArgs:
    """Everything DeepSpeech2's shape depends on (the run plan fills it from the flags of the same names)."""
    num_features: int = 161
    num_classes: int = NUM_CLASSES
    conv_channels: int = 32
    time_stride: int = 2
    rnn_type: str = "lstm"
    rnn_hidden_size: int = 800
    rnn_layers: int = 5


class DeepSpeech2(nn.Module):
    @classmethod
    def from_args(cls, args, rnn_impl="padded", conv_layout="contiguous"):
        return cls(**asdict(args), rnn_impl=rnn_impl, conv_layout=conv_layout)

    @staticmethod
    def conv_strides(time_stride):
        """((freq, time) stride of conv1, of conv2) for a total time subsampling of `time_stride`."""
        if time_stride not in (2, 4):
            raise ValueError(f"time_stride must be 2 or 4, got {time_stride}")
        return (2, 2), (2, time_stride // 2)

    def __init__(self, num_features=161, num_classes=NUM_CLASSES, conv_channels=32, time_stride=2,
                 rnn_type="lstm", rnn_hidden_size=800, rnn_layers=5, rnn_impl="padded", conv_layout="contiguous"):
        super().__init__()
        if rnn_impl not in RNN_IMPLS:
            raise ValueError(f"rnn_impl must be one of {', '.join(RNN_IMPLS)}, got {rnn_impl!r}")
        if conv_layout not in CONV_LAYOUTS:
            raise ValueError(f"conv_layout must be one of {', '.join(CONV_LAYOUTS)}, got {conv_layout!r}")
        self.conv_memory_format = CONV_LAYOUTS[conv_layout]
        self.strides = self.conv_strides(time_stride)
        self.rnn_impl = rnn_impl
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, conv_channels, CONV1_KERNEL, self.strides[0], CONV_PADDING[0], bias=False),
            nn.BatchNorm2d(conv_channels), nn.Hardtanh(0, 20, inplace=True))
        self.conv2 = nn.Sequential(
            nn.Conv2d(conv_channels, conv_channels, CONV2_KERNEL, self.strides[1], CONV_PADDING[1], bias=False),
            nn.BatchNorm2d(conv_channels), nn.Hardtanh(0, 20, inplace=True))
        freq = num_features
        for kernel, stride, padding in zip((CONV1_KERNEL, CONV2_KERNEL), self.strides, CONV_PADDING):
            freq = (freq + 2 * padding[0] - kernel[0]) // stride[0] + 1
        sizes = [freq * conv_channels] + [2 * rnn_hidden_size] * rnn_layers
        self.rnns = nn.ModuleList(BidirectionalLayer(sizes[i], rnn_hidden_size, rnn_type) for i in range(rnn_layers))
        self.fc = nn.Sequential(nn.LayerNorm(2 * rnn_hidden_size), nn.Linear(2 * rnn_hidden_size, num_classes))
        self.conv1.to(memory_format=self.conv_memory_format)   # only the 4-D conv weights change layout
        self.conv2.to(memory_format=self.conv_memory_format)

    def output_lengths(self, lengths):
        for kernel, stride, padding in zip((CONV1_KERNEL, CONV2_KERNEL), self.strides, CONV_PADDING):
            lengths = conv_output_length(lengths, kernel[1], stride[1], padding[1])
        return lengths

    @staticmethod
    def _mask_time(x, lengths):
        # x [B, C, F, T]: zero frames past each length so padding can't leak into the next layer.
        valid = torch.arange(x.shape[3], device=x.device) < lengths.unsqueeze(1)
        return x * valid[:, None, None, :].to(x.dtype)

    def forward(self, features, lengths):
        """features [B, F, T], lengths [B] -> logits [T', B, classes], output lengths [B]."""
        x = features.unsqueeze(1).contiguous(memory_format=self.conv_memory_format)
        for conv, kernel, stride, padding in zip((self.conv1, self.conv2), (CONV1_KERNEL, CONV2_KERNEL),
                                                  self.strides, CONV_PADDING):
            lengths = conv_output_length(lengths, kernel[1], stride[1], padding[1])
            x = self._mask_time(conv(x), lengths)
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t).permute(2, 0, 1).contiguous()   # [T', B, C*F]
        x = RNN_IMPLS[self.rnn_impl](self.rnns, x, lengths)
        return self.fc(x), lengths
