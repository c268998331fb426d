"""PyTorch DataLoader backend: read WAV with soundfile, featurize on the host, pad to the batch contract.

Works without DALI. The sampler's batches come in; `Batch` tensors go out, in the same order.
"""
import soundfile
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark import features as feats
from benchmark.data.batch import pad_batch
from benchmark.text import encode


def load_audio(path):
    """16 kHz mono WAV/FLAC -> float32 tensor in [-1, 1]. Raises ValueError naming the file otherwise."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if rate != feats.SAMPLE_RATE or samples.shape[1] != 1:
        raise ValueError(f"{path}: expected 16 kHz mono audio, got {rate} Hz with {samples.shape[1]} channels")
    return torch.from_numpy(samples[:, 0])


class UtteranceDataset(Dataset):
    def __init__(self, utterances, spec):
        self.utterances, self.spec = utterances, spec

    def __len__(self):
        return len(self.utterances)

    def __getitem__(self, index):
        u = self.utterances[index]
        return feats.compute_features(load_audio(u.path), self.spec), encode(u.transcript)


def _collate(items):
    return pad_batch([f for f, _ in items], [t for _, t in items])


class TorchLoader:
    """`loader.batches(list_of_index_lists)` iterates Batches on `device` in the given order."""

    def __init__(self, utterances, spec, device, workers=1, seed=None, speed_perturbation=None):
        # seed: unused (no randomness here); speed perturbation is DALI's (benchmark.data.backends says so)
        if speed_perturbation:
            raise ValueError("the torch loader has no speed perturbation; use a DALI backend")
        self.dataset = UtteranceDataset(utterances, spec)
        self.device, self.num_workers = torch.device(device), workers

    def batches(self, index_batches):
        loader = DataLoader(self.dataset, batch_sampler=index_batches, collate_fn=_collate,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if self.num_workers else None)
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)
