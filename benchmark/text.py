"""The LibriSpeech alphabet, transcript normalization, and greedy CTC decoding.

Index 0 is the CTC blank, then apostrophe, A-Z and space: 29 symbols, as in DeepSpeech2 references.
"""
import re

BLANK = 0
LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "  # '_' stands for the blank and never appears in text
NUM_CLASSES = len(LABELS)
ALLOWED_CHARS = frozenset(LABELS[1:])
_INDEX = {c: i for i, c in enumerate(LABELS) if i != BLANK}


def invalid_chars(transcript):
    """The characters of `transcript` outside the alphabet, sorted (empty when it is valid)."""
    return sorted(set(transcript) - ALLOWED_CHARS)


def encode(transcript):
    """Transcript (already normalized) -> list of label indices. Raises ValueError naming bad characters."""
    bad = invalid_chars(transcript)
    if bad:
        raise ValueError(f"characters outside the alphabet: {''.join(bad)!r} in {transcript!r}")
    return [_INDEX[c] for c in transcript]


def decode(indices):
    """Label indices (no blanks) -> text."""
    return "".join(LABELS[i] for i in indices)


def greedy_collapse(best_path):
    """Best-path CTC decoding of one utterance: merge repeats, then drop blanks.

    `best_path` is a sequence of argmax label indices over the valid frames only.
    """
    out, previous = [], BLANK
    for index in best_path:
        index = int(index)
        if index != previous and index != BLANK:
            out.append(index)
        previous = index
    return re.sub(" +", " ", decode(out)).strip()
