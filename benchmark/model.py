"""DeepSpeech2: conv front end, bidirectional RNN stack, fully connected layer to the 29 CTC symbols.

Padding never changes an utterance's result (in eval mode, where batch norm uses running statistics):
conv outputs beyond each utterance's length are zeroed before the next layer, and each recurrent
direction is a fused nn.LSTM/nn.GRU (cuDNN on GPU, oneDNN on CPU) run on length-sorted *padded* batches;
the backward direction reads every sequence reversed within its own length, so its state starts at the
last real frame, not in the padding. (Packed sequences were 4-5x slower on the CPU.)
"""
from dataclasses import asdict, dataclass

import torch
from torch import nn

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
    """One bidirectional recurrent layer; forward and backward outputs concatenated."""

    def __init__(self, input_size, hidden_size, rnn_type):
        super().__init__()
        cell = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn_type]
        self.forward_rnn = cell(input_size, hidden_size)
        self.backward_rnn = cell(input_size, hidden_size)

    def forward(self, x, lengths):
        forward_out, _ = self.forward_rnn(x)
        backward_out, _ = self.backward_rnn(reverse_padded(x, lengths))
        return torch.cat([forward_out, reverse_padded(backward_out, lengths)], dim=2)


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
    def from_args(cls, args):
        return cls(**asdict(args))

    def __init__(self, num_features=161, num_classes=NUM_CLASSES, conv_channels=32, time_stride=2,
                 rnn_type="lstm", rnn_hidden_size=800, rnn_layers=5):
        super().__init__()
        if time_stride not in (2, 4):
            raise ValueError(f"time_stride must be 2 or 4, got {time_stride}")
        self.strides = ((2, 2), (2, time_stride // 2))
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
        x = features.unsqueeze(1)
        for conv, kernel, stride, padding in zip((self.conv1, self.conv2), (CONV1_KERNEL, CONV2_KERNEL),
                                                  self.strides, CONV_PADDING):
            lengths = conv_output_length(lengths, kernel[1], stride[1], padding[1])
            x = self._mask_time(conv(x), lengths)
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t).permute(2, 0, 1).contiguous()   # [T', B, C*F]
        for rnn in self.rnns:
            x = rnn(x, lengths)
        return self.fc(x), lengths
