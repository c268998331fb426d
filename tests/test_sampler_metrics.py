import pytest

from benchmark.data.sampler import TrainBatchSampler, epoch_shape, eval_batches
from benchmark.metrics import WordErrorCounter, word_errors

DURATIONS = [5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 0.5, 8.0, 2.5]


def test_sortagrad_first_epoch_is_sorted_then_shuffled_batchwise():
    sampler = TrainBatchSampler(DURATIONS, global_batch=2, seed=7)
    first = sampler.epoch_batches(1)
    flat = [i for b in first for i in b]
    assert [DURATIONS[i] for i in flat] == sorted(DURATIONS)
    second = sampler.epoch_batches(2)
    assert sorted(map(sorted, second)) == sorted(map(sorted, first))     # same batches...
    assert second != first                                              # ...in another order
    assert sampler.epoch_batches(2) == TrainBatchSampler(DURATIONS, 2, seed=7).epoch_batches(2)
    assert TrainBatchSampler(DURATIONS, 2, seed=7, sortagrad=False).epoch_batches(1) != first


def test_ranks_get_disjoint_equal_shards_of_every_global_batch():
    shards = [TrainBatchSampler(DURATIONS, 4, world_size=2, rank=r, seed=3) for r in range(2)]
    for epoch in (1, 2, 3):
        a, b = (s.epoch_batches(epoch) for s in shards)
        assert len(a) == len(b) == 2       # 10 utterances -> 2 global batches of 4, ragged rest dropped
        for x, y in zip(a, b):
            assert len(x) == len(y) == 2 and not set(x) & set(y)
    assert shards[0].samples_per_epoch == 8
    assert epoch_shape(len(DURATIONS), 4, world_size=2) == (len(shards[0]), shards[0].samples_per_epoch)
    with pytest.raises(ValueError):
        TrainBatchSampler(DURATIONS, 4, world_size=2, rank=2)
    with pytest.raises(ValueError, match="does not split evenly"):
        TrainBatchSampler(DURATIONS, 5, world_size=2, rank=0)


def test_one_process_keeps_the_ragged_last_batch():
    sampler = TrainBatchSampler(DURATIONS, 4)
    assert [len(b) for b in sampler.global_batches] == [4, 4, 2]
    assert epoch_shape(len(DURATIONS), 4) == (len(sampler), sampler.samples_per_epoch) == (3, 10)


def test_eval_batches_cover_every_utterance_once():
    covered = [i for r in range(3) for b in eval_batches(DURATIONS, 2, 3, r) for i in b]
    assert sorted(covered) == list(range(len(DURATIONS)))


def test_corpus_wer_is_total_edits_over_total_words():
    # Per-utterance WERs would average to (1/4 + 1) / 2 = 0.625; the corpus WER is 2 / 5.
    assert word_errors(["A B C D", "E"], ["A B C X", "F"]) == (2, 5)
    counter = WordErrorCounter()
    counter.update(["A B C D"], ["A B C X"])
    counter.update(["E"], ["F"])
    assert counter.wer() == pytest.approx(0.4)
    assert word_errors(["A B"], [""]) == (2, 2)
