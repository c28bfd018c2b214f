"""Tables of a model run: one row per GEMM and the totals, with units in every column name.

Per GEMM: the pattern it used, simulated cycles and time at the design's clock, speedups over the same design run
dense and over the dense baseline design (time ratios, so different clocks compare), utilisation, the cycle
breakdown, bytes at every memory level, and the other estimators (roofline cycles; the measured GPU 2:4 ratio
when one was taken). Totals add the GEMMs, which run one after another. :class:`SimulateOutput` is what
``nmsim simulate`` prints and writes as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nmsim.hw.spec import AcceleratorSpec
from nmsim.io import atomic_write_text
from nmsim.patterns import metadata_share
from nmsim.sim.engine import BREAKDOWN
from nmsim.sim.simulate import GemmRow, GemmSimulation, ModelRun


def _time_us(sim: GemmSimulation, frequency_GHz: float) -> float:
    return sim.cycles / frequency_GHz / 1e3


_CAUSES = {
    "stall_memory": "the dense run waits longer on memory: the sparse one moves fewer (compressed) bytes",
    "stall_feed": "the dense run's operand feed is slower: the sparse one's tile reads fewer bytes per MAC",
    "fill": "the dense run spends more on pipeline fill",
    "drain": "the dense run's last write-backs take longer",
    "overhead": "the dense run's fixed costs are larger (a split-K reduction kernel)",
    "stall_selector": "the dense run waits on a selector",
}


def speedup_excess(dense: GemmSimulation, sparse: GemmSimulation, density: float) -> tuple[str, float]:
    """(cause, share of the excess it explains) when ``sparse`` beats ``dense`` by more than 1 / ``density`` (M/N
    at N/M), else ("", 0). The cause is the breakdown entry the dense run spends most on beyond M/N times the
    sparse run's; its share is what it accounts for of the cycles above the M/N bound."""
    bound = 1 / density
    excess = dense.cycles - sparse.cycles * bound
    if excess <= 1e-9 * dense.cycles:
        return "", 0.0
    gains = {cause: dense.breakdown[cause] - sparse.breakdown[cause] * bound for cause in _CAUSES}
    cause = max(gains, key=gains.get)
    return f"{cause}: {_CAUSES[cause]}", min(gains[cause] / excess, 1.0)


def gemm_table(run: ModelRun, measured: dict[tuple[int, int, int], float] | None = None) -> pd.DataFrame:
    """One row per GEMM of ``run``; ``measured`` maps (M, K, N) to a measured 2:4 speedup."""
    spec, base = run.spec, run.baseline
    levels = [level.name for level in spec.memory]
    rows = []
    for row in run.rows:
        gemm, sim = row.gemm, row.sparse
        time_us = _time_us(sim, spec.clock_GHz)
        record = {
            "layer": gemm.layer,
            "projection": gemm.projection,
            "m_tokens": gemm.m,
            "k": gemm.k,
            "n": gemm.n,
            "count": gemm.count,
            "pattern_used": str(row.use.pattern),
            "compute_density": row.use.compute_density,
            "cycles": sim.cycles,
            "time_us": time_us,
            "speedup_vs_dense_same_design": _time_us(row.dense, spec.clock_GHz) / time_us,
            "speedup_vs_baseline": _time_us(row.baseline, base.clock_GHz) / time_us,
            "above_m_over_n_cause": speedup_excess(row.dense, sim, row.use.compute_density)[0]
            if row.use.sparse else "",
            "utilization": sim.utilization,
            **{f"{cause}_cycles": sim.breakdown[cause] for cause in BREAKDOWN},
            **{f"{name}_bytes": level.total for name, level in zip(levels, sim.level_bytes)},
            f"{levels[0]}_activation_bytes": sim.level_bytes[0].activations,
            f"{levels[0]}_weight_bytes": sim.level_bytes[0].weights,
            "offchip_bytes": sim.level_bytes[0].total,  # the outermost level, whatever its name
            "offchip_bytes_vs_dense": sim.level_bytes[0].total / row.dense.level_bytes[0].total,
            "energy_uJ": sim.energy.total_pJ / 1e6,
            "energy_vs_dense": sim.energy.total_pJ / row.dense.energy.total_pJ,
            "roofline_cycles": sim.roofline_cycles,
            "measured_2of4_speedup": (measured or {}).get((gemm.m, gemm.k, gemm.n)),
            "statistics": run.statistics,
        }
        rows.append(record)
    return pd.DataFrame(rows)


def totals(run: ModelRun) -> dict[str, float]:
    """Whole-model sums (cycles, time, bytes per level) and the speedups they imply; a GEMM that runs ``count``
    times (MoE experts) counts that often."""
    spec, base = run.spec, run.baseline
    weights = [row.gemm.count for row in run.rows]
    weighted = any(weight != 1 for weight in weights)

    def total(values) -> float:
        return sum(weight * value for weight, value in zip(weights, values)) if weighted else sum(values)

    sparse = total(row.sparse.cycles for row in run.rows)
    dense = total(row.dense.cycles for row in run.rows)
    baseline = total(row.baseline.cycles for row in run.rows)
    time_us = sparse / spec.clock_GHz / 1e3
    result = {
        "gemms": len(run.rows),
        "cycles": sparse,
        "time_us": time_us,
        "speedup_vs_dense_same_design": dense / sparse,
        "speedup_vs_baseline": baseline / base.clock_GHz / 1e3 / time_us,
        "utilization": total(row.sparse.mac_slots for row in run.rows) / (sparse * spec.compute.dense_macs_per_cycle),
        "roofline_cycles": total(row.sparse.roofline_cycles for row in run.rows),
        "roofline_speedup_vs_dense_same_design": total(row.dense.roofline_cycles for row in run.rows)
        / total(row.sparse.roofline_cycles for row in run.rows),
        "energy_uJ": total(row.sparse.energy.total_pJ for row in run.rows) / 1e6,
        "energy_low_uJ": total(row.sparse.energy.total_low_pJ for row in run.rows) / 1e6,
        "energy_high_uJ": total(row.sparse.energy.total_high_pJ for row in run.rows) / 1e6,
        "energy_vs_dense": total(row.sparse.energy.total_pJ for row in run.rows)
        / total(row.dense.energy.total_pJ for row in run.rows),
    }
    for cause in BREAKDOWN:
        result[f"{cause}_cycles"] = total(row.sparse.breakdown[cause] for row in run.rows)
    shares = [_metadata_share(row, spec) for row in run.rows]
    for index, level in enumerate(spec.memory):
        moved = total(row.sparse.level_bytes[index].total for row in run.rows)
        result[f"{level.name}_bytes"] = moved
        parts = {"activation_value": 0.0, "weight_value": 0.0, "metadata": 0.0, "output": 0.0}
        for row, weight, (act_share, weight_share) in zip(run.rows, weights, shares):
            level_bytes = row.sparse.level_bytes[index]
            parts["activation_value"] += weight * level_bytes.activations * (1 - act_share)
            parts["weight_value"] += weight * level_bytes.weights * (1 - weight_share)
            parts["metadata"] += weight * (level_bytes.activations * act_share + level_bytes.weights * weight_share)
            parts["output"] += weight * level_bytes.outputs
        result.update({f"{level.name}_{part}_bytes": amount for part, amount in parts.items()})
        result[f"{level.name}_bytes_vs_dense"] = moved / total(row.dense.level_bytes[index].total for row in run.rows)
    outermost = spec.memory[0].name
    result["offchip_bytes"] = result[f"{outermost}_bytes"]  # the outermost level, whatever its name
    result["offchip_bytes_vs_dense"] = result[f"{outermost}_bytes_vs_dense"]
    return result


def _metadata_share(row: GemmRow, spec: AcceleratorSpec) -> tuple[float, float]:
    """(activation, weight) byte fractions that are metadata for one GEMM."""
    share = metadata_share(row.use.pattern, spec.compute.value_bits, spec.sparsity.metadata_format)
    return (share, 0.0) if row.use.operand == "activation" else (0.0, share) if row.use.operand == "weight" \
        else (0.0, 0.0)


def describe(run: ModelRun) -> dict:
    """What was simulated, for the JSON output and the table header."""
    return {
        "design": run.spec.name,
        "design_file": run.spec.source,
        "baseline": run.baseline.name,
        "model": run.shape.name,
        "phase": run.phase,
        "batch": run.batch,
        "seq": run.seq,  # prefill: prompt tokens; decode: the context the steps start from
        "devices": run.devices,
        "pattern": str(run.pattern),
        "trace": run.trace or None,
        "ideal": run.ideal,
        "statistics": run.statistics,
    }


_SHOWN = {  # terminal columns: table column → header
    "layer": "layer", "projection": "proj", "shape": "MxKxN", "pattern_used": "pattern", "cycles": "cycles",
    "time_us": "time_us", "speedup_vs_dense_same_design": "x_dense", "speedup_vs_baseline": "x_baseline",
    "utilization": "util", "stall_memory_cycles": "stall_mem", "offchip_MB": "offchip_MB",
    "roofline_cycles": "roofline", "energy_uJ": "energy_uJ",
}


@dataclass(frozen=True)
class SimulateOutput:
    runs: dict[str, ModelRun]  # "trace" and/or "ideal": the linear GEMMs of the phase asked for
    tables: dict[str, pd.DataFrame]
    payload: dict  # everything, for JSON
    inference: dict = field(default_factory=dict)  # "trace"/"ideal" → InferenceRun (empty with --linear-only)

    def text(self, *, per_layer: bool = False, gemms: bool | None = None) -> str:
        """The end-to-end summary, the op classes and the layers (collapsed, or every one with ``per_layer``), the
        per-GEMM table (always with --linear-only, else when ``gemms``), the totals and the area."""
        from nmsim.sim.inference_tables import class_table, layer_groups, op_table, summary_lines

        meta = self.payload["run"]
        lines = [f"design {meta['design']} vs baseline {meta['baseline']} | model {meta['model']} | {meta['phase']} "
                 f"batch {meta['batch']} seq {meta['seq']}" + (f" | {meta['devices']} devices" if meta["devices"] > 1
                                                               else "") + f" | pattern {meta['pattern']}",
                 "mask statistics: " + "; ".join(
                     self.payload["sources"][name] if name == "trace" else f"{name}: {self.payload['sources'][name]}"
                     for name in self.tables)]
        number = {"float_format": lambda v: f"{v:.4g}", "index": False}
        for name, run in self.inference.items():
            step = run.prefill if meta["phase"] == "prefill" else run.decode
            lines += ["", f"[{name}: {self.payload['sources'][name]}]", *summary_lines(run), "",
                      "time per op class (µs; KV-bound attention time under kv_cache):",
                      class_table(run).to_string(**number), "",
                      f"{meta['phase']} ops " + ("per layer:" if per_layer else "(alike layers collapsed; --per-layer "
                                                                               "for every layer):"),
                      (op_table(step) if per_layer else layer_groups(step, run)).to_string(**number)]
        if gemms is None:
            gemms = not self.inference
        if gemms:
            lines += self._gemm_lines()
        lines += ["", "linear GEMMs, totals:",
                  pd.DataFrame(self.payload["totals"]).to_string(float_format=lambda v: f"{v:.4g}")]
        area = self.payload["area"]
        lines += ["", f"area at {area['technology_nm']} nm (over the same design without sparsity):"]
        for level, summary in area.get("levels", {}).items():
            lines.append(f"  {level:8s} {summary['area_mm2']:10.3f} mm2, +{summary['overhead_pct']:.2f}% "
                         f"[{summary['overhead_low_pct']:.2f}-{summary['overhead_high_pct']:.2f}%]")
        lines += [f"  warning: {warning}" for warning in area.get("warnings", [])]
        band = self.payload.get("sensitivity_band")
        if band:
            main = self.payload["totals"][next(iter(self.tables))]
            lines.append(f"sensitivity band ({band['statistics']} instead): speedup over dense "
                         f"{band['totals']['speedup_vs_dense_same_design']:.3f}x (vs "
                         f"{main['speedup_vs_dense_same_design']:.3f}x), off-chip bytes over dense "
                         f"{band['totals']['offchip_bytes_vs_dense']:.3f} (vs {main['offchip_bytes_vs_dense']:.3f})")
        if self.payload["measured_note"]:
            lines.append(f"measured column: {self.payload['measured_note']}")
        return "\n".join(lines)

    def _gemm_lines(self) -> list[str]:
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
        return ["", f"per GEMM ({sources}):", shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")]

    def write_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.payload, indent=1, sort_keys=True, default=_plain) + "\n")


def _plain(value):
    """numpy scalars from the tables as plain JSON numbers."""
    return value.item()
