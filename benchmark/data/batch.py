"""The batch contract every loader hands the training loop, and the padding that builds it."""
from typing import NamedTuple

import torch


class Batch(NamedTuple):
    features: torch.Tensor         # [B, F, T] float32, zero beyond each utterance's length
    feature_lengths: torch.Tensor  # [B] int64, frames
    targets: torch.Tensor          # [B, S] int64 label indices, zero-padded
    target_lengths: torch.Tensor   # [B] int64

    def to(self, device, non_blocking=False):
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self):
        """The host tensors in page-locked memory (a non-blocking copy to a GPU from there really is one)."""
        return Batch(*(t if t.is_cuda or t.is_pinned() else t.pin_memory() for t in self))


def pad_batch(feature_list, target_list):
    """Lists of [F, T_i] feature tensors and label-index lists -> a padded Batch (on the CPU)."""
    lengths = torch.tensor([f.shape[1] for f in feature_list], dtype=torch.int64)
    features = torch.zeros(len(feature_list), feature_list[0].shape[0], int(lengths.max()))
    for i, f in enumerate(feature_list):
        features[i, :, :f.shape[1]] = f
    return Batch(features, lengths, *pad_targets(target_list))


def pad_targets(target_list):
    """Label-index lists -> (targets [B, S] int64 zero-padded, target_lengths [B] int64)."""
    target_lengths = torch.tensor([len(t) for t in target_list], dtype=torch.int64)
    targets = torch.zeros(len(target_list), max(int(target_lengths.max()), 1), dtype=torch.int64)
    for i, t in enumerate(target_list):
        targets[i, :len(t)] = torch.as_tensor(t, dtype=torch.int64)
    return targets, target_lengths
