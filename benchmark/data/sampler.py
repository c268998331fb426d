"""The sampler owns the order: SortaGrad first epoch, then batch-wise shuffling, sharded per rank.

Global batches (batch_size x world_size utterances) are cut from the duration-sorted list, so every
batch holds utterances of similar length (little padding). Epoch 1 walks them shortest first
(SortaGrad); later epochs shuffle the order of the batches with a generator seeded by (seed, epoch),
identical on every rank. Each rank takes its contiguous slice of every global batch. Loaders only read
what they are given.
"""
import random


def _sorted_by_duration(durations):
    # Ties broken by index so the order is the same on every machine.
    return sorted(range(len(durations)), key=lambda i: (durations[i], i))


def epoch_shape(num_utterances, global_batch, world_size=1):
    """(steps per epoch, utterances per epoch) of `num_utterances` cut into global batches.

    Ranks must take the same number of steps, so a ragged last batch is only kept on one process.
    """
    steps, ragged = divmod(num_utterances, global_batch)
    if ragged and world_size == 1:
        return steps + 1, num_utterances
    return steps, steps * global_batch


class TrainBatchSampler:
    """Per-epoch lists of this rank's training batches (lists of utterance indices)."""

    def __init__(self, durations, global_batch, world_size=1, rank=0, seed=1, sortagrad=True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} does not split evenly among {world_size} ranks")
        self.batch_size, self.world_size, self.rank = global_batch // world_size, world_size, rank
        self.seed, self.sortagrad = seed, sortagrad
        order = _sorted_by_duration(durations)
        steps, _ = epoch_shape(len(order), global_batch, world_size)
        self.global_batches = [order[i * global_batch:(i + 1) * global_batch] for i in range(steps)]
        if not self.global_batches:
            raise ValueError(f"{len(durations)} utterances make no global batch of {global_batch}")

    def __len__(self):
        """Steps per epoch."""
        return len(self.global_batches)

    @property
    def samples_per_epoch(self):
        return sum(len(b) for b in self.global_batches)

    def epoch_batches(self, epoch):
        """This rank's batches for `epoch` (1-based)."""
        batches = list(self.global_batches)
        if epoch > 1 or not self.sortagrad:
            random.Random(self.seed * 100003 + epoch).shuffle(batches)
        size = self.batch_size
        return [b[self.rank * size:(self.rank + 1) * size] for b in batches]


def eval_batches(durations, batch_size, world_size=1, rank=0):
    """This rank's evaluation batches: every utterance exactly once over all ranks, sorted by length."""
    order = _sorted_by_duration(durations)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return batches[rank::world_size]
