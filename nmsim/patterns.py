"""What an N:M pattern is: parsing every common spelling, and the keep-masks it implies.

Glossary (used everywhere in nmsim):

- **N:M** keeps the N largest-scoring of every M consecutive values along the reduction dimension K, for
  each token separately. ``8:16`` keeps 8 of every 16; its density is N/M = 0.5.
- **unstructured:D** keeps the round(D·K) largest-scoring values of each token's whole K-row (density D).
- **dense** keeps everything.

Mask rules (all functions here follow them):

- Ties are broken deterministically: among equal scores the lower K index wins.
- When K is not a multiple of M the row is zero-padded to the next multiple. Padded positions score below
  every real position, so each group of the padded row keeps exactly N positions, and the last (partial)
  group keeps min(N, its real length) real ones.
- NaN scores are rejected with ``ValueError``: a NaN is never ranked, in particular never kept as "largest".
  ±inf are ordinary extreme values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from nmsim import selection_kernel
from nmsim.errors import NmsimError

PatternKind = Literal["dense", "nm", "unstructured"]

_SPELLINGS = (
    "write 'N:M' (keep N of every M along K, e.g. 8:16), 'dense', 'unstructured:D' with D the kept "
    "fraction (e.g. unstructured:0.5), apex 'm16n8', or a prune count 'prune 8 of 16'"
)


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern. Build it with :func:`parse_pattern` or the class methods."""

    kind: PatternKind
    n: int = 1
    m: int = 1
    unstructured_density: float = 1.0

    @classmethod
    def dense(cls) -> Pattern:
        return cls("dense")

    @classmethod
    def nm(cls, n: int, m: int) -> Pattern:
        if m < 1:
            raise NmsimError(f"pattern {n}:{m}: M must be at least 1")
        if not 1 <= n <= m:
            raise NmsimError(f"pattern {n}:{m}: N must satisfy 1 <= N <= M (keep N of every M along K)")
        return cls("nm", n=n, m=m)

    @classmethod
    def unstructured(cls, density: float) -> Pattern:
        if not (0.0 < density <= 1.0) or math.isnan(density):
            raise NmsimError(f"unstructured density {density}: must be a kept fraction in (0, 1]")
        return cls("unstructured", unstructured_density=float(density))

    @property
    def density(self) -> float:
        """Fraction of activations kept (1.0 for dense)."""
        if self.kind == "nm":
            return self.n / self.m
        if self.kind == "unstructured":
            return self.unstructured_density
        return 1.0

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "unstructured":
            return f"unstructured:{self.unstructured_density:g}"
        return "dense"


_NM = re.compile(r"^(\d+):(\d+)$")
_APEX = re.compile(r"^m(\d+)n(\d+)(?:_1d)?$")  # apex ASP: M first, then the kept count N
_PRUNE = re.compile(r"^prune[\s_]*(\d+)[\s_]*(?:of|/)[\s_]*(\d+)$")  # prune P of M -> keep M-P
_PRUNE_KW = re.compile(r"^prune_n\s*=\s*(\d+)\s*,\s*prune_m\s*=\s*(\d+)$")  # Wanda/SparseGPT flags
_UNSTRUCTURED = re.compile(r"^unstructured\s*[:@=]?\s*([0-9]*\.?[0-9]+)\s*(%?)$")


def parse_pattern(text: str) -> Pattern:
    """Parse a pattern string in any supported spelling into a canonical :class:`Pattern`.

    ``"8:16"``, ``"m16n8"`` and ``"prune 8 of 16"`` all mean keep 8 of every 16.
    """
    s = str(text).strip().lower()
    if s == "dense":
        return Pattern.dense()
    if match := _NM.match(s):
        return Pattern.nm(int(match[1]), int(match[2]))
    if match := _APEX.match(s):
        return Pattern.nm(int(match[2]), int(match[1]))
    if match := _PRUNE.match(s) or _PRUNE_KW.match(s):
        pruned, m = int(match[1]), int(match[2])
        if not 0 <= pruned < m:
            raise NmsimError(f"pattern {text!r}: can prune 0 to M-1 of every M values, not {pruned} of {m}")
        return Pattern.nm(m - pruned, m)
    if match := _UNSTRUCTURED.match(s):
        value = float(match[1]) / (100.0 if match[2] else 1.0)
        return Pattern.unstructured(value)
    raise NmsimError(f"unrecognised sparsity pattern {text!r}: {_SPELLINGS}")


def _reject_nan(scores: torch.Tensor) -> None:
    if scores.is_floating_point() and torch.isnan(scores).any():
        count = int(torch.isnan(scores).sum())
        raise ValueError(f"{count} NaN score(s): NaN cannot be ranked; fix the input or the criterion")


def keep_top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean mask keeping exactly ``n`` largest of the last dimension, lower index winning ties.

    scores: [..., G] real tensor; returns bool [..., G]. n >= G keeps everything.
    """
    _reject_nan(scores)
    size = scores.shape[-1]
    if n >= size:
        return torch.ones_like(scores, dtype=torch.bool)
    if n <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    # The n-th largest value is the threshold; values above it are kept, and the first few ties fill the rest.
    threshold = scores.kthvalue(size - n + 1, dim=-1, keepdim=True).values
    above = scores > threshold
    tied = scores == threshold
    free_slots = n - above.sum(dim=-1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=-1) <= free_slots))


def nm_mask(scores: torch.Tensor, n: int, m: int, *, use_kernel: bool = True) -> torch.Tensor:
    """Keep the top ``n`` of every ``m`` consecutive scores along the last dimension (K).

    scores: [..., K]; returns bool [..., K]. K is padded to a multiple of m (see module rules).
    float32 scores take the compiled path of :mod:`nmsim.selection_kernel` unless ``use_kernel`` is False;
    both paths give the same mask.
    """
    k = scores.shape[-1]
    pad = (-k) % m
    if pad:
        scores = F.pad(scores, (0, pad), value=float("-inf"))
    if use_kernel and n < m and selection_kernel.supports(scores, m):
        _reject_nan(scores)
        keep = selection_kernel.keep_top_n_of_m(scores, n, m)
    else:
        keep = keep_top_n(scores.reshape(*scores.shape[:-1], (k + pad) // m, m), n).reshape(scores.shape)
    return keep[..., :k]


def nm_mask_reference(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """:func:`nm_mask` through the plain torch path only (for tests and cross-checks)."""
    return nm_mask(scores, n, m, use_kernel=False)


def unstructured_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the round(density·K) (at least one) largest scores of each row. scores: [..., K] -> bool [..., K]."""
    k = scores.shape[-1]
    return keep_top_n(scores, max(1, int(density * k + 0.5)))


def pattern_mask(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """The keep-mask ``pattern`` implies for ``scores`` [..., K]; bool [..., K]."""
    if pattern.kind == "nm":
        return nm_mask(scores, pattern.n, pattern.m)
    if pattern.kind == "unstructured":
        return unstructured_mask(scores, pattern.unstructured_density)
    _reject_nan(scores)
    return torch.ones_like(scores, dtype=torch.bool)


METADATA_FORMATS = ("index", "bitmask", "enumerative")


def compressed_row_bytes(k: int, pattern: Pattern, value_bits: int, metadata_format: str) -> float:
    """Bytes of one row of K values kept N of every M: ⌈K/M⌉ groups of N values plus the group's metadata."""
    return math.ceil(k / pattern.m) * (pattern.n * value_bits + metadata_bits(pattern.m, pattern.n,
                                                                             metadata_format)) / 8


def metadata_share(pattern: Pattern, value_bits: int, metadata_format: str) -> float:
    """The fraction of a compressed row's bytes that is metadata (0 for dense)."""
    if pattern.kind == "dense":
        return 0.0
    meta = metadata_bits(pattern.m, pattern.n, metadata_format)
    return meta / (pattern.n * value_bits + meta)


def metadata_bits(group_size: int, kept: int, fmt: str, fixed_count: bool = True) -> int:
    """Metadata bits of one group of ``group_size`` positions that keeps ``kept`` of them.

    index: kept·⌈log2 M⌉ (one position per value, NVIDIA/CP style); bitmask: M bits; enumerative: ⌈log2 C(M, kept)⌉
    (the pattern's rank among all C(M, kept) choices). A group whose count varies (``fixed_count`` False, e.g. an
    unstructured mask cut into groups) also stores its count in ⌈log2(M+1)⌉ bits, except in bitmask form.
    """
    count_bits = 0 if fixed_count else math.ceil(math.log2(group_size + 1))
    if fmt == "index":
        return kept * math.ceil(math.log2(group_size)) + count_bits
    if fmt == "bitmask":
        return group_size
    if fmt == "enumerative":
        return math.ceil(math.log2(math.comb(group_size, kept))) + count_bits
    raise ValueError(f"unknown metadata format {fmt!r}; choose from {', '.join(METADATA_FORMATS)}")
