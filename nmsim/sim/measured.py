"""The measured estimator: torch's semi-structured 2:4 matmul against dense on a CUDA GPU, for one GEMM shape.

The activation is the sparse operand, as in activation pruning: IN[M × K] keeps 2 of every 4 values along K
(magnitude), is compressed with ``torch.sparse.to_sparse_semi_structured`` and multiplied by W[K × N]. Both
products run in fp16; each is timed with CUDA events as the median of ``repeats`` runs after ``warmup`` runs.
Shapes below the kernels' minimum (M and K multiples of 64 for fp16 on CUTLASS) are padded with zeros, which the
result states. Without a CUDA device this estimator is unavailable and says why; the simulator's other two
columns do not depend on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nmsim.patterns import parse_pattern
from nmsim.sparsify.masks import pattern_mask
from nmsim.sim.workload import Gemm

PAD = 64  # fp16 semi-structured operands: rows and columns in multiples of 64


@dataclass(frozen=True)
class Measurement:
    dense_ms: float
    sparse_ms: float
    padded_shape: tuple[int, int, int]  # (M, K, N) as run

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms


def unavailable_reason() -> str | None:
    """Why the measured column is empty here, or None when a CUDA device can measure it."""
    if not torch.cuda.is_available():
        return "no CUDA device: the measured 2:4 column needs an NVIDIA GPU (Ampere or newer)"
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        return f"{torch.cuda.get_device_name()} has compute capability {major}.x; sparse tensor cores need 8.0+"
    return None


def sparse_activation(m: int, k: int, *, seed: int, device: str = "cpu") -> torch.Tensor:
    """A random fp16 activation [m × k] pruned to 2:4 along K by magnitude (the operand the GPU compresses)."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(m, k, generator=generator)
    mask = pattern_mask(values.abs(), parse_pattern("2:4"))
    return (values * mask).to(device=device, dtype=torch.float16)


def _time_ms(function, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure_gemm(gemm: Gemm, *, seed: int = 0, warmup: int = 5, repeats: int = 20) -> Measurement:
    """Time dense and 2:4-activation-sparse fp16 matmul of ``gemm``'s shape; raises if no GPU can."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    from torch.sparse import to_sparse_semi_structured

    m, k, n = (math.ceil(size / PAD) * PAD for size in (gemm.m, gemm.k, gemm.n))
    activation = sparse_activation(m, k, seed=seed, device="cuda")
    generator = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(k, n, generator=generator).to(device="cuda", dtype=torch.float16)
    compressed = to_sparse_semi_structured(activation)
    dense_ms = _time_ms(lambda: torch.mm(activation, weight), warmup, repeats)
    sparse_ms = _time_ms(lambda: torch.mm(compressed, weight), warmup, repeats)
    return Measurement(dense_ms, sparse_ms, (m, k, n))


def measure_run(run) -> tuple[dict[tuple[int, int, int], float], str]:
    """The measured 2:4 speedup per distinct (M, K, N) of a model run's GEMMs, and what was measured (or why
    nothing was)."""
    reason = unavailable_reason()
    if reason is not None:
        return {}, reason
    results = {}
    for row in run.rows:
        key = (row.gemm.m, row.gemm.k, row.gemm.n)
        if key not in results:
            results[key] = measure_gemm(row.gemm).speedup
    return results, "torch semi-structured 2:4 (activation operand) vs dense fp16 on this GPU"
