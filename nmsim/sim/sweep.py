"""Sweeps: designs × patterns × phases × batch sizes for one model, one row of whole-model totals each.

Each pattern reads the committed trace of the model for that pattern when there is one (``traces/``, method
magnitude without mitigation), else runs the idealised N/M answer. With ``supported_only`` a design runs dense and
the patterns it supports; otherwise it runs a pattern it does not support dense, and the row says so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import parse_pattern
from nmsim.sim.report import totals
from nmsim.sim.simulate import simulate_model
from nmsim.sim.timing import Timing, load_timing
from nmsim.sim.trace_data import TraceData
from nmsim.sim.workload import ModelShape, Phase
from nmsim.traces.build import method_config, trace_name

SWEEP_PATTERNS = ("dense", "2:4", "4:8", "8:16", "16:32", "unstructured:0.5")
TRACE_ROOT = Path(__file__).resolve().parents[2] / "traces"


def committed_trace(pattern: str, model: str, root: Path = TRACE_ROOT) -> TraceData | None:
    """The committed trace of ``model`` pruned to ``pattern`` (magnitude, no mitigation), if there is one."""
    directory = root / trace_name(method_config(pattern), model)
    return TraceData.open(directory) if (directory / "stats").is_dir() else None


def committed_traces(patterns: tuple[str, ...], model: str, root: Path | None = TRACE_ROOT
                     ) -> dict[str, TraceData | None]:
    """``committed_trace`` for each pattern (None everywhere when ``root`` is None: the idealised answer)."""
    return {p: committed_trace(p, model, root) if root else None for p in patterns}


def design_patterns(spec: AcceleratorSpec, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The entries of ``patterns`` that ``spec`` runs sparse, and dense, in the order given."""
    supported = set(spec.sparsity.patterns)
    return tuple(p for p in patterns if p == "dense" or parse_pattern(p) in supported)


def sweep(
    designs: list[AcceleratorSpec],
    shape: ModelShape,
    *,
    baseline: AcceleratorSpec,
    patterns: tuple[str, ...] = SWEEP_PATTERNS,
    phases: tuple[Phase, ...] = ("prefill", "decode"),
    batches: tuple[int, ...] = (1,),
    seq: int = 512,
    trace_root: Path | None = TRACE_ROOT,
    traces: dict[str, TraceData | None] | None = None,
    supported_only: bool = False,
    ideal: bool = False,
    timing: Timing | None = None,
) -> pd.DataFrame:
    """Whole-model totals for every design × pattern × phase × batch size (``traces`` overrides ``trace_root``)."""
    timing = timing or load_timing()
    traces = traces if traces is not None else committed_traces(patterns, shape.name, trace_root)
    rows = []
    for spec in designs:
        for pattern_text in design_patterns(spec, patterns) if supported_only else patterns:
            pattern = parse_pattern(pattern_text)
            for phase in phases:
                for batch in batches:
                    run = simulate_model(spec, shape, phase=phase, batch=batch, seq=seq, pattern=pattern,
                                         baseline=baseline, trace=traces.get(pattern_text), ideal=ideal,
                                         fallback_dense=True, timing=timing)
                    notes = sorted({row.use.note for row in run.rows if row.use.note})
                    rows.append({"design": spec.name, "pattern": pattern_text, "phase": phase, "batch": batch,
                                 "seq_tokens": seq if phase == "prefill" else None,
                                 "runs_sparse": any(row.use.sparse for row in run.rows),
                                 "trace": Path(run.trace).name if run.trace else "ideal",
                                 **totals(run), "note": "; ".join(notes)})
    return pd.DataFrame(rows)
