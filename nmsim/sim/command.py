"""``nmsim simulate`` as an API: one design, one model, one phase → per-GEMM table, totals, area, JSON.

With a trace the layer pattern and per-layer statistics come from it; ``ideal`` adds the idealised N/M answer
side by side (same design, same pattern, no trace), so a reader sees where the real masks change the result.
Without a trace the idealised answer is the only one. ``measure`` adds the GPU-measured 2:4 ratio per GEMM
shape when a CUDA device is present (:mod:`nmsim.sim.measured`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nmsim.errors import NmsimError
from nmsim.hw.area import design_area
from nmsim.hw.spec import AcceleratorSpec
from nmsim.io import atomic_write_text
from nmsim.patterns import parse_pattern
from nmsim.sim import measured
from nmsim.sim.report import describe, gemm_table, totals
from nmsim.sim.simulate import ModelRun, simulate_model
from nmsim.sim.trace_data import TraceData
from nmsim.sim.workload import Phase, model_shape

log = logging.getLogger(__name__)

_SHOWN = {  # terminal columns: table column → header
    "layer": "layer", "projection": "proj", "shape": "MxKxN", "pattern_used": "pattern", "cycles": "cycles",
    "time_us": "time_us", "speedup_vs_dense_same_design": "x_dense", "speedup_vs_baseline": "x_baseline",
    "utilization": "util", "stall_memory_cycles": "stall_mem", "offchip_MB": "offchip_MB",
    "roofline_cycles": "roofline", "energy_uJ": "energy_uJ",
}


@dataclass(frozen=True)
class SimulateRequest:
    hw: str  # preset name or YAML path
    model: str  # shape preset, config.json, model directory or .gguf
    phase: Phase = "prefill"
    batch: int = 1
    seq: int = 512
    traces: str | None = None
    pattern: str | None = None  # default: the trace's pattern, else the design's largest supported one
    baseline: str = "a100-dense"
    ideal: bool = False
    ideal_memory: bool = False
    measure: bool = False


@dataclass(frozen=True)
class SimulateOutput:
    runs: dict[str, ModelRun]  # "trace" and/or "ideal"
    tables: dict[str, pd.DataFrame]
    payload: dict  # everything, for JSON

    def text(self) -> str:
        """The per-GEMM table(s), the totals and the area, for the terminal."""
        meta = self.payload["run"]
        lines = [f"design {meta['design']} vs baseline {meta['baseline']} | model {meta['model']} | {meta['phase']} "
                 f"batch {meta['batch']}" + (f" seq {meta['seq']}" if meta["seq"] else "")
                 + f" | pattern {meta['pattern']}"]
        first, *others = self.tables
        table = self.tables[first]
        shown = table.assign(shape=table.m_tokens.astype(str) + "x" + table.k.astype(str) + "x"
                             + table.n.astype(str), offchip_MB=table.offchip_bytes / 1e6)
        shown = shown[list(_SHOWN)].rename(columns=_SHOWN)
        for other in others:  # the idealised answer beside the trace-driven one
            ideal = self.tables[other]
            shown[f"{other}_cycles"] = ideal.cycles
            shown[f"{other}_x_dense"] = ideal.speedup_vs_dense_same_design
            shown[f"{other}_offchip_MB"] = ideal.offchip_bytes / 1e6
        sources = "; ".join(f"{name}: {self.payload['sources'][name]}" for name in self.tables)
        lines += ["", f"per GEMM ({sources}):", shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
                  "", "totals:", pd.DataFrame(self.payload["totals"]).to_string(float_format=lambda v: f"{v:.4g}")]
        area = self.payload["area"]
        lines += ["", (f"area ({area['technology_nm']} nm, datapath only): {area['total_mm2']:.3f} mm2 "
                       f"[{area['total_low_mm2']:.3f}-{area['total_high_mm2']:.3f}], "
                       f"{area['overhead_pct']:.1f}% over dense [{area['overhead_low_pct']:.1f}-"
                       f"{area['overhead_high_pct']:.1f}%]")]
        if self.payload["measured_note"]:
            lines.append(f"measured column: {self.payload['measured_note']}")
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.payload, indent=1, sort_keys=True, default=_plain) + "\n")


def _plain(value):
    """numpy scalars from the tables as plain JSON numbers."""
    return value.item()


def _measure(run: ModelRun) -> tuple[dict, str]:
    reason = measured.unavailable_reason()
    if reason is not None:
        return {}, reason
    results = {}
    for row in run.rows:
        key = (row.gemm.m, row.gemm.k, row.gemm.n)
        if key not in results:
            results[key] = measured.measure_gemm(row.gemm).speedup
    return results, "torch semi-structured 2:4 (activation operand) vs dense fp16 on this GPU"


def run_simulate(request: SimulateRequest) -> SimulateOutput:
    """Simulate every linear GEMM of the model on the design (and the ideal answer when asked)."""
    spec = AcceleratorSpec.from_name(request.hw)
    baseline = AcceleratorSpec.from_name(request.baseline)
    shape = model_shape(request.model)
    trace = TraceData.open(request.traces) if request.traces else None
    if request.pattern is not None:
        pattern = parse_pattern(request.pattern)
        if trace is not None and pattern != trace.pattern:
            raise NmsimError(f"--pattern {pattern} disagrees with the trace {request.traces}, which is "
                             f"{trace.pattern}; leave --pattern out to use the trace's")
    elif trace is not None:
        pattern = trace.pattern
    else:
        pattern = max(spec.sparsity.patterns, key=lambda p: p.m, default=parse_pattern("dense"))
    common = {"phase": request.phase, "batch": request.batch, "seq": request.seq, "pattern": pattern,
              "baseline": baseline, "ideal_memory": request.ideal_memory}
    runs = {}
    if trace is not None:
        runs["trace"] = simulate_model(spec, shape, trace=trace, **common)
    if trace is None or request.ideal:
        runs["ideal"] = simulate_model(spec, shape, ideal=True, **common)
    measured_speedups, note = ({}, "")
    if request.measure:
        measured_speedups, note = _measure(next(iter(runs.values())))
        log.info("measured column: %s", note)
    tables = {name: gemm_table(run, measured_speedups) for name, run in runs.items()}
    area = design_area(spec)
    payload = {
        "run": describe(next(iter(runs.values()))),
        "sources": {name: (f"trace {run.trace}" if name == "trace" else "idealised N/M, no trace")
                    for name, run in runs.items()},
        "totals": {name: totals(run) for name, run in runs.items()},
        "gemms": {name: table.to_dict(orient="records") for name, table in tables.items()},
        "area": {"technology_nm": area.technology_nm, "total_mm2": area.total_mm2,
                 "total_low_mm2": area.total_low_mm2, "total_high_mm2": area.total_high_mm2,
                 "dense_mm2": area.dense_mm2, "overhead_pct": area.overhead_pct,
                 "overhead_low_pct": area.overhead_low_pct, "overhead_high_pct": area.overhead_high_pct,
                 "components": area.rows()},
        "measured_note": note,
        "ideal_memory": request.ideal_memory,
    }
    return SimulateOutput(runs, tables, payload)
