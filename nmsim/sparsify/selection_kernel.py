"""Compiled top-N-of-M selection for float32 data on the CPU: the hot path of every pruned forward pass.

Each group of M scores runs through a sorting network (Batcher's odd-even merge sort, with the comparators
that cannot reach output N-1 removed); the N-th largest score becomes the group's threshold, and ties at the
threshold are resolved by lower index. The result is identical to the reference rule in
:mod:`nmsim.sparsify.masks`; property tests check it. Kernels are generated and compiled with numba once per
(N, M) per process (under 3 s for M <= 32). Other devices and dtypes take :mod:`nmsim.sparsify.torch_selection`.

Two kernels: :func:`keep_top_n_of_m` turns any scores into a mask; :func:`prune_rows_by_magnitude` fuses the
common case (magnitude criterion, optional per-token median or static shift) into one pass over each token that
writes the pruned GEMM input directly. It lays a token's scores out transposed, [M, K/M], so the network runs
on all groups of the token at once in SIMD registers (about 2x faster than one group at a time). The per-token
lower median is found by radix selection on order-preserving integer keys, exact and about 10x faster than
``torch.median`` here.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache

import numba
import numpy as np
import torch

from nmsim.sorting_network import selection_comparators

MAX_GROUP_SIZE = 64  # larger groups use the torch path
CHUNKS_PER_THREAD = 4  # row chunks of the fused kernel per numba thread (balances uneven rows)


def _network_source(n: int, m: int) -> list[str]:
    """Source lines that leave the n-th largest of the variables s0 .. s{m-1} in s{n-1} (a descending network:
    the larger value moves to the lower wire)."""
    return [f"s{a}, s{b} = max(s{a}, s{b}), min(s{a}, s{b})" for a, b in selection_comparators(n, m)]


def _tie_break_source(n: int, m: int, score: str, store: str) -> list[str]:
    """Source lines that re-decide the m-group starting at ``base`` whose ties at ``threshold`` outnumber the
    free slots: everything above the threshold is kept, then the ties in index order (see
    :func:`_selection_source` for ``score`` and ``store``)."""
    return [
        f"free_slots = {n}",
        f"for i in range(base, base + {m}):",
        "    free_slots -= " + score.format(i="i") + " > threshold",
        "tied_seen = 0",
        f"for i in range(base, base + {m}):",
        "    value = " + score.format(i="i"),
        "    tied_seen += value == threshold",
        "    keep = (value > threshold) | ((value == threshold) & (tied_seen <= free_slots))",
        textwrap.indent(store.format(i="i", keep="keep"), "    "),
    ]


def _selection_source(n: int, m: int, score: str, store: str) -> list[str]:
    """Source lines that keep the top n of the m-group starting at index ``base``.

    ``score`` is an expression template of ``{i}`` giving the score at index i; ``store`` a statement template
    (one or more lines) of ``{i}`` and ``{keep}`` that records the decision. The sorting network yields the
    n-th largest score, so ``score >= threshold`` keeps exactly n unless ties at the threshold outnumber the
    free slots; only then does the slow path re-decide the group, the lower index winning.
    """
    lines = [f"s{i} = " + score.format(i=f"base + {i}") for i in range(m)]
    lines += _network_source(n, m)
    lines += [
        f"threshold = s{n - 1}",
        "kept = 0",
        f"for i in range(base, base + {m}):",
        "    keep = " + score.format(i="i") + " >= threshold",
        "    kept += keep",
        textwrap.indent(store.format(i="i", keep="keep"), "    "),
        f"if kept != {n}:",
    ]
    lines += ["    " + line for line in _tie_break_source(n, m, score, store)]
    return "\n".join(lines).splitlines()


def _compile(source: list[str]):
    namespace: dict = {}
    scope = {"numba": numba, "np": np, "max": max, "min": min, "abs": abs, "lower_median": lower_median}
    exec("\n".join(source), scope, namespace)  # noqa: S102 - source generated in this module
    # NaN never reaches a kernel (callers reject it), so max/min may compile to branch-free instructions.
    return numba.njit(nogil=True, parallel=True, fastmath={"nnan", "nsz"})(namespace["kernel"])


@lru_cache(maxsize=None)
def _mask_kernel(n: int, m: int):
    """``kernel(scores[G*m] f32, keep_out[G*m] bool)`` specialised to (n, m)."""
    body = _selection_source(n, m, "scores[{i}]", "keep_out[{i}] = {keep}")
    return _compile(
        [
            "def kernel(scores, keep_out):",
            f"    for g in numba.prange(scores.shape[0] // {m}):",
            f"        base = g * {m}",
        ]
        + ["        " + line for line in body]
    )


@numba.njit(nogil=True)
def lower_median(row: np.ndarray, keys: np.ndarray, spare: np.ndarray, histogram: np.ndarray) -> np.float32:
    """The lower median of a float32 row without NaN (as ``torch.median``), by 4 passes of 8-bit radix select.

    keys, spare: int64 scratch arrays at least as long as ``row``; histogram: int64 scratch [256].
    """
    size = row.shape[0]
    rank = (size - 1) // 2
    bits = row.view(np.uint32)
    histogram[:] = 0
    for i in range(size):
        b = np.int64(bits[i])
        key = b ^ (0xFFFFFFFF if b >= 0x80000000 else 0x80000000)  # float order == unsigned key order
        keys[i] = key
        histogram[key >> 24] += 1
    source, target, count, shift = keys, spare, size, 24
    for level in range(4):
        if level > 0:
            histogram[:] = 0
            for i in range(count):
                histogram[(source[i] >> shift) & 255] += 1
        below = 0
        digit = 0
        while below + histogram[digit] <= rank:
            below += histogram[digit]
            digit += 1
        rank -= below
        if histogram[digit] != count:  # keep only the keys whose digit matches the median's
            kept = 0
            for i in range(count):
                key = source[i]
                target[kept] = key
                kept += ((key >> shift) & 255) == digit
            source, target, count = target, source, kept
        if count == 1:
            break
        shift -= 8
    key = source[0]
    result = np.empty(1, np.uint32)
    result[0] = np.uint32(key ^ (0x80000000 if key >= 0x80000000 else 0xFFFFFFFF))
    return result.view(np.float32)[0]


@lru_cache(maxsize=None)
def _fused_kernel(n: int, m: int):
    """``kernel(x[T, K] f32, mode, static_shift, out[T, K] f32, shift_out[T] f32, keep_out, with_mask, chunks)``.

    mode 0: no shift; 1: per-token lower median; 2: the scalar ``static_shift``. Writes
    out = where(keep(|x − η|), x − η, 0), shift_out = η and, if ``with_mask``, keep_out[T, K] (bool). The T rows
    are split into ``chunks`` parallel chunks, each with its own scratch.
    """
    score = "abs(row[{i}] - shift)"
    store = ("out_row[{i}] = (row[{i}] - shift) if {keep} else np.float32(0.0)\n"
             "if with_mask:\n"
             "    keep_row[{i}] = {keep}")
    source = [
        "def kernel(x, mode, static_shift, out, shift_out, keep_out, with_mask, chunks):",
        "    rows, width = x.shape",
        f"    groups = width // {m}",
        "    for c in numba.prange(chunks):",
        f"        lanes = np.empty(({m}, groups), np.float32)  # lanes[i, g]: the score of x[t, g·m + i]",
        "        thresholds = np.empty(groups, np.float32)  # the n-th largest score of each group",
        "        counts = np.empty(groups, np.int32)  # scores >= the threshold (n unless ties exceed the free slots)",
        "        keys = np.empty(width, np.int64)",
        "        spare = np.empty(width, np.int64)",
        "        histogram = np.empty(256, np.int64)",
        "        for t in range(c * rows // chunks, (c + 1) * rows // chunks):",
        "            row = x[t]",
        "            out_row = out[t]",
        "            keep_row = keep_out[min(t, keep_out.shape[0] - 1)]  # one dummy row without a mask",
        "            if mode == 1:",
        "                shift = lower_median(row, keys, spare, histogram)",
        "            elif mode == 2:",
        "                shift = static_shift",
        "            else:",
        "                shift = np.float32(0.0)",
        "            shift_out[t] = shift",
        "            for g in range(groups):",
        f"                base = g * {m}",
    ]
    source += [f"                lanes[{i}, g] = " + score.format(i=f"base + {i}") for i in range(m)]
    source += ["            for g in range(groups):  # the network on every group at once (SIMD across g)"]
    source += [f"                s{i} = lanes[{i}, g]" for i in range(m)]
    source += ["                " + line for line in _network_source(n, m)]
    source += [
        f"                thresholds[g] = s{n - 1}",
        "                counts[g] = " + " + ".join(f"np.int32(lanes[{i}, g] >= s{n - 1})" for i in range(m)),
        "            for g in range(groups):",
        f"                base = g * {m}",
        "                threshold = thresholds[g]",
        f"                if counts[g] == {n}:",
        f"                    for i in range(base, base + {m}):",
        "                        keep = " + score.format(i="i") + " >= threshold",
        textwrap.indent(store.format(i="i", keep="keep"), " " * 24),
        "                else:",
    ]
    source += ["                    " + line for line in "\n".join(_tie_break_source(n, m, score, store)).splitlines()]
    return _compile("\n".join(source).splitlines())


def prune_rows_by_magnitude(
    x: torch.Tensor, n: int, m: int, shift: str = "none", static_shift: float = 0.0, *, with_mask: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keep the n largest |x − η| of every m along K; return (x − η where kept else 0, η, keep mask or None).

    x: [T, K] float32 on CPU, K % m == 0, no NaN. shift: "none" (η = 0), "median" (per-token lower median)
    or "static" (η = ``static_shift``). Returns ([T, K], [T], bool [T, K] if ``with_mask``).
    """
    rows = x.detach().contiguous()
    out = torch.empty_like(rows)
    shift_out = torch.empty(rows.shape[0], dtype=torch.float32)
    keep = torch.empty(rows.shape if with_mask else (1, rows.shape[1]), dtype=torch.bool)
    mode = {"none": 0, "median": 1, "static": 2}[shift]
    chunks = min(rows.shape[0], CHUNKS_PER_THREAD * numba.get_num_threads())
    _fused_kernel(n, m)(
        rows.numpy(), mode, np.float32(static_shift), out.numpy(), shift_out.numpy(), keep.numpy(), with_mask, chunks
    )
    return out, shift_out, keep if with_mask else None


def supports(scores: torch.Tensor, m: int) -> bool:
    """Whether the compiled path handles these scores: contiguous-able float32 on CPU, small groups."""
    return scores.dtype == torch.float32 and scores.device.type == "cpu" and 2 <= m <= MAX_GROUP_SIZE


def keep_top_n_of_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask keeping the top ``n`` of every ``m`` scores. scores: [..., K] float32, K % m == 0, no NaN."""
    flat = scores.detach().contiguous().reshape(-1).numpy()
    keep = np.empty(flat.shape, dtype=np.bool_)
    _mask_kernel(n, m)(flat, keep)
    return torch.from_numpy(keep).reshape(scores.shape)
