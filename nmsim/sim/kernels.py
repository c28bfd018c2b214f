"""Closed-form time of the non-GEMM kernels of an inference step: vector kernels, attention, all-reduce.

A kernel is described by its work (:class:`KernelWork`): FLOPs on the tensor cores (attention's matmuls, dense),
FLOPs and special functions (exp, rsqrt, tanh) on the design's vector unit, and bytes through the outermost memory
level. Its time on a design is

    fixed + max(compute, memory)
    compute = wave factor × (tensor + vector)   when the vector work sits between the matmuls (FlashAttention's
                                                 online softmax), else wave factor × max(tensor, vector)
    vector  = max(vector FLOPs ÷ (units × FLOPs per cycle), special ÷ (units × specials per cycle))
    memory  = bytes ÷ achievable bandwidth + the level's latency

with the tensor rate the design's dense MACs per cycle × 2, the wave factor ⌈blocks ÷ cores⌉ ÷ (blocks ÷ cores)
for a kernel of few blocks, and ``fixed`` the design's per-kernel cost (``vector.kernel_fixed_us``). These are
the mechanisms of LLMCompass's vector-op model (a per-core vector unit against memory bandwidth, a launch cost); the
validation against measured A100 softmax and layer norm is in :mod:`nmsim.sim.validation`.

A ring all-reduce over N devices moves 2(N−1)/N of the message through each device's link in 2(N−1) steps, each
paying the link latency (:func:`allreduce_cycles`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec


@dataclass(frozen=True)
class KernelWork:
    """What one kernel does; bytes are through the outermost memory level."""

    tensor_flops: float = 0.0  # matmul FLOPs on the tensor cores / array, dense
    vector_flops: float = 0.0  # elementwise and reduction FLOPs on the vector unit
    special_ops: float = 0.0  # exp, rsqrt, tanh on the special-function units
    bytes_read: float = 0.0
    bytes_written: float = 0.0
    blocks: int = 0  # independent thread blocks (wave quantization over the cores); 0: many
    serial_vector: bool = False  # the vector work does not overlap the matmuls (FlashAttention's softmax)
    kernels: int = 1  # launches (each pays the fixed cost); 0: fused into another kernel

    @property
    def bytes_total(self) -> float:
        return self.bytes_read + self.bytes_written

    def scaled(self, factor: float) -> KernelWork:
        """The same kernel doing ``factor`` times the work (same launches and blocks)."""
        return KernelWork(self.tensor_flops * factor, self.vector_flops * factor, self.special_ops * factor,
                          self.bytes_read * factor, self.bytes_written * factor, self.blocks, self.serial_vector,
                          self.kernels)


@dataclass(frozen=True)
class KernelTime:
    """Cycles of one kernel at the design's clock: ``cycles`` = ``fixed_cycles`` + max(compute, memory)."""

    cycles: float
    compute_cycles: float
    memory_cycles: float
    fixed_cycles: float

    @property
    def bound(self) -> str:
        return "compute" if self.compute_cycles >= self.memory_cycles else "memory"


def require_vector_unit(spec: AcceleratorSpec) -> None:
    """Raise unless ``spec`` says what runs its non-GEMM work."""
    if spec.vector is None:
        raise NmsimError(
            f"design {spec.name!r} ({spec.source}) has no vector unit, so its non-GEMM work (norms, activations, "
            "softmax, rotary, residual adds) cannot be timed; add `vector: {units, flops_per_cycle_per_unit, "
            "special_ops_per_cycle_per_unit, kernel_fixed_us}` (docs/hw_config.md), or simulate the linear layers "
            "alone with --linear-only")


def fixed_cycles(spec: AcceleratorSpec, kernels: int = 1) -> float:
    """The per-kernel fixed cost of ``kernels`` launches, in cycles."""
    return kernels * spec.vector.kernel_fixed_us * 1e3 * spec.clock_GHz


def kernel_time(work: KernelWork, spec: AcceleratorSpec) -> KernelTime:
    """The time of ``work`` on ``spec`` (which needs a vector unit)."""
    require_vector_unit(spec)
    vector = spec.vector
    tensor = work.tensor_flops / (2 * spec.compute.dense_macs_per_cycle)
    vec = max(work.vector_flops / (vector.units * vector.flops_per_cycle_per_unit),
              work.special_ops / (vector.units * vector.special_ops_per_cycle_per_unit))
    compute = tensor + vec if work.serial_vector else max(tensor, vec)
    cores = spec.compute.cores or spec.compute.units
    if work.blocks and compute:
        compute *= math.ceil(work.blocks / cores) / (work.blocks / cores)
    outer = spec.memory[0]
    memory = 0.0
    if work.bytes_total:
        memory = work.bytes_total / outer.bytes_per_cycle(spec.clock_GHz) + outer.latency_ns * spec.clock_GHz
    fixed = fixed_cycles(spec, work.kernels)
    return KernelTime(fixed + max(compute, memory), compute, memory, fixed)


def softmax_passes(row_elements: int, single_pass_max: int) -> int:
    """Reads of each input row: 1 when the row fits the single-pass kernel, else 3 (max, sum, normalise)."""
    return 1 if row_elements <= single_pass_max else 3


def _link(spec: AcceleratorSpec):
    link = spec.interconnect
    if link is None:
        raise NmsimError(f"design {spec.name!r} ({spec.source}) describes no interconnect, so it cannot run tensor "
                         "parallel; add `interconnect: {bandwidth_GBps, latency_ns}` (per direction)")
    return link


def _ring_cycles(link_bytes: float, steps: int, spec: AcceleratorSpec) -> float:
    """Cycles at ``spec``'s clock of ``steps`` ring steps moving ``link_bytes`` through each device's link."""
    link = _link(spec)
    seconds = link_bytes / (link.bandwidth_GBps * 1e9) + steps * link.latency_ns * 1e-9
    return seconds * spec.clock_GHz * 1e9


def allreduce_cycles(message_bytes: float, devices: int, spec: AcceleratorSpec) -> float:
    """Ring all-reduce of ``message_bytes`` per device over ``devices``: 2(N−1)/N of the bytes through the link,
    2(N−1) steps of its latency; cycles at ``spec``'s clock (0 on one device)."""
    if devices <= 1:
        return 0.0
    return _ring_cycles(2 * (devices - 1) / devices * message_bytes, 2 * (devices - 1), spec)


def allgather_cycles(share_bytes: float, devices: int, spec: AcceleratorSpec) -> float:
    """Ring all-gather of ``share_bytes`` from each of ``devices``: the other N−1 shares through the link, N−1
    steps of its latency; cycles at ``spec``'s clock (0 on one device)."""
    if devices <= 1:
        return 0.0
    return _ring_cycles((devices - 1) * share_bytes, devices - 1, spec)


# --- the work of the vector kernels (FLOPs per element are the arithmetic of a straightforward kernel) ----------
SOFTMAX_FLOPS = 5  # per element: max compare, subtract, sum, divide, scale/mask
NORM_FLOPS = {"rmsnorm": 4, "layernorm": 7}  # per element: RMS: square, sum, scale, weight; LN adds mean, centre, bias


def softmax_work(rows: float, row_elements: int, value_bytes: float, single_pass_max: int) -> KernelWork:
    """Softmax over the last dimension of ``rows`` × ``row_elements`` values: one exp per element; the input is read
    once per pass (:func:`softmax_passes`), the output written once."""
    elements = rows * row_elements
    passes = softmax_passes(row_elements, single_pass_max)
    return KernelWork(vector_flops=SOFTMAX_FLOPS * elements, special_ops=elements,
                      bytes_read=passes * elements * value_bytes, bytes_written=elements * value_bytes)


def norm_work(rows: float, width: int, value_bytes: float, kind: str, *, residual: bool = False) -> KernelWork:
    """RMSNorm or LayerNorm of ``rows`` × ``width`` values (one rsqrt per row; the weight, and LayerNorm's bias, read
    once); with ``residual`` the kernel first adds the residual stream and writes the sum back (fused add + norm)."""
    if kind not in NORM_FLOPS:
        raise NmsimError(f"norm {kind!r}: choose {' or '.join(NORM_FLOPS)}")
    elements = rows * width
    parameters = width * (2 if kind == "layernorm" else 1)
    streams = 2 if residual else 1  # the input, and the residual added to it
    return KernelWork(vector_flops=(NORM_FLOPS[kind] + (1 if residual else 0)) * elements, special_ops=rows,
                      bytes_read=(streams * elements + parameters) * value_bytes,
                      bytes_written=streams * elements * value_bytes)
