"""The trade-off report's tidy tables, built from plain inputs: accuracy rows, designs, trace statistics and the
simulation results (:class:`nmsim.sim.cases.SimulationResults`). Nothing here simulates: each table that needs
simulated numbers has a ``*_cases`` function saying which cases it reads, and the pipeline's simulation stage runs
them all once.

Every function returns a DataFrame whose column names carry their unit; the report writer saves them as CSV and
Parquet. Speedups are time ratios over the same design run dense (same clock and units), so a design's sparse
support is judged against what the same silicon does without it. Patterns are :class:`~nmsim.patterns.Pattern`
values inside and their canonical spelling (``8:16``) in every table.

- :func:`best_accuracy`: per operand and pattern, the method with the lowest perplexity.
- :func:`performance`: designs × the patterns each supports × prefill/decode × batch sizes.
- :func:`tradeoff`: one row per design and pattern: accuracy beside speedup, area, bytes and energy, with Pareto
  flags.
- :func:`area_components`, :func:`io_formats`, :func:`decode_fetch`, :func:`layer_speedups`: the figures' data.
- :func:`inputs`: every input file with its checksum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pandas as pd

from nmsim import __version__
from nmsim.accuracy.table import KEY_COLUMNS, NOT_APPLICABLE, read_rows
from nmsim.errors import NmsimError
from nmsim.hw.area import CALIBRATION_FILE, design_area
from nmsim.hw.die import AREA_LEVELS, design_area_levels
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import METADATA_FORMATS, Pattern
from nmsim.registry import DECODE_BATCHES, PREFILL_BATCHES, PREFILL_SEQ_TOKENS, ModelShape
from nmsim.report.pareto import pareto_front
from nmsim.sim.cases import SimCase, SimulationResults, grid_cases
from nmsim.sim.timing import TIMING_FILE
from nmsim.traces.reader import TraceData

SEQ_TOKENS = PREFILL_SEQ_TOKENS


def load_accuracy(paths: list[Path]) -> pd.DataFrame:
    """Rows of the accuracy tables at ``paths`` (``nmsim eval`` / ``nmsim run`` CSVs); a row in an earlier table
    wins over the same method and token count in a later one. Adds ``source`` (the file name)."""
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise NmsimError(f"accuracy table {path}: not found; run `nmsim run --recompute` (or `nmsim eval`) to "
                             "make it, or leave it out")
        rows = read_rows(Path(path))
        if not rows:
            raise NmsimError(f"accuracy table {path}: no finished rows")
        frames.append(pd.DataFrame(rows).assign(source=Path(path).name))
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates(subset=KEY_COLUMNS, keep="first").reset_index(drop=True)


def best_accuracy(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """Dense and, per operand (activation, weight) and pattern, the lowest-perplexity method pruning every linear
    layer (targets ``all``), at the token count most rows share. Columns: operand, pattern, density, method,
    perplexity, delta_ppl_vs_dense, delta_pct_vs_dense, tokens_evaluated, source."""
    rows = table[(table.model == model) & table.targets.isin(["all", NOT_APPLICABLE])]
    if rows.empty:
        raise NmsimError(f"the accuracy tables have no rows of model {model!r} (they have "
                         f"{', '.join(sorted(set(table.model)))})")
    tokens = rows.tokens_evaluated.value_counts().sort_index(ascending=False).idxmax()
    rows = rows[rows.tokens_evaluated == tokens]
    dense = rows[rows.pattern == "dense"]
    if dense.empty:
        raise NmsimError(f"the accuracy tables have no dense row of {model} at {tokens} tokens")
    dense_ppl = float(dense.perplexity.iloc[0])
    best = [dense.iloc[0]]
    sparse = rows[rows.pattern != "dense"]
    for _, group in sparse.groupby(["operand", "pattern"], sort=True):
        best.append(group.loc[group.perplexity.idxmin()])
    out = pd.DataFrame(best)
    out["operand"] = out.operand.replace(NOT_APPLICABLE, "none")
    out["method"] = [NOT_APPLICABLE if r.pattern == "dense" else
                     r.criterion if r.mitigation == "none" else f"{r.criterion} + {r.mitigation}"
                     for r in out.itertuples()]
    out["delta_ppl_vs_dense"] = out.perplexity - dense_ppl
    out["delta_pct_vs_dense"] = 100 * out.delta_ppl_vs_dense / dense_ppl
    columns = ["operand", "pattern", "density", "method", "perplexity", "delta_ppl_vs_dense", "delta_pct_vs_dense",
               "tokens_evaluated", "source"]
    return out[columns].reset_index(drop=True)


def performance_cases(designs: list[AcceleratorSpec], patterns: tuple[Pattern, ...]) -> list[SimCase]:
    """What :func:`performance` reads: every design × dense and the patterns of ``patterns`` it supports × prefill
    (:data:`PREFILL_BATCHES` of :data:`SEQ_TOKENS`) and decode (:data:`DECODE_BATCHES`)."""
    common = {"patterns": patterns, "supported_only": True, "seq": SEQ_TOKENS}
    return (grid_cases(designs, phases=("prefill",), batches=PREFILL_BATCHES, **common)
            + grid_cases(designs, phases=("decode",), batches=DECODE_BATCHES, **common))


def performance(results: SimulationResults, designs: list[AcceleratorSpec], patterns: tuple[Pattern, ...]
                ) -> pd.DataFrame:
    """Whole-model totals of :func:`performance_cases`, ordered by design (as given), pattern, phase, batch."""
    table = results.table_of(performance_cases(designs, patterns))
    table["_order"] = table.design.map({spec.name: index for index, spec in enumerate(designs)})
    return table.sort_values(["_order", "pattern", "phase", "batch"], kind="stable").drop(columns="_order") \
        .reset_index(drop=True)


def area_summary(designs: list[AcceleratorSpec], level: str = "die") -> pd.DataFrame:
    """Per design: what it supports and its area at every level (datapath, core, die: mm² and % over the same
    design without sparsity); ``area_mm2``, ``dense_area_mm2`` and ``area_overhead_pct`` (with low/high bounds) are
    those of ``level`` (``area_level``), the one the report's decisions use; ``area_warnings`` says where the die
    model extrapolates."""
    rows = []
    for spec in designs:
        levels = design_area_levels(spec)
        chosen = levels.level_summary(level)
        row = {"design": spec.name, "kind": spec.compute.kind, "sparse_operand": spec.sparsity.operand,
               "supported_patterns": " ".join(str(p) for p in spec.sparsity.patterns) or "dense",
               "hierarchical": spec.sparsity.hierarchical, "metadata_format": spec.sparsity.metadata_format,
               "technology_nm": spec.technology_nm, "area_level": level, "area_mm2": chosen["area_mm2"],
               "dense_area_mm2": chosen["dense_area_mm2"], "area_overhead_pct": chosen["overhead_pct"],
               "area_overhead_low_pct": chosen["overhead_low_pct"],
               "area_overhead_high_pct": chosen["overhead_high_pct"]}
        for name in AREA_LEVELS:
            summary = levels.level_summary(name)
            row[f"{name}_area_mm2"] = summary["area_mm2"]
            row[f"{name}_overhead_pct"] = summary["overhead_pct"]
        row["area_warnings"] = "; ".join(levels.warnings)
        rows.append(row)
    return pd.DataFrame(rows)


def area_components(designs: list[AcceleratorSpec]) -> pd.DataFrame:
    """Per design and area component (mac_array, operand_select_muxes, metadata, selection_network,
    extra_buffering): area_mm2 with its low/high bounds and the share of the dense datapath."""
    rows = [dict(row, level="datapath", technology_nm=spec.technology_nm) for spec in designs
            for row in design_area(spec).rows() if row["component"] != "total"]
    return pd.DataFrame(rows).rename(columns={"low_mm2": "area_low_mm2", "high_mm2": "area_high_mm2",
                                              "pct_of_dense": "pct_of_dense_datapath"})


def area_levels(designs: list[AcceleratorSpec]) -> pd.DataFrame:
    """Per design, the components of one core (SM) and of the die: level, component, area_mm2 and its bounds."""
    rows = [row for spec in designs for row in design_area_levels(spec).rows()]
    return pd.DataFrame(rows).rename(columns={"low_mm2": "area_low_mm2", "high_mm2": "area_high_mm2"})


def _lookup(perf: pd.DataFrame, design: str, pattern: str, phase: str, batch: int, column: str) -> float:
    """One whole-model total of ``perf`` (NaN when the design did not run that case)."""
    found = perf[(perf.design == design) & (perf.pattern == pattern) & (perf.phase == phase) & (perf.batch == batch)]
    return float(found[column].iloc[0]) if len(found) else math.nan


def _sweep_points(sweep_rows: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Trade-off rows of a parameter sweep (``nmsim.sim.param_sweep``): one per point and sparse pattern, named
    ``design[key=value, ...]``."""
    parameters = [c for c in sweep_rows.columns[1:sweep_rows.columns.get_loc("design")]]
    rows = []
    prefill = sweep_rows[(sweep_rows.phase == "prefill") & (sweep_rows.pattern != "dense")]
    for point, group in prefill.groupby("point", sort=True):
        first = group.iloc[0]
        name = f"{first.design}[" + ", ".join(f"{p}={first[p]}" for p in parameters) + "]"
        for pattern, rows_of in group.groupby("pattern", sort=False):
            row = rows_of.sort_values("batch").iloc[0]
            acc = accuracy[(accuracy.pattern == pattern) & (accuracy.operand == "activation")]
            rows.append({"design": name, "pattern": pattern, "operand": "activation",
                         "method": acc.method.iloc[0] if len(acc) else "",
                         "perplexity": float(acc.perplexity.iloc[0]) if len(acc) else math.nan,
                         "delta_pct_vs_dense": float(acc.delta_pct_vs_dense.iloc[0]) if len(acc) else math.nan,
                         "area_overhead_pct": row.area_overhead_pct, "area_mm2": row.area_mm2,
                         "prefill_speedup": row.speedup_vs_dense_same_design,
                         "prefill_roofline_speedup": row.roofline_speedup_vs_dense_same_design,
                         "prefill_offchip_bytes_vs_dense": row.offchip_bytes_vs_dense,
                         "prefill_energy_vs_dense": row.energy_vs_dense, "statistics": row.statistics,
                         "source": "sweep"})
    return pd.DataFrame(rows)


def tradeoff(perf: pd.DataFrame, areas: pd.DataFrame, accuracy: pd.DataFrame,
             sweep_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per design and pattern it runs (dense designs: dense): the accuracy of that pattern on the operand
    the design prunes, the speedups, area and off-chip bytes, and whether the point is on the Pareto front of
    perplexity vs area overhead among the sparse points (``pareto_area``; dense, smallest and most accurate, is the
    reference) and of perplexity vs prefill speedup among all (``pareto_speedup``). ``sweep_rows`` (a parameter
    sweep's table) adds its points, ``source`` "sweep", to the same fronts."""
    rows = []
    for design in areas.itertuples():
        for pattern in dict.fromkeys(perf[perf.design == design.design].pattern):
            if pattern == "dense" and design.sparse_operand != "none":
                continue  # the sparse design run dense is the reference, not a choice
            operand = "none" if pattern == "dense" else design.sparse_operand
            acc = accuracy[(accuracy.pattern == pattern) & (accuracy.operand == operand)]
            prefill = perf[(perf.design == design.design) & (perf.pattern == pattern) & (perf.phase == "prefill")
                           & (perf.batch == PREFILL_BATCHES[0])].iloc[0]
            row = {
                "design": design.design, "pattern": pattern, "operand": operand,
                "method": acc.method.iloc[0] if len(acc) else "",
                "perplexity": float(acc.perplexity.iloc[0]) if len(acc) else math.nan,
                "delta_pct_vs_dense": float(acc.delta_pct_vs_dense.iloc[0]) if len(acc) else math.nan,
                "area_overhead_pct": 0.0 if pattern == "dense" else design.area_overhead_pct,
                "area_mm2": design.dense_area_mm2 if pattern == "dense" else design.area_mm2,
                "area_level": design.area_level,
                "technology_nm": design.technology_nm,
                "prefill_speedup": prefill.speedup_vs_dense_same_design,
                "prefill_roofline_speedup": prefill.roofline_speedup_vs_dense_same_design,
            }
            for batch in DECODE_BATCHES:
                row[f"decode_b{batch}_speedup"] = _lookup(perf, design.design, pattern, "decode", batch,
                                                           "speedup_vs_dense_same_design")
            row["prefill_offchip_bytes_vs_dense"] = prefill.offchip_bytes_vs_dense
            row["decode_b1_offchip_bytes_vs_dense"] = _lookup(perf, design.design, pattern, "decode", 1,
                                                               "offchip_bytes_vs_dense")
            row["prefill_energy_vs_dense"] = prefill.energy_vs_dense
            row["decode_b1_energy_vs_dense"] = _lookup(perf, design.design, pattern, "decode", 1, "energy_vs_dense")
            row["statistics"] = prefill.statistics
            rows.append(row)
    table = pd.DataFrame(rows).assign(source="preset")
    if sweep_rows is not None:
        table = pd.concat([table, _sweep_points(sweep_rows, accuracy)], ignore_index=True)
    known = table.perplexity.notna()
    table["pareto_area"] = False
    table["pareto_speedup"] = False
    sparse = known & (table.pattern != "dense")  # dense is smallest and most accurate: the reference, not a choice
    table.loc[sparse, "pareto_area"] = pareto_front(table[sparse], minimize=["perplexity", "area_overhead_pct"])
    table.loc[known, "pareto_speedup"] = pareto_front(table[known], minimize=["perplexity"],
                                                      maximize=["prefill_speedup"])
    return table


def native_designs(areas: pd.DataFrame) -> dict[str, str]:
    """pattern → the design that supports exactly that pattern on activations, natively (not composed)."""
    natives = {}
    for row in areas.itertuples():
        patterns = row.supported_patterns.split()
        if row.sparse_operand == "activation" and not row.hierarchical and len(patterns) == 1:
            natives.setdefault(patterns[0], row.design)
    return natives


def trade_row(trade: pd.DataFrame, design: str | None, pattern: str):
    """The trade-off row of ``design`` running ``pattern`` (None: not in the table)."""
    found = trade[(trade.design == design) & (trade.pattern == pattern)]
    return found.iloc[0] if len(found) else None


def decision_summary(trade: pd.DataFrame, areas: pd.DataFrame, layers: pd.DataFrame,
                     sensitivity: pd.DataFrame | None) -> pd.DataFrame:
    """What the conclusion quotes beyond the trade-off, sensitivity and break-even tables (one row; empty without a
    native activation 8:16 design): 16:32's prefill throughput per area over 8:16's at the preset values
    (``efficiency_ratio``, from ``sensitivity``'s rows of the 8:16 vs 16:32 pair) and the change in %
    (``efficiency_change_pct``), 16:32's perplexity gain over 8:16 (``ppl_gain_16of32``, points) and the efficiency
    it costs per point where it costs any; for a composed (hierarchical) 8:16 design, the MAC slots per value
    position on the real masks beside native 8:16's and what composability costs (2:4's perplexity over 8:16's)."""
    natives = native_designs(areas)
    main = trade_row(trade, natives.get("8:16"), "8:16")
    if main is None:
        return pd.DataFrame()
    level = str(areas.area_level.iloc[0]) if "area_level" in areas and len(areas) else "datapath"
    row = {"design_8of16": main.design, "area_level": level, "ppl_8of16": main.perplexity}
    sixteen = trade_row(trade, natives.get("16:32"), "16:32")
    preset = sensitivity[(sensitivity.x == 1.0) & (sensitivity.phase == "prefill")] \
        if sensitivity is not None and len(sensitivity) else pd.DataFrame()
    if sixteen is not None and len(preset):
        ratio, gain = float(preset.efficiency_ratio.iloc[0]), float(main.perplexity - sixteen.perplexity)
        row.update({"design_16of32": sixteen.design, "ppl_16of32": sixteen.perplexity, "efficiency_ratio": ratio,
                    "efficiency_change_pct": 100 * (ratio - 1), "ppl_gain_16of32": gain,
                    "efficiency_cost_pct_per_ppl": 100 * (1 - ratio) / gain if ratio < 1 and gain > 0 else math.nan})
    hier = trade[(trade.pattern == "8:16") & trade.design.isin(areas[areas.hierarchical].design)]
    if len(hier):
        composed = hier.iloc[0]
        density = {design: layers[(layers.design == design) & (layers.pattern == "8:16")].compute_density.mean()
                   for design in (composed.design, main.design)}
        two_four = trade_row(trade, composed.design, "2:4")
        row.update({"composed_design": composed.design, "composed_mac_slots_per_position": density[composed.design],
                    "native_mac_slots_per_position": density[main.design],
                    "composability_cost_ppl": two_four.perplexity - main.perplexity if two_four is not None
                    else math.nan})
    return pd.DataFrame([row])


def _with_format(spec: AcceleratorSpec, fmt: str) -> AcceleratorSpec:
    return dataclasses.replace(spec, sparsity=dataclasses.replace(spec.sparsity, metadata_format=fmt))


def io_format_cases(traces: dict[Pattern, TraceData | None], natives: dict[Pattern, AcceleratorSpec]
                    ) -> list[SimCase]:
    """What :func:`io_formats` reads: a batch-1 prefill of each traced pattern on its native design, stored in
    each metadata format."""
    return [SimCase(_with_format(natives[pattern], fmt), pattern, "prefill", PREFILL_BATCHES[0], SEQ_TOKENS)
            for pattern, trace in traces.items() if trace is not None and pattern.kind != "dense"
            and "compression" in trace.tables and pattern in natives for fmt in METADATA_FORMATS]


def io_formats(traces: dict[Pattern, TraceData | None], natives: dict[Pattern, AcceleratorSpec],
               results: SimulationResults) -> pd.DataFrame:
    """Per pattern and metadata format: the activation bytes per token of the real trace (fp16 values) over
    dense, and the simulated off-chip bytes of a prefill on the pattern's native design stored that way."""
    rows = []
    for pattern, trace in traces.items():
        if trace is None or pattern.kind == "dense" or "compression" not in trace.tables:  # measured traces only
            continue
        table = trace.table("compression")
        table = table[(table.phase == "prefill") & (table.value_dtype == "fp16")]
        for fmt in METADATA_FORMATS:
            part = table[table.metadata_format == fmt]
            row = {"pattern": str(pattern), "metadata_format": fmt,
                   "activation_bytes_per_token": float(part.bytes_per_token.sum()),
                   "dense_activation_bytes_per_token": float(part.dense_bytes_per_token.sum())}
            row["activation_bytes_vs_dense"] = row["activation_bytes_per_token"] / row[
                "dense_activation_bytes_per_token"]
            row["activation_saving_pct"] = 100 * (1 - row["activation_bytes_vs_dense"])
            native = natives.get(pattern)
            if native is not None:
                case = SimCase(_with_format(native, fmt), pattern, "prefill", PREFILL_BATCHES[0], SEQ_TOKENS)
                ratio = float(results.totals_of(case).offchip_bytes_vs_dense)
                row.update({"design": native.name, "prefill_offchip_bytes_vs_dense": ratio,
                            "prefill_offchip_saving_pct": 100 * (1 - ratio)})
            row["statistics"] = trace.provenance
            rows.append(row)
    return pd.DataFrame(rows)


def decode_fetch(traces: dict[Pattern, TraceData | None], shape: ModelShape) -> pd.DataFrame:
    """Per pattern and batch size T: the fraction of weight rows the union of T decode tokens' masks touches,
    weighted by each input's weight bytes (K × the output widths that read it), from the real traces; beside it
    the fraction if tokens chose their kept values independently, 1 − (1 − density)^T."""
    rows = []
    for pattern, trace in traces.items():
        if trace is None or "weight_fetch" not in trace.tables:  # measured traces only
            continue
        fetch = trace.table("weight_fetch")
        fetch = fetch[fetch.phase == "decode"]
        widths = fetch.projections.map(lambda names: sum(shape.projection_shape(p)[1] for p in names.split("+")))
        fetch = fetch.assign(weight=fetch.k * widths)
        for tokens, group in fetch.groupby("tile_tokens", sort=True):
            fraction = float((group.weight_rows_needed_fraction * group.weight).sum() / group.weight.sum())
            rows.append({"pattern": str(pattern), "batch_tokens": int(tokens), "weight_rows_fraction": fraction,
                         "independent_tokens_fraction": 1 - (1 - pattern.density) ** int(tokens),
                         "statistics": trace.provenance})
    return pd.DataFrame(rows)


def layer_cases(natives: dict[Pattern, AcceleratorSpec], designs: list[AcceleratorSpec]
                ) -> list[tuple[Pattern, AcceleratorSpec]]:
    """(pattern, design) pairs of the per-layer heatmap: each native design, and 8:16 on each hierarchical one."""
    eight = Pattern.nm(8, 16)
    composed = [(eight, spec) for spec in designs if spec.sparsity.hierarchical and eight in spec.sparsity.patterns]
    return list(natives.items()) + composed


def layer_speedup_cases(pairs: list[tuple[Pattern, AcceleratorSpec]]) -> list[SimCase]:
    """What :func:`layer_speedups` reads: a batch-1 prefill of each (pattern, design), per GEMM."""
    return [SimCase(spec, pattern, "prefill", PREFILL_BATCHES[0], SEQ_TOKENS, per_gemm=True) for pattern, spec in pairs]


def layer_speedups(pairs: list[tuple[Pattern, AcceleratorSpec]], results: SimulationResults) -> pd.DataFrame:
    """Per (pattern, design), layer and projection: the prefill speedup over the design run dense and the compute
    density the layer's real masks cost."""
    frames = []
    for case, (pattern, spec) in zip(layer_speedup_cases(pairs), pairs):
        table = results.gemms_of(case)[["layer", "projection", "compute_density", "speedup_vs_dense_same_design",
                                        "statistics"]]
        frames.append(table.assign(design=spec.name, pattern=str(pattern)))
    columns = ["design", "pattern", "layer", "projection", "compute_density", "speedup_vs_dense_same_design",
               "statistics"]
    return pd.concat(frames, ignore_index=True)[columns]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_sha256(directory: Path) -> str:
    """One digest over a trace's statistics and manifest: (relative path, file digest) of each, sorted. The
    statistics' checksum file (``stats/checksums.json``) is left out: it is a function of the files digested."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "sample" not in p.relative_to(directory).parts
                       and p.name != "checksums.json"):
        digest.update(f"{path.relative_to(directory)}\0{_sha256(path)}\n".encode())
    return digest.hexdigest()


def shown_path(path: Path) -> str:
    """A path as the report prints it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _package_path(path: Path) -> str:
    """A file of the package, relative to the folder holding the package (``nmsim/hw/calibration/cells.yaml``)."""
    return str(path.resolve().relative_to(Path(__file__).resolve().parents[2]))


def inputs(designs: list[AcceleratorSpec], traces: dict[Pattern, TraceData | None], accuracy: tuple[Path, ...],
           sweep_file: Path | None) -> pd.DataFrame:
    """Every input of the report with its sha256: nmsim's version, designs, traces (statistics and manifest),
    accuracy tables, the calibration and timing files, the sweep file."""
    rows = [{"kind": "nmsim", "name": "version", "path": "-", "sha256": __version__}]
    for spec in designs:
        rows.append({"kind": "design", "name": spec.name, "path": shown_path(Path(spec.source)),
                     "sha256": _sha256(Path(spec.source))})
    for pattern, trace in traces.items():
        if trace is not None:
            rows.append({"kind": "trace", "name": str(pattern), "path": shown_path(trace.path),
                         "sha256": _tree_sha256(trace.path), "statistics": trace.provenance})
    for path in accuracy:
        rows.append({"kind": "accuracy", "name": path.name, "path": shown_path(path), "sha256": _sha256(path)})
    for kind, path in (("calibration", CALIBRATION_FILE), ("timing", TIMING_FILE)):
        rows.append({"kind": kind, "name": path.name, "path": _package_path(path), "sha256": _sha256(path)})
    if sweep_file is not None:
        rows.append({"kind": "sweep", "name": sweep_file.name, "path": shown_path(sweep_file),
                     "sha256": _sha256(sweep_file)})
    return pd.DataFrame(rows).fillna({"statistics": "-"})
