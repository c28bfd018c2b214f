"""Roofline estimate of one GEMM on one design: max(compute time, outermost-memory time), in cycles.

The first of the three estimators (roofline, simulated, measured). Bytes moved from the outermost memory level:

- activations IN[M × K]: dense values, or — when the design prunes activations — N kept values per group of M
  plus the design's metadata per group;
- weights W[K × N]: dense, or N:M-compressed with metadata when the design prunes weights; scaled by
  ``weight_rows_fraction``, the share of weight rows (K indices) the tile's activation masks need (from the
  trace statistics: 1.0 for prefill-sized tiles, about N/M for a single decode token);
- outputs OUT[M × N]: dense values.

Compute: dense MACs, times N/M when the design runs the pattern sparse (the ideal 2x of a 50 % pattern).
"""

from __future__ import annotations

from dataclasses import dataclass

from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import Pattern, compressed_row_bytes
from nmsim.sim.workload import Gemm


@dataclass(frozen=True)
class RooflineCost:
    macs: int  # dense MACs of the GEMM
    effective_macs: float  # MACs the datapath performs
    activation_bytes: float
    weight_bytes: float
    output_bytes: float
    compute_cycles: float
    memory_cycles: float

    @property
    def bytes_total(self) -> float:
        return self.activation_bytes + self.weight_bytes + self.output_bytes

    @property
    def cycles(self) -> float:
        return max(self.compute_cycles, self.memory_cycles)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_cycles >= self.memory_cycles else "memory"


def roofline(
    gemm: Gemm, spec: AcceleratorSpec, pattern: Pattern, *, weight_rows_fraction: float = 1.0
) -> RooflineCost:
    """Roofline cycles of ``gemm`` when its layer uses ``pattern`` on ``spec``'s sparse operand."""
    spec.check_supports(pattern)
    if not 0.0 <= weight_rows_fraction <= 1.0:
        raise ValueError(f"weight_rows_fraction {weight_rows_fraction} must lie in [0, 1]")
    value_bits = spec.compute.value_bits
    sparse = pattern.kind == "nm" and pattern.n < pattern.m
    operand = spec.sparsity.operand if sparse else "none"
    activation_bytes = gemm.m * gemm.k * value_bits / 8
    weight_bytes = gemm.k * gemm.n * value_bits / 8
    if operand == "activation":
        activation_bytes = gemm.m * compressed_row_bytes(gemm.k, pattern, value_bits, spec.sparsity.metadata_format)
    elif operand == "weight":
        weight_bytes = gemm.n * compressed_row_bytes(gemm.k, pattern, value_bits, spec.sparsity.metadata_format)
    weight_bytes *= weight_rows_fraction
    output_bytes = gemm.m * gemm.n * value_bits / 8
    effective = gemm.macs * (pattern.density if operand != "none" else 1.0)
    outer = spec.memory[0]
    bytes_per_cycle = outer.peak_bytes_per_cycle(spec.clock_GHz)
    return RooflineCost(
        macs=gemm.macs,
        effective_macs=effective,
        activation_bytes=activation_bytes,
        weight_bytes=weight_bytes,
        output_bytes=output_bytes,
        compute_cycles=effective / spec.compute.dense_macs_per_cycle,
        memory_cycles=(activation_bytes + weight_bytes + output_bytes) / bytes_per_cycle,
    )
