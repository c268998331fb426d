"""Training data the plain way: a torch Dataset that reads a WAV and computes numpy features, a padding
collate function, and a SortaGrad batch sampler for the DataLoader.

The order is the recipe's (benchmark.data.sampler defines it for every implementation): utterances sorted
by duration and cut into batches; epoch 1 walks them shortest first (SortaGrad), later epochs shuffle the
batches with random.Random(seed * 100003 + epoch).
"""
import random

import soundfile
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reference import features
from reference.text import encode


def read_audio(path):
    """16 kHz mono WAV -> float64 numpy samples in [-1, 1]. Raises ValueError naming the file otherwise."""
    samples, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    if rate != features.SAMPLE_RATE or samples.shape[1] != 1:
        raise ValueError(f"{path}: expected 16 kHz mono audio, got {rate} Hz with {samples.shape[1]} channels")
    return samples[:, 0]


class SpeechDataset(Dataset):
    """Item i -> (features [F, T] float32 tensor, label indices) of utterance i."""

    def __init__(self, utterances, kind="spectrogram", n_mels=80):
        self.utterances, self.kind, self.n_mels = utterances, kind, n_mels

    def __len__(self):
        return len(self.utterances)

    def __getitem__(self, index):
        utterance = self.utterances[index]
        try:
            feats = features.compute_features(read_audio(utterance.path), self.kind, self.n_mels)
        except ValueError as error:
            raise ValueError(f"{utterance.path}: {error}") from None
        return torch.from_numpy(feats), encode(utterance.transcript)


def collate(items):
    """[(features [F, T_i], labels)] -> features [B, F, T_max] (zero-padded), lengths, targets [B, S], lengths."""
    feature_lengths = torch.tensor([f.shape[1] for f, _ in items])
    target_lengths = torch.tensor([len(labels) for _, labels in items])
    batch = torch.zeros(len(items), items[0][0].shape[0], int(feature_lengths.max()))
    targets = torch.zeros(len(items), max(int(target_lengths.max()), 1), dtype=torch.long)
    for i, (feats, labels) in enumerate(items):
        batch[i, :, :feats.shape[1]] = feats
        targets[i, :len(labels)] = torch.tensor(labels, dtype=torch.long)
    return batch, feature_lengths, targets, target_lengths


class SortaGradSampler(Sampler):
    """Batches of indices for one epoch at a time; call set_epoch(e) before iterating epoch e (1-based)."""

    def __init__(self, durations, batch_size, seed=1, sortagrad=True):
        order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
        self.batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        self.seed, self.sortagrad, self.epoch = seed, sortagrad, 1

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        batches = list(self.batches)
        if self.epoch > 1 or not self.sortagrad:
            random.Random(self.seed * 100003 + self.epoch).shuffle(batches)
        return iter(batches)


def make_loader(dataset, batch_sampler, num_workers):
    """A DataLoader that featurizes in `num_workers` processes (0: in the training process)."""
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers,
                      persistent_workers=False, prefetch_factor=2 if num_workers else None)
