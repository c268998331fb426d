"""Audio features with numpy, written from the definition (not from benchmark.features) so parity means something.

16 kHz samples are cut into 20 ms frames (320 samples) every 10 ms (160), without centering or padding;
each frame is multiplied by a symmetric Hamming window and transformed with a 320-point real FFT, giving
161 magnitude bins. The log-mel variant sums the magnitudes through a Slaney mel filterbank first. Then
log(1 + x), and every bin is normalized over the utterance's frames: (x - mean) / sqrt(var + 1e-5) with
the population variance. Computed in float64, returned as float32 [features, frames].
"""
import numpy as np

SAMPLE_RATE = 16000
FRAME_LENGTH = 320
FRAME_STEP = 160
FFT_SIZE = 320
NORM_EPSILON = 1e-5


def frame_signal(samples):
    """[N] samples -> [frames, 320], one row per 20 ms window starting every 10 ms; no partial frame."""
    if len(samples) < FRAME_LENGTH:
        raise ValueError(f"audio of {len(samples)} samples is shorter than one {FRAME_LENGTH}-sample window")
    count = 1 + (len(samples) - FRAME_LENGTH) // FRAME_STEP
    starts = np.arange(count) * FRAME_STEP
    return samples[starts[:, None] + np.arange(FRAME_LENGTH)[None, :]]


def magnitude_spectrogram(samples):
    """[N] samples -> [161, frames] |rfft(hamming * frame)|."""
    frames = frame_signal(np.asarray(samples, dtype=np.float64)) * np.hamming(FRAME_LENGTH)
    return np.abs(np.fft.rfft(frames, n=FFT_SIZE, axis=1)).T


def slaney_hz_to_mel(hz):
    """Malcolm Slaney's Auditory Toolbox mel scale: 3 mels per 200 Hz up to 1 kHz, then logarithmic."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + 27.0 * np.log(np.maximum(hz, 1000.0) / 1000.0) / np.log(6.4)
    return np.where(hz < 1000.0, linear, log_part)


def slaney_mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0)
    return np.where(mel < 15.0, linear, log_part)


def slaney_mel_filterbank(n_mels):
    """[n_mels, 161] triangles over 0..8 kHz, equally spaced in mels, each with unit area ("slaney" norm)."""
    bin_hz = np.arange(FFT_SIZE // 2 + 1) * SAMPLE_RATE / FFT_SIZE
    edges_hz = slaney_mel_to_hz(np.linspace(0.0, slaney_hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    bank = np.zeros((n_mels, len(bin_hz)))
    for m in range(n_mels):
        left, center, right = edges_hz[m], edges_hz[m + 1], edges_hz[m + 2]
        rising = (bin_hz - left) / (center - left)
        falling = (right - bin_hz) / (right - center)
        triangle = np.clip(np.minimum(rising, falling), 0.0, None)
        bank[m] = triangle * 2.0 / (right - left)   # the triangle's area becomes 1 (in Hz)
    return bank


def normalize(features):
    """Each row (bin) of [F, T] minus its mean over time, over sqrt(population variance + 1e-5)."""
    mean = features.mean(axis=1, keepdims=True)
    var = features.var(axis=1, keepdims=True)
    return (features - mean) / np.sqrt(var + NORM_EPSILON)


def compute_features(samples, kind="spectrogram", n_mels=80):
    """Samples in [-1, 1] at 16 kHz -> float32 [161 or n_mels, frames] normalized log1p features."""
    if kind not in ("spectrogram", "logmel"):
        raise ValueError(f"feature kind must be 'spectrogram' or 'logmel', got {kind!r}")
    magnitude = magnitude_spectrogram(samples)
    if kind == "logmel":
        magnitude = slaney_mel_filterbank(n_mels) @ magnitude
    return normalize(np.log1p(magnitude)).astype(np.float32)


def num_features(kind="spectrogram", n_mels=80):
    return FFT_SIZE // 2 + 1 if kind == "spectrogram" else n_mels
