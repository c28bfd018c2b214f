"""``nmsim bench report``: the main job's report from committed inputs, and a parameter sweep serial vs parallel.

Times are the best of ``repeats`` cold runs (the GEMM cache cleared before each); the parallel sweep is compared
with the serial one in the same run, so the ratio holds on a noisy machine.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from nmsim.bench import BenchResult
from nmsim.pipeline import RunRequest, run as build_report
from nmsim.sim.param_sweep import SweepPlan, run_sweep
from nmsim.sim.simulate import clear_cache

GOAL_SECONDS = 120  # the goal for `nmsim run` from committed traces on 2 cores
SWEEP = SweepPlan(source="benchmark", design="act-8of16", model="smollm2-135m",
                  parameters=(("memory[0].bandwidth_GBps", (800.0, 1555.0, 3110.0, 6220.0)),
                              ("sparsity.selector_groups_per_cycle", (4, 8, 16, 32)),
                              ("frequency_GHz", (0.7, 1.41, 2.0, 2.8))),
                  patterns=None, phases=("prefill", "decode"), batch_sizes=(1, 4))


def _best(work, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        clear_cache()
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def run_report_benchmark(repeats: int = 2) -> list[BenchResult]:
    with tempfile.TemporaryDirectory() as tmp:
        report = _best(lambda: build_report(RunRequest(out_root=Path(tmp), command="nmsim bench report")), repeats)
    workers = os.cpu_count() or 1
    serial = _best(lambda: run_sweep(SWEEP, workers=1), repeats)
    parallel = _best(lambda: run_sweep(SWEEP, workers=workers), repeats)
    points = len(SWEEP.points())
    return [  # spawned workers import nmsim first (a few seconds): small sweeps run faster in one process
        BenchResult(f"report from committed traces: every preset, tables + 8 figures + md/html (goal < "
                    f"{GOAL_SECONDS} s)", report, "s", report / GOAL_SECONDS),
        BenchResult(f"sweep act-8of16, {points} points x prefill/decode x 2 batch sizes, 1 process", serial, "s"),
        BenchResult(f"  same sweep, {workers} local processes (ratio: serial / parallel)", parallel, "s",
                    serial / parallel),
    ]
