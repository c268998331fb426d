"""Offline English prose for the synthetic corpus: sentences from the Debian `fortunes` package.

Each sentence comes out twice: `spoken` (lower case words with the punctuation that shapes a TTS voice's
pauses and intonation, given to espeak-ng) and `transcript` (the same words in the LibriSpeech alphabet:
upper-case A-Z, apostrophe, space). Both are made from the same token list, so the audio says exactly the
transcript. Sentences that cannot be normalized cleanly (code, markup, acronyms, currency, decimals,
abbreviations, foreign letters) are dropped rather than guessed at.
"""
import functools
import os
import re
import unicodedata
from pathlib import Path

from benchmark.text import invalid_chars

# DS2_FORTUNES_DIR: the same files elsewhere (a bare GPU machine unpacks the carried .deb into a private
# prefix: measure/gpu_acceptance.py); read when this module is imported.
FORTUNES_DIR = Path(os.environ.get("DS2_FORTUNES_DIR") or "/usr/share/games/fortunes")
# Pictures, not prose; `off/` (offensive fortunes, absent in Debian's package) is never read.
SKIPPED_FILES = frozenset({"ascii-art"})
MIN_WORDS, MAX_WORDS = 3, 25

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                    "nine": "ninth", "twelve": "twelfth"}
# Abbreviations that end in a full stop but never end a sentence, with what a reader says.
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "jr": "junior",
                  "sr": "senior", "vs": "versus", "mt": "mount", "prof": "professor", "capt": "captain",
                  "gen": "general", "col": "colonel", "lt": "lieutenant", "sgt": "sergeant", "rev": "reverend"}
_SYMBOL_WORDS = {"&": " and ", "%": " percent "}
_PAUSE_PUNCTUATION = ",.;:?!"
# Anything else outside letters, digits, apostrophes, hyphens, quotes, brackets and pause punctuation
# marks code, markup or art: the sentence is dropped.
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|\d+(?:st|nd|rd|th)?|[,.;:?!]")
_ALLOWED_RAW = re.compile(r"^[A-Za-z0-9'\"`\-,.;:?!()&% ]+$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])")


def number_words(n):
    """0 <= n < 1_000_000 -> English words ("one hundred twenty three")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    return number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_words(n % 1000))


def ordinal_words(n):
    """1 -> first, 21 -> twenty first, 40 -> fortieth."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL_ENDINGS:
        words[-1] = _ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _year_words(n):
    """1100..1999 read as years: 1901 -> nineteen oh one, 1900 -> nineteen hundred."""
    high, low = divmod(n, 100)
    if low == 0:
        return number_words(high) + " hundred"
    return number_words(high) + (" oh " + _ONES[low] if low < 10 else " " + number_words(low))


def _digits_to_words(token):
    """A digit token (maybe with an ordinal suffix) -> words, or None when it is not a plain number."""
    match = re.fullmatch(r"(\d+)(st|nd|rd|th)?", token)
    digits, suffix = match.groups()
    if len(digits) > 1 and digits[0] == "0" or len(digits) > 6:
        return None  # 007, phone numbers, long ids: no single reading
    n = int(digits)
    if suffix:
        return ordinal_words(n) if n > 0 else None
    if len(digits) == 4 and 1100 <= n <= 1999:
        return _year_words(n)
    return number_words(n)


def normalize_sentence(raw):
    """Raw sentence -> (spoken, transcript), or None when it cannot be normalized cleanly."""
    text = unicodedata.normalize("NFKC", raw)
    if not _ALLOWED_RAW.match(text) or re.search(r"\d[.,:]\d|--|\.\.|'\d|\d'", text):
        return None  # code, markup, decimals, times, dashes used as punctuation, ellipses
    # All-caps words of two or more letters are acronyms (IBM, UNIX) that a voice may spell or read.
    if re.search(r"\b[A-Z]{2,}\b", text):
        return None
    for symbol, words in _SYMBOL_WORDS.items():
        text = text.replace(symbol, words)
    text = re.sub(r"[\"`()]", " ", text).replace("-", " ").lower()
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quote marks, not apostrophes inside words
    text = re.sub(r"\b([a-z]+)\.(?=\s|$)", lambda m: _ABBREVIATIONS.get(m.group(1), m.group(0)), text)
    if re.search(r"\b[a-z]\.", text):
        return None  # initials (J. R. R. Tolkien) and dotted abbreviations (e.g.)
    if re.search(r"(?<!')\b(?![aio]\b)[a-z]\b(?!')", text):
        return None  # stray letters: "n:" of a dictionary entry, list labels, variables
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        return None  # something the token pattern does not cover
    words, spoken = [], []
    for token in tokens:
        if token in _PAUSE_PUNCTUATION:
            if spoken and spoken[-1] not in _PAUSE_PUNCTUATION:
                spoken.append(token)
            continue
        if token[0].isdigit():
            token = _digits_to_words(token)
            if token is None:
                return None
        words.extend(token.split())
        spoken.extend(token.split())
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    transcript = " ".join(words).upper()
    if invalid_chars(transcript):
        return None
    spoken_text = re.sub(r" ([,.;:?!])", r"\1", " ".join(spoken))
    return spoken_text, transcript


def _fortunes(path):
    """A fortune file -> its entries (strings), attribution lines removed."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    text = re.sub(r".\x08", "", text)  # overstriking (bold/underline by backspace)
    for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = [line for line in entry.splitlines() if not re.match(r"\s*--", line)]
        yield " ".join(" ".join(lines).split())


def split_sentences(paragraph):
    """A paragraph -> sentences, not splitting after known abbreviations (Mr., Dr.)."""
    pieces = _SENTENCE_END.split(paragraph)
    sentences = []
    for piece in pieces:
        previous = sentences[-1] if sentences else ""
        last_word = re.search(r"([A-Za-z]+)\.$", previous)
        if last_word and last_word.group(1).lower() in _ABBREVIATIONS:
            sentences[-1] = previous + " " + piece
        else:
            sentences.append(piece)
    return sentences


def fortune_files(fortunes_dir=FORTUNES_DIR):
    """The plain-text fortune files (not the *.dat indexes or *.u8 copies), sorted by name."""
    fortunes_dir = Path(fortunes_dir)
    if not fortunes_dir.is_dir():
        raise FileNotFoundError(f"{fortunes_dir}: no fortunes folder; install the Debian package `fortunes` "
                                "(scripts/setup.sh does)")
    return sorted(p for p in fortunes_dir.iterdir()
                  if p.is_file() and "." not in p.name and p.name not in SKIPPED_FILES)


@functools.lru_cache(maxsize=2)
def load_sentences(fortunes_dir=FORTUNES_DIR):
    """All usable sentences as (spoken, transcript), unique by transcript, in a fixed (file) order."""
    seen, sentences = set(), []
    for path in fortune_files(fortunes_dir):
        for entry in _fortunes(path):
            for raw in split_sentences(entry):
                normalized = normalize_sentence(raw)
                if normalized and normalized[1] not in seen:
                    seen.add(normalized[1])
                    sentences.append(normalized)
    return tuple(sentences)
