"""Word error rate the corpus way: total word edits / total reference words, summed over all ranks.

Per-batch counts come from jiwer (C-backed edit distance); the global WER is computed from counts
all-reduced across ranks, never by averaging per-utterance or per-rank WERs.
"""
import jiwer
import torch
import torch.distributed as dist


def word_errors(references, hypotheses):
    """(word edits, reference words) for lists of transcripts. Empty hypotheses count as deletions."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        return 0, 0
    # jiwer rejects empty references; an utterance with no words adds its insertions only.
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.split()]
    insertions_only = sum(len(h.split()) for r, h in zip(references, hypotheses) if not r.split())
    if not pairs:
        return insertions_only, 0
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    errors = out.substitutions + out.deletions + out.insertions
    words = out.substitutions + out.deletions + out.hits
    return errors + insertions_only, words


class WordErrorCounter:
    """Accumulates edits and words over batches; `wer()` all-reduces across ranks when distributed."""

    def __init__(self):
        self.errors = 0
        self.words = 0

    def update(self, references, hypotheses):
        errors, words = word_errors(references, hypotheses)
        self.errors += errors
        self.words += words

    def totals(self, device="cpu"):
        counts = torch.tensor([self.errors, self.words], dtype=torch.float64, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        return int(counts[0]), int(counts[1])

    def wer(self, device="cpu"):
        errors, words = self.totals(device)
        return errors / words if words else float("nan")
