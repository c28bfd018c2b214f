"""What an N:M pattern is: one value (:class:`Pattern`), parsing every common spelling, canonical names, and the
metadata bits each storage format needs. Pure Python: the hardware half imports it without torch; the torch masks
a pattern implies live in :mod:`nmsim.sparsify.masks`.

Glossary (used everywhere in nmsim):

- **N:M** keeps the N largest-scoring of every M consecutive values along the reduction dimension K, for
  each token separately. ``8:16`` keeps 8 of every 16; its density is N/M = 0.5.
- **unstructured:D** keeps the round(D·K) largest-scoring values of each token's whole K-row (density D).
- **dense** keeps everything.

Mask rules (every mask function follows them, :mod:`nmsim.sparsify.masks`, the compiled CPU kernel and the
torch path for CUDA and other dtypes alike):

- Ties are broken deterministically: among equal scores the lower K index wins. -0.0 and +0.0 are equal scores.
  Scores are compared in their own dtype: bf16 or fp16 scores that round to the same number are ties, even where
  their float32 originals differ (nothing is upcast).
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

    @property
    def slug(self) -> str:
        """The spelling used in file and directory names: ``8of16``, ``unstructured0.5``, ``dense``."""
        if self.kind == "nm":
            return f"{self.n}of{self.m}"
        if self.kind == "unstructured":
            return f"unstructured{self.unstructured_density:g}"
        return "dense"

    def __str__(self) -> str:
        """The canonical spelling every table uses: ``8:16``, ``unstructured:0.5``, ``dense``."""
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "unstructured":
            return f"unstructured:{self.unstructured_density:g}"
        return "dense"


_NM = re.compile(r"^(\d+)(?::|of)(\d+)$")  # 8:16, or the file-name spelling 8of16
_APEX = re.compile(r"^m(\d+)n(\d+)(?:_1d)?$")  # apex ASP: M first, then the kept count N
_PRUNE = re.compile(r"^prune[\s_]*(\d+)[\s_]*(?:of|/)[\s_]*(\d+)$")  # prune P of M -> keep M-P
_PRUNE_KW = re.compile(r"^prune_n\s*=\s*(\d+)\s*,\s*prune_m\s*=\s*(\d+)$")  # Wanda/SparseGPT flags
_UNSTRUCTURED = re.compile(r"^unstructured\s*[:@=]?\s*([0-9]*\.?[0-9]+)\s*(%?)$")


def parse_pattern(text: str | Pattern) -> Pattern:
    """Parse a pattern string in any supported spelling into a canonical :class:`Pattern` (a Pattern is returned
    as it is).

    ``"8:16"``, ``"m16n8"``, ``"prune 8 of 16"`` and ``"8of16"`` (the file-name spelling) all mean keep 8 of
    every 16.
    """
    if isinstance(text, Pattern):
        return text
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
