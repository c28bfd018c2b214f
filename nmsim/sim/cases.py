"""Simulation cases and the one runner: every (design, pattern, phase, batch, sequence) a job needs, simulated once.

A :class:`SimCase` names one whole-model run. Whoever needs numbers (the report's tables, the sensitivity analysis,
a parameter sweep, a benchmark) first says which cases it needs; :func:`simulate_cases` runs each distinct case once
and returns a :class:`SimulationResults`: one row of whole-model totals per case (``totals``) and, for cases that ask
for it, one row per GEMM (``gemms``). Readers select rows by the case's fields; nothing downstream simulates.

Each pattern reads the trace given for it (the committed trace of the model for that pattern, method magnitude
without mitigation), else runs the idealised N/M answer. A case whose design does not support its pattern runs
dense and its row says so (``runs_sparse`` False, ``note``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nmsim.hw.spec import AcceleratorSpec
from nmsim.parallel import available_cores, fork_map
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import ModelShape
from nmsim.sim.inference import DEFAULT_GENERATE, InferenceRun, capacity_message, simulate_inference
from nmsim.sim.results import gemm_table, totals
from nmsim.sim.simulate import ModelRun, simulate_model
from nmsim.sim.timing import Timing, load_timing
from nmsim.sim.workload import Phase
from nmsim.traces.reader import TraceData

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SimCase:
    """One whole-model run: ``design`` running ``pattern`` in ``phase`` at ``batch`` sequences of ``seq`` tokens
    (prefill), or ``generate`` decode steps from context ``seq`` (decode: the linear GEMMs do not depend on it,
    attention and the KV cache do)."""

    design: AcceleratorSpec
    pattern: Pattern
    phase: Phase
    batch: int
    seq: int = 512  # prefill: prompt tokens; decode: the context the averaged steps start from
    per_gemm: bool = False  # also keep one row per GEMM
    devices: int = 1  # tensor-parallel degree
    generate: int = DEFAULT_GENERATE  # decode steps averaged

    @property
    def key(self) -> tuple:
        """What makes two cases the same run (``per_gemm`` is only what is kept of it)."""
        return (self.design, self.pattern, self.phase, self.batch, self.seq, self.devices,
                self.generate if self.phase == "decode" else None)


@dataclass(frozen=True)
class SimulationResults:
    """One row of ``totals`` per distinct case (case columns, ``runs_sparse``, ``trace``, the totals of
    :func:`nmsim.sim.results.totals`, ``note``) and, in ``gemms``, the per-GEMM rows of the cases that asked for
    them (column ``case``: the row of ``totals`` they belong to). Look rows up with the case objects that asked for
    them: two cases with equal keys share one row."""

    totals: pd.DataFrame
    gemms: pd.DataFrame
    index: dict[tuple, int]  # case key → row of totals

    def totals_of(self, case: SimCase) -> pd.Series:
        """The whole-model totals of ``case``; KeyError if it was not simulated."""
        return self.totals.iloc[self.index[case.key]]

    def gemms_of(self, case: SimCase) -> pd.DataFrame:
        """The per-GEMM rows of ``case`` (it must have been run with ``per_gemm``)."""
        rows = self.gemms[self.gemms["case"] == self.index[case.key]]
        if rows.empty:
            raise KeyError(f"no per-GEMM rows of {case.design.name} {case.pattern} {case.phase} batch {case.batch}")
        return rows.drop(columns="case").reset_index(drop=True)

    def table_of(self, cases) -> pd.DataFrame:
        """The totals rows of ``cases``, in their order."""
        return self.totals.iloc[[self.index[case.key] for case in cases]].reset_index(drop=True)


def case_row(case: SimCase, run: ModelRun, inference: InferenceRun | None = None) -> dict:
    """The totals row of one case: the linear GEMMs' totals and, with ``inference``, the end-to-end step (its time,
    tokens/s, µs per op class, speedups end to end, memory; a case that does not fit its device says so)."""
    notes = sorted({row.use.note for row in run.rows if row.use.note})
    row = {"design": case.design.name, "pattern": str(case.pattern), "phase": case.phase, "batch": case.batch,
           "seq_tokens": case.seq, "devices": case.devices,
           "runs_sparse": any(row.use.sparse for row in run.rows),
           "trace": Path(run.trace).name if run.trace else "ideal", "statistics": run.statistics,
           **totals(run)}
    if inference is not None:
        row.update(inference.phase_summary(case.phase))
        row.update(inference.memory_summary())
        if not inference.memory.fits:
            notes.append(capacity_message(inference))
    row["note"] = "; ".join(notes)
    return row


def _buckets(cases: list[SimCase], workers: int | None) -> list[list[int]]:
    """Case numbers split into one bucket per worker, the cases of one design kept together (they share its dense
    GEMMs in the cache); the largest groups go first to the emptiest bucket."""
    groups: dict[AcceleratorSpec, list[int]] = {}
    for number, case in enumerate(cases):
        groups.setdefault(case.design, []).append(number)
    buckets: list[list[int]] = [[] for _ in range(max(1, min(workers or available_cores(), len(groups))))]
    for numbers in sorted(groups.values(), key=len, reverse=True):
        min(buckets, key=len).extend(numbers)
    return [bucket for bucket in buckets if bucket]


def simulate_cases(cases, shape: ModelShape, *, baseline: AcceleratorSpec,
                   traces: dict[Pattern, TraceData | None], ideal: bool = False,
                   timing: Timing | None = None, workers: int | None = None,
                   end_to_end: bool | None = None) -> SimulationResults:
    """Run each distinct case of ``cases`` once; ``traces`` maps each pattern to its trace (None: the idealised
    answer). ``ideal`` runs every case idealised even where a trace exists. ``end_to_end`` (default: when every
    design and the baseline have a vector unit) adds each case's whole step (:mod:`nmsim.sim.inference`). The
    cases run on ``workers`` forked processes (default: every available core; :mod:`nmsim.parallel`); the rows come
    back in first-seen order."""
    timing = timing or load_timing()
    cases = list(cases)
    if end_to_end is None:
        end_to_end = baseline.vector is not None and all(case.design.vector is not None for case in cases)
    distinct: dict[tuple, SimCase] = {}
    for case in cases:
        seen = distinct.get(case.key)
        if seen is None:
            distinct[case.key] = case
        elif case.per_gemm and not seen.per_gemm:
            distinct[case.key] = dataclasses.replace(seen, per_gemm=True)
    ordered = list(distinct.values())

    def run_bucket(numbers: list[int]) -> list[tuple[int, dict, pd.DataFrame | None]]:
        out = []
        for number in numbers:
            case = ordered[number]
            common = {"pattern": case.pattern, "baseline": baseline, "trace": traces.get(case.pattern),
                      "ideal": ideal, "fallback_dense": True, "timing": timing, "devices": case.devices}
            inference = None
            if end_to_end:
                inference = simulate_inference(case.design, shape, batch=case.batch, prompt=case.seq,
                                               generate=case.generate, phases=(case.phase,), **common)
                run = inference.linear[case.phase]
            else:
                run = simulate_model(case.design, shape, phase=case.phase, batch=case.batch, seq=case.seq, **common)
            out.append((number, case_row(case, run, inference),
                        gemm_table(run).assign(case=number) if case.per_gemm else None))
        return out

    done = sorted(result for bucket in fork_map(run_bucket, _buckets(ordered, workers)) for result in bucket)
    rows = [row for _, row, _ in done]
    gemm_frames = [frame for _, _, frame in done if frame is not None]
    log.debug("simulated %d distinct cases of %d asked for", len(distinct), len(cases))
    gemms = pd.concat(gemm_frames, ignore_index=True) if gemm_frames else pd.DataFrame(columns=["case"])
    table = pd.DataFrame(rows)
    return SimulationResults(table, gemms, {key: i for i, key in enumerate(distinct)})


def grid_cases(designs: list[AcceleratorSpec], patterns, *, phases=("prefill", "decode"), batches=(1,),
               seq: int = 512, supported_only: bool = False) -> list[SimCase]:
    """Every design × pattern × phase × batch size; with ``supported_only`` a design runs dense and the patterns it
    supports only."""
    patterns = [parse_pattern(p) for p in patterns]
    cases = []
    for spec in designs:
        for pattern in patterns:
            if supported_only and pattern.kind != "dense" and pattern not in spec.sparsity.patterns:
                continue
            cases += [SimCase(spec, pattern, phase, batch, seq) for phase in phases for batch in batches]
    return cases


def sweep(designs: list[AcceleratorSpec], shape: ModelShape, *, baseline: AcceleratorSpec, patterns,
          phases=("prefill", "decode"), batches=(1,), seq: int = 512, traces: dict[Pattern, TraceData | None],
          supported_only: bool = False, ideal: bool = False, timing: Timing | None = None) -> pd.DataFrame:
    """Whole-model totals for every design × pattern × phase × batch size (:func:`grid_cases` run once each)."""
    cases = grid_cases(designs, patterns, phases=phases, batches=batches, seq=seq, supported_only=supported_only)
    return simulate_cases(cases, shape, baseline=baseline, traces=traces, ideal=ideal, timing=timing).totals
