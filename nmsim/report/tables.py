"""The trade-off report's tidy tables, built from plain inputs (accuracy rows, designs, trace statistics).

Every function returns a DataFrame whose column names carry their unit; the report writer saves them as CSV and
Parquet. Speedups are time ratios over the same design run dense (same clock and units), so a design's sparse
support is judged against what the same silicon does without it.

- :func:`best_accuracy`: per operand and pattern, the method with the lowest perplexity.
- :func:`performance`: designs × the patterns each supports × prefill/decode × batch sizes.
- :func:`tradeoff`: one row per design and pattern: accuracy beside speedup, area, bytes and energy, with Pareto
  flags.
- :func:`area_components`, :func:`io_formats`, :func:`decode_fetch`, :func:`layer_speedups`: the figures' data.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from nmsim.accuracy import KEY_COLUMNS, NOT_APPLICABLE, read_rows
from nmsim.errors import NmsimError
from nmsim.hw.area import design_area
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import METADATA_FORMATS, parse_pattern
from nmsim.report.pareto import pareto_front
from nmsim.sim.report import gemm_table
from nmsim.sim.simulate import simulate_model
from nmsim.sim.sweep import sweep
from nmsim.sim.trace_data import TraceData
from nmsim.sim.workload import ModelShape

PREFILL_BATCHES = (1, 8)  # sequences of SEQ_TOKENS
DECODE_BATCHES = (1, 4, 16, 64)  # sequences decoding one token each
SEQ_TOKENS = 512


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


def performance(designs: list[AcceleratorSpec], shape: ModelShape, baseline: AcceleratorSpec,
                traces: dict[str, TraceData | None], patterns: tuple[str, ...]) -> pd.DataFrame:
    """Whole-model totals: every design × dense and the patterns of ``patterns`` it supports × prefill
    (:data:`PREFILL_BATCHES`) and decode (:data:`DECODE_BATCHES`)."""
    common = {"baseline": baseline, "patterns": patterns, "traces": traces, "supported_only": True,
              "seq": SEQ_TOKENS}
    prefill = sweep(designs, shape, phases=("prefill",), batches=PREFILL_BATCHES, **common)
    decode = sweep(designs, shape, phases=("decode",), batches=DECODE_BATCHES, **common)
    order = {spec.name: index for index, spec in enumerate(designs)}
    table = pd.concat([prefill, decode], ignore_index=True)
    table["_order"] = table.design.map(order)
    return table.sort_values(["_order", "pattern", "phase", "batch"], kind="stable").drop(columns="_order") \
        .reset_index(drop=True)


def area_summary(designs: list[AcceleratorSpec]) -> pd.DataFrame:
    """Per design: what it supports and its datapath area (mm², % over its dense datapath, low/high bounds)."""
    rows = []
    for spec in designs:
        area = design_area(spec)
        rows.append({"design": spec.name, "kind": spec.compute.kind, "sparse_operand": spec.sparsity.operand,
                     "supported_patterns": " ".join(str(p) for p in spec.sparsity.patterns) or "dense",
                     "hierarchical": spec.sparsity.hierarchical, "metadata_format": spec.sparsity.metadata_format,
                     "technology_nm": spec.technology_nm, "area_mm2": area.total_mm2,
                     "dense_area_mm2": area.dense_mm2, "area_overhead_pct": area.overhead_pct,
                     "area_overhead_low_pct": area.overhead_low_pct,
                     "area_overhead_high_pct": area.overhead_high_pct})
    return pd.DataFrame(rows)


def area_components(designs: list[AcceleratorSpec]) -> pd.DataFrame:
    """Per design and area component (mac_array, operand_select_muxes, metadata, selection_network,
    extra_buffering): area_mm2 with its low/high bounds and the share of the dense datapath."""
    rows = [row for spec in designs for row in design_area(spec).rows() if row["component"] != "total"]
    return pd.DataFrame(rows).rename(columns={"low_mm2": "area_low_mm2", "high_mm2": "area_high_mm2",
                                              "pct_of_dense": "pct_of_dense_datapath"})


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
                         "prefill_energy_vs_dense": row.energy_vs_dense, "source": "sweep"})
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


def io_formats(traces: dict[str, TraceData | None], natives: dict[str, AcceleratorSpec], shape: ModelShape,
               baseline: AcceleratorSpec) -> pd.DataFrame:
    """Per pattern and metadata format: the activation bytes per token of the real trace (fp16 values) over
    dense, and the simulated off-chip bytes of a prefill on the pattern's native design stored that way."""
    rows = []
    for pattern, trace in traces.items():
        if trace is None or pattern == "dense":
            continue
        table = pd.read_csv(trace.path / "stats" / "compression.csv")
        table = table[(table.phase == "prefill") & (table.value_dtype == "fp16")]
        for fmt in METADATA_FORMATS:
            part = table[table.metadata_format == fmt]
            row = {"pattern": pattern, "metadata_format": fmt,
                   "activation_bytes_per_token": float(part.bytes_per_token.sum()),
                   "dense_activation_bytes_per_token": float(part.dense_bytes_per_token.sum())}
            row["activation_bytes_vs_dense"] = row["activation_bytes_per_token"] / row[
                "dense_activation_bytes_per_token"]
            row["activation_saving_pct"] = 100 * (1 - row["activation_bytes_vs_dense"])
            native = natives.get(pattern)
            if native is not None:
                spec = dataclasses.replace(native, sparsity=dataclasses.replace(native.sparsity, metadata_format=fmt))
                run = simulate_model(spec, shape, phase="prefill", batch=PREFILL_BATCHES[0], seq=SEQ_TOKENS,
                                     pattern=parse_pattern(pattern), baseline=baseline, trace=trace)
                sparse = sum(r.sparse.level_bytes[0].total for r in run.rows)
                dense = sum(r.dense.level_bytes[0].total for r in run.rows)
                row.update({"design": native.name, "prefill_offchip_bytes_vs_dense": sparse / dense,
                            "prefill_offchip_saving_pct": 100 * (1 - sparse / dense)})
            rows.append(row)
    return pd.DataFrame(rows)


def decode_fetch(traces: dict[str, TraceData | None], shape: ModelShape) -> pd.DataFrame:
    """Per pattern and batch size T: the fraction of weight rows the union of T decode tokens' masks touches,
    weighted by each input's weight bytes (K × the output widths that read it), from the real traces; beside it
    the fraction if tokens chose their kept values independently, 1 − (1 − density)^T."""
    rows = []
    for pattern, trace in traces.items():
        if trace is None:
            continue
        fetch = pd.read_csv(trace.path / "stats" / "weight_fetch.csv")
        fetch = fetch[fetch.phase == "decode"]
        widths = fetch.projections.map(lambda names: sum(shape.projection_shape(p)[1] for p in names.split("+")))
        fetch = fetch.assign(weight=fetch.k * widths)
        density = parse_pattern(pattern).density
        for tokens, group in fetch.groupby("tile_tokens", sort=True):
            fraction = float((group.weight_rows_needed_fraction * group.weight).sum() / group.weight.sum())
            rows.append({"pattern": pattern, "batch_tokens": int(tokens), "weight_rows_fraction": fraction,
                         "independent_tokens_fraction": 1 - (1 - density) ** int(tokens)})
    return pd.DataFrame(rows)


def layer_speedups(cases: list[tuple[str, AcceleratorSpec]], shape: ModelShape, baseline: AcceleratorSpec,
                   traces: dict[str, TraceData | None]) -> pd.DataFrame:
    """Per (pattern, design) case, layer and projection: the prefill speedup over the design run dense and the
    compute density the layer's real masks cost."""
    frames = []
    for pattern, spec in cases:
        run = simulate_model(spec, shape, phase="prefill", batch=PREFILL_BATCHES[0], seq=SEQ_TOKENS,
                             pattern=parse_pattern(pattern), baseline=baseline, trace=traces.get(pattern))
        table = gemm_table(run)[["layer", "projection", "compute_density", "speedup_vs_dense_same_design"]]
        frames.append(table.assign(design=spec.name, pattern=pattern))
    columns = ["design", "pattern", "layer", "projection", "compute_density", "speedup_vs_dense_same_design"]
    return pd.concat(frames, ignore_index=True)[columns]
