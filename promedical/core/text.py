"""One text normaliser for every overlap check (audit, dedup, split) and the word n-gram Jaccard."""
from __future__ import annotations

import unicodedata


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: what "the same text" means for every overlap check."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def word_ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()
    return {tuple(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def ngram_jaccard(a: str, b: str, n: int = 3) -> float:
    """Jaccard similarity of word n-gram sets: 1.0 for identical texts, near 0 for unrelated ones."""
    x, y = word_ngrams(a, n), word_ngrams(b, n)
    return len(x & y) / len(x | y) if x | y else 1.0
