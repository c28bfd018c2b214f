"""``nmsim bench``: speed benchmarks, one module per area, and the one timing helper they share.

- :mod:`nmsim.bench.forward`: prune, capture, calibrate (real model forward times; needs torch),
- :mod:`nmsim.bench.simulator`: simulate (whole-model sweep, cost growth, SCALE-Sim beside nmsim),
- :mod:`nmsim.bench.pipeline_speed`: report (``nmsim run`` from committed inputs, a parameter sweep serial vs
  parallel).

Every timing goes through :func:`best_of`. This module imports nothing heavy (no torch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchResult:
    name: str
    value: float
    unit: str
    ratio: float | None = None  # to the dense forward, to the run without capture, or value / goal


def best_of(work: Callable[[], object], repeats: int, *, before: Callable[[], object] | None = None) -> float:
    """The best wall seconds of ``repeats`` runs of ``work()``, each preceded by ``before()`` (untimed), e.g.
    :func:`nmsim.sim.inference.clear_cache` so every run starts from cold caches."""
    if repeats < 1:
        raise ValueError(f"repeats {repeats}: need at least one run")
    best = math.inf
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best
