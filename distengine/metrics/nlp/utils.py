"""Sequence helpers of PyTorch-Ignite's ``ignite.metrics.nlp.utils``: n-grams, longest common
subsequence, BLEU's clipped n-gram precision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["lcs", "modified_precision", "ngrams"]


def ngrams(sequence: Sequence[Any], n: int) -> Counter:
    """How often each run of ``n`` consecutive items occurs in ``sequence``.

    Example::

        ngrams("abab", 2)   # Counter({("a", "b"): 2, ("b", "a"): 1})
    """
    return Counter(tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1))


def lcs(seq_a: Sequence[Any], seq_b: Sequence[Any]) -> int:
    """The length of the longest common subsequence of ``seq_a`` and ``seq_b``.

    Example::

        lcs("abcde", "ace")   # 3
    """
    previous = [0] * (len(seq_b) + 1)
    for a in seq_a:
        current = [0]
        for j, b in enumerate(seq_b):
            current.append(previous[j] + 1 if a == b else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def modified_precision(
    references: Sequence[Sequence[Any]], candidate: Sequence[Any], n: int
) -> tuple[int, int]:
    """BLEU's clipped n-gram counts: (n-grams of ``candidate`` found in a reference, each
    counted at most as often as in the reference that has it most; all of its n-grams).

    Example::

        modified_precision([["the", "cat"]], ["the", "the"], 1)   # (1, 2)
    """
    counts = ngrams(candidate, n)
    most: Counter = Counter()
    for reference in references:
        most |= ngrams(reference, n)
    return sum((counts & most).values()), sum(counts.values())
