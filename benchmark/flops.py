"""Model FLOPs of DeepSpeech2 training steps, and the matmul peak of this process to compare them with.

    costs = StepCosts(plan.model_args)
    useful, padded = costs.batch_flops(batch.feature_lengths, batch.features.shape[2])
    peak = measure_matmul_peak(plan)          # FLOP/s of one large matmul at the run's precision, all ranks
    print(Throughput(seconds, utterances, audio_seconds, useful, padded, peak, precision).text())

Counted: the multiply-adds of convolutions, recurrent gate matmuls and the fully connected layer, 2 FLOPs
each, as torch.utils.flop_counter counts them (tests/test_flops.py checks the two agree), forward and
backward. Batch norm, Hardtanh, layer norm, masks, softmax and CTC are left out, as MFU conventions do.
Backward costs twice the forward (gradients of inputs and of weights), except for the first convolution,
whose input (the features) needs no gradient: once. Each recurrent direction costs 2*G*H*(in + H) per frame
forward (G = 4 gates for LSTM, 3 for GRU): its input and hidden projections; oneDNN's and cuDNN's fused
kernels hide these matmuls from torch's flop counter, which is why they are counted here.

Per utterance the cost is a*T1 + b*T2, with T1 the first convolution's output frames and T2 the second's
(the recurrent stack and the fully connected layer run on T2 frames). *Useful* FLOPs count every utterance
at its own length; *padded* FLOPs count every utterance at the batch's longest, which is what the padded
recurrent implementation computes (the packed one skips padding in the recurrent stack only). For the full
model (161 bins, 2 conv of 32 channels, 5 x BiLSTM-800, time stride 2) a second of audio costs 8.6 GFLOP
forward and 25.7 GFLOP to train, 87% of it in the LSTMs.
"""
from dataclasses import dataclass
import time

import torch

from benchmark import distributed
from benchmark.model import CONV1_KERNEL, CONV2_KERNEL, CONV_PADDING, DeepSpeech2, conv_output_length

GATES = {"lstm": 4, "gru": 3}
FRAMES_PER_SECOND = 100   # 10 ms hop


def forward_flops_per_frame(args):
    """Forward FLOPs per output frame of each part: {'conv1': per T1 frame, 'conv2', 'rnn', 'fc': per T2 frame}."""
    strides = DeepSpeech2.conv_strides(args.time_stride)
    freq, channels, flops = args.num_features, (1, args.conv_channels, args.conv_channels), {}
    for i, (kernel, stride, padding) in enumerate(zip((CONV1_KERNEL, CONV2_KERNEL), strides, CONV_PADDING)):
        freq = (freq + 2 * padding[0] - kernel[0]) // stride[0] + 1
        flops[f"conv{i + 1}"] = 2 * channels[i] * channels[i + 1] * kernel[0] * kernel[1] * freq
    hidden, gates = args.rnn_hidden_size, GATES[args.rnn_type]
    inputs = [freq * args.conv_channels] + [2 * hidden] * (args.rnn_layers - 1)
    flops["rnn"] = sum(2 * 2 * gates * hidden * (size + hidden) for size in inputs)   # 2 directions
    flops["fc"] = 2 * 2 * hidden * args.num_classes
    return flops


def training_flops_per_frame(args):
    """(FLOPs per T1 frame, FLOPs per T2 frame) of forward + backward."""
    forward = forward_flops_per_frame(args)
    # Backward = 2 x forward (input and weight gradients), but the features need no gradient: conv1 only
    # computes its weight gradient.
    return 2 * forward["conv1"], 3 * (forward["conv2"] + forward["rnn"] + forward["fc"])


class StepCosts:
    """FLOPs of training steps of one model on batches of given feature lengths."""

    def __init__(self, args):
        self.args = args
        self.strides = DeepSpeech2.conv_strides(args.time_stride)
        self.per_t1, self.per_t2 = training_flops_per_frame(args)

    def output_frames(self, lengths):
        """(T1, T2) frames of the two convolutions for feature lengths `lengths` (tensor or int)."""
        lengths = torch.as_tensor(lengths)
        t1 = conv_output_length(lengths, CONV1_KERNEL[1], self.strides[0][1], CONV_PADDING[0][1])
        return t1, conv_output_length(t1, CONV2_KERNEL[1], self.strides[1][1], CONV_PADDING[1][1])

    def utterance_flops(self, frames):
        """Training FLOPs of one utterance of `frames` feature frames (int)."""
        t1, t2 = (int(t) for t in self.output_frames(frames))
        return self.per_t1 * t1 + self.per_t2 * t2

    def batch_flops(self, feature_lengths, padded_frames):
        """(useful FLOPs as a float64 tensor on the lengths' device, padded FLOPs as a float).

        No host synchronisation: the useful count stays on the device until someone reads it."""
        t1, t2 = self.output_frames(feature_lengths)
        useful = (t1.sum() * self.per_t1 + t2.sum() * self.per_t2).double()
        return useful, float(len(feature_lengths) * self.utterance_flops(padded_frames))


# ------------------------------------------------------------------------------------- matmul peak
def peak_dtype(device, autocast_dtype):
    """(dtype, label) of the matmuls a run with this autocast dtype does on `device`. fp32 on a GPU is
    labelled tf32 where cuDNN may use TF32 (torch's default for convolutions and RNNs)."""
    if autocast_dtype is not None:
        return autocast_dtype, {torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype]
    if torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32:
        return torch.float32, "tf32"
    return torch.float32, "fp32"


def matmul_peak(device, dtype, tf32=False, n=None, repeats=5):
    """Best FLOP/s of an n x n x n torch.matmul on `device` (this process's threads), after one warm-up."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            torch.matmul(a, b)
            if cuda:
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n ** 3 / best


def measure_matmul_peak(plan):
    """(FLOP/s of the whole job, precision label): every rank measures its own matmul peak at the run's
    precision at the same time (after a barrier, so ranks sharing a CPU share it as in training), summed."""
    dtype, label = peak_dtype(plan.device, plan.autocast_dtype)
    distributed.barrier()
    peak = torch.tensor([matmul_peak(plan.device, dtype, tf32=label == "tf32")], dtype=torch.float64,
                        device=plan.device)
    return float(distributed.all_reduce_sum(peak)), label


# ------------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class Throughput:
    """What some steps achieved (all ranks): rates, FLOP/s and the fraction of the matmul peak."""
    seconds: float
    utterances: int
    audio_seconds: float
    useful_flops: float
    padded_flops: float
    peak_flops: float = None      # FLOP/s of the job's matmul peak, None when not measured
    precision: str = ""

    @property
    def tflops(self):
        """Useful TFLOP/s: the model's work, whatever the implementation computes on padding."""
        return self.useful_flops / self.seconds / 1e12

    @property
    def fraction_of_peak(self):
        return self.useful_flops / self.seconds / self.peak_flops if self.peak_flops else None

    @property
    def padding_fraction(self):
        return 1 - self.useful_flops / self.padded_flops if self.padded_flops else 0.0

    def text(self):
        """'12.3 audio s/s 0.041 TFLOP/s (30.5% of fp32 matmul peak 0.135), padding 2.1%'."""
        peak = (f" ({100 * self.fraction_of_peak:.1f}% of {self.precision} matmul peak "
                f"{self.peak_flops / 1e12:.3g})" if self.peak_flops else "")
        return (f"{self.audio_seconds / self.seconds:.1f} audio s/s {self.tflops:.3g} TFLOP/s{peak}, "
                f"padding {100 * self.padding_fraction:.1f}%")

    def metadata(self):
        """The per-epoch MLPerf event's metadata (its value is the useful TFLOP/s)."""
        return {"utterances_per_second": round(self.utterances / self.seconds, 3),
                "audio_seconds_per_second": round(self.audio_seconds / self.seconds, 3),
                "useful_tflop": round(self.useful_flops / 1e12, 6), "padded_tflop": round(self.padded_flops / 1e12, 6),
                "matmul_peak_tflop_per_second": round(self.peak_flops / 1e12, 6) if self.peak_flops else None,
                "fraction_of_peak": round(self.fraction_of_peak, 5) if self.peak_flops else None,
                "precision": self.precision}
