"""Alphabet, greedy CTC decoding and corpus word error rate.

Label 0 is the CTC blank, then the apostrophe, A-Z and space (29 classes). Greedy decoding takes the most
likely label of every valid frame, merges runs of the same label and drops blanks. The WER is the corpus
one: all word edits divided by all reference words (jiwer counts the edits).
"""
import itertools

import jiwer

BLANK = 0
ALPHABET = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ "   # labels 1..28
NUM_CLASSES = len(ALPHABET) + 1


def encode(transcript):
    """Upper-case transcript -> label indices (1..28). Raises ValueError naming unknown characters."""
    unknown = sorted(set(transcript) - set(ALPHABET))
    if unknown:
        raise ValueError(f"characters outside the alphabet: {''.join(unknown)!r} in {transcript!r}")
    return [ALPHABET.index(c) + 1 for c in transcript]


def greedy_decode(logits, lengths):
    """logits [T, B, classes], lengths [B] -> one transcript per utterance (best path, collapsed)."""
    best = logits.argmax(dim=2).cpu()
    transcripts = []
    for b, n in enumerate(lengths.tolist()):
        labels = [label for label, _ in itertools.groupby(best[:n, b].tolist()) if label != BLANK]
        text = "".join(ALPHABET[label - 1] for label in labels)
        transcripts.append(" ".join(text.split()))   # no leading, trailing or repeated spaces
    return transcripts


def corpus_wer(references, hypotheses):
    """(word edits, reference words) over the whole corpus; WER = edits / words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    # jiwer refuses empty references: such an utterance only adds its hypothesis words as insertions.
    scored = [(r, h) for r, h in zip(references, hypotheses) if r.split()]
    edits = sum(len(h.split()) for r, h in zip(references, hypotheses) if not r.split())
    words = 0
    if scored:
        counts = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
        edits += counts.substitutions + counts.deletions + counts.insertions
        words = counts.substitutions + counts.deletions + counts.hits
    return edits, words
