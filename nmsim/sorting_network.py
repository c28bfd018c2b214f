"""Comparator networks for top-N-of-M selection (pure Python): Batcher's odd-even merge sort, and the part of it
that decides the N-th largest of M values.

The pruning kernel (:mod:`nmsim.sparsify.selection_kernel`) compiles these networks; the area model
(:mod:`nmsim.hw.complexity`) counts their comparators and depth. Both read the same network from here.
"""

from __future__ import annotations


def batcher_comparators(size: int) -> list[tuple[int, int]]:
    """Comparators (a, b), a < b, of Batcher's odd-even merge sort over ``size`` wires (any size >= 1)."""
    padded = 1
    while padded < size:
        padded *= 2
    pairs = []
    p = 1
    while p < padded:
        k = p
        while k >= 1:
            for j in range(k % p, padded - k, 2 * k):
                for i in range(min(k, padded - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    # Wires >= size hold -inf padding; a comparator touching one never moves a real value.
    return [(a, b) for a, b in pairs if b < size]


def selection_comparators(n: int, m: int) -> list[tuple[int, int]]:
    """The comparators of the m-wire sorting network that influence output wire n-1 (the n-th largest)."""
    needed = {n - 1}
    kept = []
    for a, b in reversed(batcher_comparators(m)):
        if a in needed or b in needed:
            needed |= {a, b}
            kept.append((a, b))
    return kept[::-1]
