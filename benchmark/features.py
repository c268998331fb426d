"""Audio features, the maths every backend must match (torch loader, DALI pipeline, reference).

16 kHz audio, 20 ms Hamming window (320 samples), 10 ms hop (160), n_fft 320 -> 161 magnitude bins,
no centering (frames = 1 + (samples - 320) // 160), log1p, then per-utterance normalization of each
feature bin over time: (x - mean) / sqrt(var + 1e-5), population variance. The optional log-mel variant
applies a Slaney-style mel filterbank (area-normalized triangles, as librosa and DALI's mel_filter_bank
default) to the magnitude before log1p; it serves small CPU configurations.
"""
from dataclasses import dataclass
import functools
import math

import numpy as np
import torch

SAMPLE_RATE = 16000
WINDOW_SIZE = 320   # 20 ms
HOP_SIZE = 160      # 10 ms
N_FFT = 320         # -> 161 bins
NORM_EPSILON = 1e-5


@dataclass(frozen=True)
class FeatureSpec:
    """Which features: 'spectrogram' (161 log1p magnitude bins) or 'logmel' (n_mels log1p mel bins)."""
    kind: str = "spectrogram"
    n_mels: int = 80

    def __post_init__(self):
        if self.kind not in ("spectrogram", "logmel"):
            raise ValueError(f"feature kind must be 'spectrogram' or 'logmel', got {self.kind!r}")

    @property
    def num_features(self):
        return N_FFT // 2 + 1 if self.kind == "spectrogram" else self.n_mels


def num_frames(num_samples):
    """Frames the STFT yields for `num_samples` samples (0 when shorter than one window)."""
    return 0 if num_samples < WINDOW_SIZE else 1 + (num_samples - WINDOW_SIZE) // HOP_SIZE


def hamming_window():
    """Symmetric Hamming window of WINDOW_SIZE samples (numpy.hamming), float32."""
    return np.hamming(WINDOW_SIZE).astype(np.float32)


def _hz_to_mel(hz):
    # Slaney: linear below 1 kHz, logarithmic above (librosa's htk=False).
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels):
    """[n_mels, 161] Slaney mel filterbank over 0..8 kHz, area-normalized, float32."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    lower = (fft_freqs[None, :] - mel_points[:-2, None]) / np.diff(mel_points)[:-1, None]
    upper = (mel_points[2:, None] - fft_freqs[None, :]) / np.diff(mel_points)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


def normalize_per_utterance(features):
    """[F, T] -> each bin minus its mean over time, divided by sqrt(var + eps)."""
    mean = features.mean(dim=1, keepdim=True)
    var = features.var(dim=1, unbiased=False, keepdim=True)
    return (features - mean) / torch.sqrt(var + NORM_EPSILON)


def compute_features(samples, spec=FeatureSpec()):
    """float32 samples in [-1, 1] (1-D tensor, 16 kHz) -> normalized features [F, T] (float32).

    Raises ValueError for audio shorter than one window: such a file has no features to learn from.
    """
    samples = torch.as_tensor(samples, dtype=torch.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {tuple(samples.shape)}")
    if num_frames(samples.numel()) == 0:
        raise ValueError(f"audio of {samples.numel()} samples is shorter than one {WINDOW_SIZE}-sample window")
    window = torch.from_numpy(hamming_window())
    stft = torch.stft(samples, n_fft=N_FFT, hop_length=HOP_SIZE, win_length=WINDOW_SIZE, window=window,
                      center=False, return_complex=True)
    magnitude = stft.abs()
    if spec.kind == "logmel":
        magnitude = torch.from_numpy(mel_filterbank(spec.n_mels)) @ magnitude
    return normalize_per_utterance(torch.log1p(magnitude))
