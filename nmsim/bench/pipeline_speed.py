"""``nmsim bench report``: the main job's report from committed inputs, and a parameter sweep serial vs parallel.

Times are the best of ``repeats`` cold runs (the GEMM cache cleared before each); the parallel sweep is compared
with the serial one in the same run, so the ratio holds on a noisy machine.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from nmsim.registry import DEFAULT_MODEL
from nmsim.bench import BenchResult, best_of
from nmsim.pipeline import RunRequest, run as build_report
from nmsim.sim.param_sweep import SweepPlan, run_sweep
from nmsim.sim.inference import clear_cache

GOAL_SECONDS = 30  # the goal for `nmsim run` from committed inputs (with the target models) on 2 cores
SWEEP = SweepPlan(source="benchmark", design="act-8of16", model=DEFAULT_MODEL,
                  parameters=(("memory[0].bandwidth_GBps", (800.0, 1555.0, 3110.0, 6220.0)),
                              ("sparsity.selector_groups_per_cycle", (4, 8, 16, 32)),
                              ("frequency_GHz", (0.7, 1.41, 2.0, 2.8))),
                  patterns=None, phases=("prefill", "decode"), batch_sizes=(1, 4))
SWEEP_VALUES = 4  # values per swept parameter: 4 x 4 x 4 = 64 points


def sweep_plan(values: int = SWEEP_VALUES) -> SweepPlan:
    """:data:`SWEEP` with the first ``values`` values of each parameter (``values``³ points)."""
    if values < 1:
        raise ValueError(f"sweep values {values}: need at least one")
    return dataclasses.replace(SWEEP, parameters=tuple((key, options[:values]) for key, options in SWEEP.parameters))


def run_report_benchmark(repeats: int = 2, *, designs: tuple[str, ...] = (), patterns: tuple | None = None,
                         sweep_values: int = SWEEP_VALUES) -> list[BenchResult]:
    """``nmsim run`` from the committed tables and traces for ``designs`` (() = every preset) and ``patterns``
    (None = the report's, :data:`~nmsim.registry.REPORT_PATTERNS`), and the sweep of :func:`sweep_plan`
    (``sweep_values``) in one process and in one local process per core."""
    designs = tuple(designs)
    chosen = {"patterns": tuple(patterns)} if patterns else {}
    with tempfile.TemporaryDirectory() as tmp:
        request = RunRequest(designs=designs, out_root=Path(tmp), command="nmsim bench report", **chosen)
        report = best_of(lambda: build_report(request), repeats, before=clear_cache)
    plan = sweep_plan(sweep_values)
    workers = os.cpu_count() or 1
    serial = best_of(lambda: run_sweep(plan, workers=1), repeats, before=clear_cache)
    parallel = best_of(lambda: run_sweep(plan, workers=workers), repeats, before=clear_cache)
    points = len(plan.points())
    which = ", ".join(designs) if designs else "every preset"
    if patterns:
        which += f"; patterns {', '.join(map(str, request.patterns))}"
    return [  # spawned workers import nmsim first (a few seconds): small sweeps run faster in one process
        BenchResult(f"report from committed inputs: {which}, {len(request.target_models)} target models end to end, "
                    f"tables + figures + md/html (goal ≤ {GOAL_SECONDS} s)", report, "s", report / GOAL_SECONDS),
        BenchResult(f"sweep {plan.design}, {points} points x {'/'.join(plan.phases)} x {len(plan.batch_sizes)} "
                    f"batch sizes, 1 process", serial, "s"),
        BenchResult(f"  same sweep, {workers} local processes (ratio: serial / parallel)", parallel, "s",
                    serial / parallel),
    ]
