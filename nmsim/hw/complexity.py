"""What N:M support costs in logic, as counts: online top-N-of-M selection and operand-select muxes.

Counts, not areas: an area model multiplies them by cell areas from a calibration file. Sources and formulas:
``shared/reference/hw_reference.md`` §6–7.

Selection networks (one compare-exchange, CE = a comparator and two 2:1 muxes), per group of M values:

- ``bitonic``: M·k(k+1)/4 CEs, depth k(k+1)/2, M = 2^k (other M use the next power of two).
- ``odd_even``: Batcher's odd-even merge sort, counted on the network nmsim generates for its own kernel.
- ``half_split``: top M/2 only: sort each half with odd-even networks (one ascending, one descending), then
  one max per pair (a comparator and one mux). Exactly the top-M/2 multiset.
- ``rank``: all-pairs comparisons, M(M−1)/2 comparators in one stage (plus M popcounts, not counted).

Operand select: with ordered indices, kept slot i of a group can only come from positions i…M−N+i, so each of
the N slots needs an (M−N+1):1 mux, i.e. N·(M−N) 2:1 muxes per group and per data bit.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass

from nmsim.sorting_network import batcher_comparators

SELECTION_KINDS = ("bitonic", "odd_even", "half_split", "rank")


@dataclass(frozen=True)
class SelectionNetwork:
    kind: str
    group_size: int
    compare_exchanges: int  # full CEs (comparator + two muxes)
    max_stages: int  # comparator + one mux (the half-split's final pairwise max)
    depth: int  # comparator stages on the longest path

    @property
    def comparators(self) -> int:
        return self.compare_exchanges + self.max_stages


def _network_depth(pairs: list[tuple[int, int]]) -> int:
    ready: dict[int, int] = {}
    for a, b in pairs:
        ready[a] = ready[b] = max(ready.get(a, 0), ready.get(b, 0)) + 1
    return max(ready.values(), default=0)


@functools.cache
def selection_network(group_size: int, kind: str = "half_split") -> SelectionNetwork:
    """Size and depth of a top-(M/2)-of-M selector (``half_split``) or of a full M-sorter."""
    m = group_size
    if m < 2:
        raise ValueError(f"group size {m}: a selector needs at least 2 inputs")
    if kind == "bitonic":
        k = (m - 1).bit_length()
        return SelectionNetwork(kind, m, (1 << k) * k * (k + 1) // 4, 0, k * (k + 1) // 2)
    if kind == "odd_even":
        pairs = batcher_comparators(m)
        return SelectionNetwork(kind, m, len(pairs), 0, _network_depth(pairs))
    if kind == "half_split":
        half = batcher_comparators(m // 2)
        return SelectionNetwork(kind, m, 2 * len(half), m // 2, _network_depth(half) + 1)
    if kind == "rank":
        return SelectionNetwork(kind, m, 0, m * (m - 1) // 2, 1)
    raise ValueError(f"unknown selection network {kind!r}; choose from {', '.join(SELECTION_KINDS)}")


def select_muxes_per_group(n: int, m: int) -> int:
    """2:1 mux equivalents per group and per data bit to route each kept value to its MAC (ordered indices)."""
    return n * (m - n)
