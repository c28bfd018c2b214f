"""Dense cycles of a GEMM on an R×C systolic array, fold by fold, exactly as SCALE-Sim 3.0.0 counts them.

OUT[M × N] = IN[M × K] · W[K × N]. Each dataflow keeps one operand in the array and streams the other:

| dataflow | stationary | folds | cycles per fold |
| --- | --- | --- | --- |
| OS (output) | OUT tile | ⌈M/R⌉·⌈N/C⌉ | R + C + K − 2 |
| WS (weight) | W tile | ⌈K/R⌉·⌈N/C⌉ | 2R + C + M − 2 |
| IS (input) | IN tile | ⌈K/R⌉·⌈M/C⌉ | 2R + C + N − 2 |

Total = folds × cycles per fold − 1 (stall-free, SCALE-Sim's "Total Cycles" in CALC bandwidth mode). The
table was read off SCALE-Sim runs and is pinned by ``tests/sim/scalesim_golden.json`` (regenerate it with
``scripts/scalesim_golden.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nmsim.errors import NmsimError

Dataflow = Literal["os", "ws", "is"]


@dataclass(frozen=True)
class SystolicCycles:
    folds: int
    cycles_per_fold: int
    total_cycles: int
    utilization: float  # M·K·N MACs / (total cycles · R · C)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def fill_cycles(rows: int, cols: int, dataflow: Dataflow) -> int:
    """The cycles of one fold not spent streaming: R + C − 2 (OS), 2R + C − 2 (WS, IS). The one home of the fold
    formula: :func:`dense_systolic_cycles` and the mapping (:mod:`nmsim.sim.mapping`) both use it."""
    if dataflow == "os":
        return rows + cols - 2
    if dataflow in ("ws", "is"):
        return 2 * rows + cols - 2
    raise NmsimError(f"dataflow {dataflow!r}: choose os (output), ws (weight) or is (input) stationary")


def dense_systolic_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: Dataflow) -> SystolicCycles:
    """Stall-free cycles of an M×K×N GEMM on a ``rows``×``cols`` array with ``dataflow`` (os, ws or is)."""
    if min(m, k, n, rows, cols) < 1:
        raise NmsimError(f"GEMM {m}x{k}x{n} on a {rows}x{cols} array: every dimension must be at least 1")
    fill = fill_cycles(rows, cols, dataflow)
    if dataflow == "os":
        folds, per_fold = _ceil_div(m, rows) * _ceil_div(n, cols), fill + k
    elif dataflow == "ws":
        folds, per_fold = _ceil_div(k, rows) * _ceil_div(n, cols), fill + m
    else:
        folds, per_fold = _ceil_div(k, rows) * _ceil_div(m, cols), fill + n
    total = folds * per_fold - 1
    return SystolicCycles(folds, per_fold, total, m * k * n / (total * rows * cols))
