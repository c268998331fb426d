"""DeepSpeech2, the plain way: two conv blocks, bidirectional recurrent layers on packed sequences, FC.

    features [B, F, T] -> Conv2d(41x11) -> BatchNorm -> Hardtanh(0, 20) -> zero frames past each length
                       -> Conv2d(21x11) -> BatchNorm -> Hardtanh(0, 20) -> zero frames past each length
                       -> [T', B, C*F'] -> rnn_layers x (forward RNN | backward RNN), concatenated
                       -> LayerNorm -> Linear -> logits [T', B, 29]

Each direction is a unidirectional nn.LSTM/nn.GRU fed a PackedSequence, so it never sees padding; the
backward one reads each utterance reversed within its own length. Parameter names and shapes equal
benchmark.model's, so one state_dict loads into both.
"""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from reference.text import NUM_CLASSES

# (frequency, time) kernel, stride and padding of the two conv layers; the second layer's time stride
# is 1 for a total time subsampling of 2 (the DS2 paper) or 2 for 4 (fewer RNN steps, for small CPUs).
KERNELS = ((41, 11), (21, 11))
PADDINGS = ((20, 5), (10, 5))


def conv_lengths(lengths, kernel, stride, padding):
    return (lengths + 2 * padding - kernel) // stride + 1


def reverse_within_lengths(x, lengths):
    """x [T, B, H] -> each utterance's first `length` frames in reverse order; the rest unchanged."""
    out = x.clone()
    for b, n in enumerate(lengths.tolist()):
        out[:n, b] = x[:n, b].flip(0)
    return out


def run_packed(rnn, x, lengths):
    """Run `rnn` on the valid frames of x [T, B, H] only; outputs past each length are zero."""
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    return out


class BidirectionalLayer(nn.Module):
    def __init__(self, input_size, hidden_size, rnn_type):
        super().__init__()
        cell = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn_type]
        self.forward_rnn = cell(input_size, hidden_size)
        self.backward_rnn = cell(input_size, hidden_size)

    def forward(self, x, lengths):
        forward_out = run_packed(self.forward_rnn, x, lengths)
        backward_out = run_packed(self.backward_rnn, reverse_within_lengths(x, lengths), lengths)
        return torch.cat([forward_out, reverse_within_lengths(backward_out, lengths)], dim=2)


def conv_block(in_channels, out_channels, kernel, stride, padding):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.Hardtanh(0, 20, inplace=True))


class DeepSpeech2(nn.Module):
    def __init__(self, num_features=161, num_classes=NUM_CLASSES, conv_channels=32, time_stride=2,
                 rnn_type="lstm", rnn_hidden_size=800, rnn_layers=5):
        super().__init__()
        if time_stride not in (2, 4):
            raise ValueError(f"time_stride must be 2 or 4, got {time_stride}")
        self.strides = ((2, 2), (2, time_stride // 2))
        self.conv1 = conv_block(1, conv_channels, KERNELS[0], self.strides[0], PADDINGS[0])
        self.conv2 = conv_block(conv_channels, conv_channels, KERNELS[1], self.strides[1], PADDINGS[1])
        freq = num_features
        for kernel, stride, padding in zip(KERNELS, self.strides, PADDINGS):
            freq = conv_lengths(freq, kernel[0], stride[0], padding[0])
        rnn_input = conv_channels * freq
        self.rnns = nn.ModuleList()
        for i in range(rnn_layers):
            self.rnns.append(BidirectionalLayer(rnn_input if i == 0 else 2 * rnn_hidden_size, rnn_hidden_size,
                                                rnn_type))
        self.fc = nn.Sequential(nn.LayerNorm(2 * rnn_hidden_size), nn.Linear(2 * rnn_hidden_size, num_classes))

    def output_lengths(self, lengths):
        for kernel, stride, padding in zip(KERNELS, self.strides, PADDINGS):
            lengths = conv_lengths(lengths, kernel[1], stride[1], padding[1])
        return lengths

    def forward(self, features, lengths):
        """features [B, F, T], lengths [B] (frames) -> logits [T', B, classes], lengths [B] (T' frames)."""
        x = features.unsqueeze(1)   # [B, 1, F, T]
        for conv, kernel, stride, padding in zip((self.conv1, self.conv2), KERNELS, self.strides, PADDINGS):
            x = conv(x)
            lengths = conv_lengths(lengths, kernel[1], stride[1], padding[1])
            frame = torch.arange(x.shape[3], device=x.device)
            x = x * (frame[None, :] < lengths[:, None])[:, None, None, :]   # zero frames past each length
        batch, channels, freq, steps = x.shape
        x = x.reshape(batch, channels * freq, steps).permute(2, 0, 1)   # [T', B, C*F']
        for layer in self.rnns:
            x = layer(x, lengths)
        return self.fc(x), lengths
