import numpy as np
import pytest
import torch

from benchmark import features, text


def test_alphabet_has_blank_apostrophe_letters_space():
    assert text.NUM_CLASSES == 29
    assert text.LABELS[text.BLANK] == "_" and text.LABELS[1] == "'" and text.LABELS[-1] == " "


def test_encode_decode_roundtrip_and_bad_characters():
    assert text.decode(text.encode("IT'S A TEST")) == "IT'S A TEST"
    with pytest.raises(ValueError, match="outside the alphabet"):
        text.encode("ROOM 101")


def test_greedy_collapse_merges_repeats_then_drops_blanks():
    a, b, space = text.LABELS.index("A"), text.LABELS.index("B"), text.LABELS.index(" ")
    assert text.greedy_collapse([a, a, 0, a, space, space, b, 0]) == "AA B"
    assert text.greedy_collapse([0, 0]) == ""


def test_frame_count_and_normalization():
    samples = torch.from_numpy(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1)
    feats = features.compute_features(samples)
    assert feats.shape == (161, features.num_frames(16000)) == (161, 99)
    assert torch.allclose(feats.mean(dim=1), torch.zeros(161), atol=1e-4)
    assert torch.allclose(feats.std(dim=1, unbiased=False), torch.ones(161), atol=1e-2)
    assert features.compute_features(samples, features.FeatureSpec("logmel", 40)).shape == (40, 99)
    with pytest.raises(ValueError, match="shorter than one"):
        features.compute_features(torch.zeros(100))


def test_stft_matches_numpy_framing():
    rng = np.random.default_rng(1)
    samples = rng.standard_normal(4000).astype(np.float32)
    n = features.num_frames(len(samples))
    frames = np.stack([samples[i * 160:i * 160 + 320] * np.hamming(320) for i in range(n)])
    expected = np.log1p(np.abs(np.fft.rfft(frames, n=320, axis=1))).T
    window = torch.from_numpy(features.hamming_window())
    got = torch.log1p(torch.stft(torch.from_numpy(samples), 320, 160, 320, window, center=False,
                                 return_complex=True).abs()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
