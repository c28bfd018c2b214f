"""What a layer *uses* on a design: its pattern, where the design exploits it, and what the real masks cost.

A design *supports* patterns (its YAML, drives area); a layer *uses* one (drives cycles and bytes). From the pattern
and, when given, the trace statistics of that layer's input (:class:`nmsim.traces.reader.InputStats`):

- ``compute_density``: MAC slots per K position. N/M on a datapath built for the pattern. A hierarchical design
  (HighLight-style) is built for its smallest pattern n:m; it runs a larger one group of m at a time, and a group
  whose real mask keeps more than n needs ⌈kept/n⌉ passes, so the density is E[⌈kept/n⌉]·n/m over the trace's
  ``group_nnz`` histogram (N/M when every group keeps exactly n, which ``--ideal`` assumes).
- ``zero_slot_fraction``: natural zeros that still occupy a MAC slot. A fixed-slot datapath (dense or N:M)
  cannot skip them in time, only gate them (energy). Dense: the trace's natural-zero fraction; pruned by
  magnitude: zeros are dropped first, so only zeros beyond the pruned share, (z − (1 − d)) / d, remain.
- ``rows_needed``: for activation sparsity, the fraction of weight rows (K indices) a tile of T tokens needs (the
  union of their masks, trace ``weight_fetch``). Ideal: N/M for any T, the answer that assumes every token of a
  tile keeps the same positions.

An input the trace left dense (a projection or layer outside the run's targets) runs dense. Weight sparsity is
static: the trace does not enter. A pattern the design does not support runs dense
(``fallback_dense``) or is an error.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from nmsim.hashing import hash_once
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import Pattern, parse_pattern
from nmsim.traces.reader import InputStats

DENSE = parse_pattern("dense")
DENSE_IN_TRACE = 0.999  # a traced input this dense was left unpruned (its layer or projection was not a target)


@dataclass(frozen=True)
class LayerUse:
    pattern: Pattern  # the pattern the layer uses (dense when the design runs it dense)
    operand: str  # where the design exploits it: none, activation or weight
    compute_density: float  # MAC slots spent per K position
    rows_needed: tuple[tuple[int, float], ...] = ()  # (tile tokens, weight-row fraction); () = every row
    zero_slot_fraction: float = 0.0  # MAC slots whose activation is exactly zero (clock-gated, energy only)
    note: str = ""  # why a requested pattern runs dense, if it does

    __hash__ = hash_once  # uses key the per-GEMM caches

    @property
    def sparse(self) -> bool:
        return self.operand != "none"

    def timing_key(self, min_tokens: int, max_tokens: int) -> LayerUse:
        """This use as timing sees it when every tile holds ``min_tokens`` to ``max_tokens`` tokens: without the
        zero-slot fraction (energy only) and the note, and with only the ``rows_needed`` entries such tiles can read
        (the brackets around the range are kept, so every answer inside it is unchanged; fractions rounded to 12
        digits, below float noise). Layers that differ only where no tile looks share one simulation."""
        rows = self.rows_needed
        first = max([index for index, (size, _) in enumerate(rows) if size <= min_tokens], default=0)
        last = min([index for index, (size, _) in enumerate(rows) if size >= max_tokens], default=len(rows) - 1)
        rows = tuple((size, round(fraction, 12)) for size, fraction in rows[first:last + 1])
        return LayerUse(self.pattern, self.operand, self.compute_density, rows)

    def weight_rows_fraction(self, tokens: int) -> float:
        """Weight rows a tile of ``tokens`` tokens needs; log-linear between measured tile sizes."""
        if not self.rows_needed:
            return 1.0
        sizes = [size for size, _ in self.rows_needed]
        if tokens <= sizes[0]:
            return self.rows_needed[0][1]
        if tokens >= sizes[-1]:
            return self.rows_needed[-1][1]
        upper = bisect.bisect_left(sizes, tokens)
        (t0, f0), (t1, f1) = self.rows_needed[upper - 1], self.rows_needed[upper]
        weight = (math.log2(tokens) - math.log2(t0)) / (math.log2(t1) - math.log2(t0))
        return f0 + weight * (f1 - f0)


DENSE_USE = LayerUse(DENSE, "none", 1.0)  # a layer run dense, with no statistics (dense runs, routers, LM heads)


def _overflow_density(base: Pattern, histogram: dict[int, float]) -> float:
    """MAC slots per position when groups of ``base.m`` with ``kept`` values each take ⌈kept/n⌉ passes."""
    passes = sum(fraction * math.ceil(kept / base.n) for kept, fraction in histogram.items())
    return passes * base.n / base.m


def layer_use(
    spec: AcceleratorSpec,
    pattern: Pattern,
    stats: InputStats | None = None,
    *,
    ideal: bool = False,
    fallback_dense: bool = False,
) -> LayerUse:
    """How a layer that uses ``pattern`` runs on ``spec``; ``stats`` from its trace, or None (then ideal)."""
    zeros = stats.natural_zero_fraction if stats is not None and not ideal else 0.0
    if pattern.kind == "dense":
        return LayerUse(DENSE, "none", 1.0, zero_slot_fraction=zeros)
    if pattern not in spec.sparsity.patterns:  # unstructured patterns never are
        if not fallback_dense:
            spec.check_supports(pattern)  # raises, naming what the design supports
        return LayerUse(DENSE, "none", 1.0, zero_slot_fraction=zeros,
                        note=f"{spec.name} does not support {pattern}: runs dense")
    if stats is not None and not ideal and stats.density > DENSE_IN_TRACE:
        return LayerUse(DENSE, "none", 1.0, zero_slot_fraction=zeros, note=f"{stats.key} is dense in the trace")
    operand = spec.sparsity.operand
    density = pattern.n / pattern.m
    if operand == "weight" or stats is None or ideal:
        rows = ((1, density),) if operand == "activation" else ()
        return LayerUse(pattern, operand, density, rows)
    if spec.sparsity.hierarchical and pattern != (base := min(spec.sparsity.patterns, key=lambda p: p.m)):
        density = _overflow_density(base, stats.group_histogram(base.m))
    kept_zeros = max(0.0, zeros - (1 - stats.density)) / stats.density
    return LayerUse(pattern, operand, density, stats.rows_needed, kept_zeros)
