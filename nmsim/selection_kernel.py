"""Compiled top-N-of-M selection for float32 scores: the hot path of every pruned forward pass.

Each group of M scores runs through a sorting network (Batcher's odd-even merge sort, with the comparators
that cannot reach output N-1 removed) held entirely in registers; the N-th largest score becomes the group's
threshold, and ties at the threshold are resolved by lower index. The result is identical to the reference
rule in :mod:`nmsim.patterns`; a property test checks it. Kernels are generated and compiled with numba once
per (N, M) per process (under 2 s).
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
import torch

MAX_GROUP_SIZE = 64  # larger groups use the torch reference path


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


@lru_cache(maxsize=None)
def _compiled_kernel(n: int, m: int):
    """Generate and compile ``kernel(scores[G*m] f32, keep[G*m] bool)`` specialised to (n, m)."""
    lines = [
        "def kernel(scores, keep):",
        f"    for g in numba.prange(scores.shape[0] // {m}):",
        f"        base = g * {m}",
    ]
    lines += [f"        v{i} = scores[base + {i}]" for i in range(m)]
    # Descending network: the larger value moves to the lower wire.
    lines += [f"        v{a}, v{b} = max(v{a}, v{b}), min(v{a}, v{b})" for a, b in selection_comparators(n, m)]
    lines += [
        f"        threshold = v{n - 1}",
        f"        free_slots = {n}",
        f"        for i in range({m}):",
        "            free_slots -= scores[base + i] > threshold",
        "        tied_seen = 0",
        f"        for i in range({m}):",
        "            s = scores[base + i]",
        "            tied = s == threshold",
        "            tied_seen += tied",
        "            keep[base + i] = (s > threshold) | (tied & (tied_seen <= free_slots))",
    ]
    namespace: dict = {}
    exec("\n".join(lines), {"numba": numba, "max": max, "min": min}, namespace)  # noqa: S102 - generated above
    # NaN never reaches the kernel (callers reject it), so max/min may compile to branch-free instructions.
    return numba.njit(nogil=True, parallel=True, fastmath={"nnan", "nsz"})(namespace["kernel"])


def supports(scores: torch.Tensor, m: int) -> bool:
    """Whether the compiled path handles these scores: contiguous-able float32 on CPU, small groups."""
    return scores.dtype == torch.float32 and scores.device.type == "cpu" and 2 <= m <= MAX_GROUP_SIZE


def keep_top_n_of_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask keeping the top ``n`` of every ``m`` scores. scores: [..., K] float32, K % m == 0, no NaN."""
    flat = scores.detach().contiguous().reshape(-1).numpy()
    keep = np.empty(flat.shape, dtype=np.bool_)
    _compiled_kernel(n, m)(flat, keep)
    return torch.from_numpy(keep).reshape(scores.shape)
