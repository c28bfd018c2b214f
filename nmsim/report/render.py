"""The report's text: the case per pattern, the conclusion about 8:16 with what would change it, the figures, the
inputs with checksums. Markdown first; the HTML is the same Markdown rendered, with the figures embedded."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt

from nmsim.report.figures import FIGURES, sensitivity_figures
from nmsim.report.tables import DECODE_BATCHES, PREFILL_BATCHES, SEQ_TOKENS, native_designs, trade_row
from nmsim.report.deployment_text import deployment_section
from nmsim.report.sensitivity import DEFAULT_PAIR, pair_label

CAPTIONS = {
    "validation": "The performance model against measured GPUs (`nmsim validate`, the packaged sets): GEMM, softmax "
                  "and layer-norm latency predicted vs measured on the A100, and the measured vs predicted 2:4 "
                  "speedup; the band is ±10 %.",
    "deployment_latency": "Time to first token of a 2k prompt and decode throughput at batch 64 and 2k context, per "
                          "target model and pattern (log scales), end to end on the fewest devices that hold the "
                          "model; hatched: weight 2:4.",
    "deployment_decode_batch": "Decode speedup over the same design dense against batch at 2k context, per target "
                               "model: activation patterns (solid) lose their decode benefit as the union of a "
                               "batch's masks needs nearly every weight row; weight 2:4 (dashed) keeps its halved "
                               "weights.",
    "deployment_fronts": "Per target model: perplexity increase over dense (the target's own rows, or its proxy's) "
                         "against end-to-end prefill speedup over the baseline (top) and against area overhead "
                         "(bottom); ringed points are on the Pareto front.",
    "accuracy_vs_area": "Perplexity of the best method per pattern against the area each design adds (at the "
                        "report's area level, die by default: see the area table); the step line is the Pareto "
                        "front (nothing else is both more accurate and smaller).",
    "accuracy_vs_speedup": "Perplexity against simulated prefill speedup (filled) and the roofline estimate "
                           "(hollow); the step line is the Pareto front.",
    "speedup_by_pattern": "Speedup of every design on each pattern it supports, prefill and decode at several batch "
                          "sizes, driven by the real traces.",
    "bytes_per_level": "Bytes moved per memory level in one 512-token prefill, split into activation values, "
                       "metadata, weight values and outputs.",
    "area_breakdown": "Datapath area per design at its own process node (in the label; designs at different "
                      "nodes do not compare like for like): MAC array, operand-select muxes, the online top-N "
                      "selection network, metadata registers and decoders, extra buffering.",
    "layer_heatmap": "Prefill speedup per layer and projection on each native design, from the real masks.",
    "decode_weight_fetch": "Fraction of weight rows a decode batch must fetch (the union of its tokens' masks), "
                           "from the real traces; dotted: if tokens chose their values independently.",
    "sensitivity": "The second pattern's throughput per area (at the report's area level) over the first's, on "
                   "their native designs of the run, while one hardware parameter is scaled on both; at 1 the two "
                   "break even. Factors are over each design's preset value; the value width is 4, 8 and 16 bits, "
                   "plotted over the preset width.",
}


@dataclass(frozen=True)
class ReportContext:
    model: str
    baseline: str
    version: str


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def case_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The case per pattern: one row per (design, pattern) the designs offer, plus patterns no design runs."""
    trade, io = tables["tradeoff"], tables["io_formats"]
    trade = trade[trade.source == "preset"]
    areas = tables["area_summary"].set_index("design")
    level = _area_level(tables)
    prefill_b8 = tables["performance"][(tables["performance"].phase == "prefill")
                                       & (tables["performance"].batch == PREFILL_BATCHES[-1])]
    rows = []
    for row in trade.itertuples():
        saving = io[io.pattern == row.pattern].set_index("metadata_format").activation_saving_pct \
            if row.operand == "activation" else pd.Series(dtype=float)
        area = areas.loc[row.design]
        b8 = prefill_b8[(prefill_b8.design == row.design) & (prefill_b8.pattern == row.pattern)]
        rows.append({
            "design": row.design, "pattern": row.pattern, "operand": row.operand, "best method": row.method or "–",
            "PPL": _fmt(row.perplexity), "Δ vs dense %": _fmt(row.delta_pct_vs_dense, 1),
            f"{level} area over dense % [range]": "0" if row.pattern == "dense" else
            f"{area.area_overhead_pct:.2f} [{area.area_overhead_low_pct:.2f}–{area.area_overhead_high_pct:.2f}]",
            "area % datapath / core / die": "0" if row.pattern == "dense" else
            f"{area.datapath_overhead_pct:.1f} / {area.core_overhead_pct:.2f} / {area.die_overhead_pct:.2f}",
            f"prefill ×, B={PREFILL_BATCHES[0]} / {PREFILL_BATCHES[-1]}":
                f"{_fmt(row.prefill_speedup)} / {_fmt(b8.speedup_vs_dense_same_design.iloc[0] if len(b8) else None)}",
            "decode ×, B=" + "/".join(map(str, DECODE_BATCHES)):
                " / ".join(_fmt(getattr(row, f"decode_b{b}_speedup")) for b in DECODE_BATCHES),
            "activation I/O saved %, bitmask / index / enumerative":
                " / ".join(_fmt(saving.get(f), 1) for f in ("bitmask", "index", "enumerative")) if len(saving)
                else "–",
            "energy vs dense, prefill / decode B=1": f"{_fmt(row.prefill_energy_vs_dense, 3)} / "
                                                      f"{_fmt(row.decode_b1_energy_vs_dense, 3)}",
        })
    accuracy = tables["accuracy"]
    for row in accuracy[~accuracy.pattern.isin(trade.pattern) & (accuracy.operand == "activation")].itertuples():
        rows.append({"design": "(none in the set)", "pattern": row.pattern, "operand": row.operand,
                     "best method": row.method, "PPL": _fmt(row.perplexity),
                     "Δ vs dense %": _fmt(row.delta_pct_vs_dense, 1)})
    return pd.DataFrame(rows).fillna("–")


def _area_level(tables: dict[str, pd.DataFrame]) -> str:
    """The area level the report's decisions use (the area table says it)."""
    areas = tables["area_summary"]
    return str(areas.area_level.iloc[0]) if "area_level" in areas and len(areas) else "datapath"


def conclusion(tables: dict[str, pd.DataFrame], model: str) -> list[str]:
    """Plain sentences, every number from the tables: 8:16 against 2:4, 4:8, 16:32 and a hierarchical design."""
    trade, areas = tables["tradeoff"], tables["area_summary"]
    natives = native_designs(areas)
    level = _area_level(tables)
    main = trade_row(trade, natives.get("8:16"), "8:16")
    if main is None:
        return [("No design in this set supports 8:16 natively on activations, so the report draws no conclusion "
                 "about it; add `hw_configs/act-8of16.yaml` to the designs.")]
    lines = []

    def compare(pattern: str) -> None:
        other = trade_row(trade, natives.get(pattern), pattern)
        if other is None:
            return
        lines.append(
            f"- **8:16 vs {pattern}**: perplexity {main.perplexity:.2f} vs {other.perplexity:.2f} "
            f"({main.delta_pct_vs_dense:+.1f} % vs {other.delta_pct_vs_dense:+.1f} % over dense); prefill speedup "
            f"{main.prefill_speedup:.3f}× vs {other.prefill_speedup:.3f}×; decode (batch 1) "
            f"{main.decode_b1_speedup:.3f}× vs {other.decode_b1_speedup:.3f}×; {level} area "
            f"+{main.area_overhead_pct:.2f} % vs +{other.area_overhead_pct:.2f} %.")

    for pattern in ("2:4", "4:8", "16:32"):
        compare(pattern)
    verdict = []
    even = tables.get("break_even")
    if even is not None and len(even):  # the 8:16 vs 16:32 pair (other pairs are in the tables and figures)
        even = even[even.pair == pair_label(*DEFAULT_PAIR)]
    n = tables["decision_summary"].iloc[0]  # what the sentences quote beyond the other tables
    if not math.isnan(n.get("efficiency_ratio", math.nan)):
        change, gain = n.efficiency_change_pct, n.ppl_gain_16of32
        if n.efficiency_ratio < 1:
            cost = "" if math.isnan(n.efficiency_cost_pct_per_ppl) else \
                f" ({n.efficiency_cost_pct_per_ppl:.1f} % per point)"
            lines.append(
                f"- **16:32's price**: at the preset values 16:32 delivers {n.efficiency_ratio:.3f}× the prefill "
                f"throughput per {level} area of 8:16, i.e. it costs {-change:.1f} % efficiency for {gain:.2f} "
                f"perplexity points{cost}.")
            verdict.append(f"16:32 is {-change:.1f} % less efficient per {level} mm² for {gain:.2f} PPL")
        else:
            sixteen = trade_row(trade, n.design_16of32, "16:32")
            why = (f"its design is the smaller one (+{sixteen.area_overhead_pct:.2f} % vs "
                   f"+{main.area_overhead_pct:.2f} % {level} area)" if sixteen.area_overhead_pct
                   <= main.area_overhead_pct else f"its larger front end is too small a share of the {level} to "
                   "matter")
            lines.append(
                f"- **16:32 costs nothing here**: at the preset values 16:32 delivers {n.efficiency_ratio:.3f}× the "
                f"prefill throughput per {level} area of 8:16, and {gain:.2f} perplexity points more accuracy: {why}.")
            verdict.append(f"16:32 is {change:.1f} % more efficient per {level} mm² and {gain:.2f} PPL better")
    if isinstance(n.get("composed_design"), str):
        h = trade_row(trade, n.composed_design, "8:16")
        lines.append(
            f"- **Hierarchical composition ({h.design})**: the same 8:16 masks run at prefill "
            f"{h.prefill_speedup:.3f}× (native {main.prefill_speedup:.3f}×) for +{h.area_overhead_pct:.2f} % {level} "
            f"area (native +{main.area_overhead_pct:.2f} %): real 8:16 masks are not 2:4-aligned, so the composed "
            "datapath spends extra passes on groups that keep more than two of an aligned four.")
        if not math.isnan(n.composability_cost_ppl) and not math.isnan(n.composed_mac_slots_per_position):
            lines.append(
                f"  The composed datapath spends {n.composed_mac_slots_per_position:.2f} MAC slots per value position "
                f"on real 8:16 masks ({n.native_mac_slots_per_position:.2f} native). The only 8:16 masks it runs at "
                f"full speed are those that are 2:4 as well (at most two kept in every aligned four), that is 2:4 "
                f"masks, whose perplexity is {trade_row(trade, h.design, '2:4').perplexity:.2f}: composability "
                f"costs {n.composability_cost_ppl:.2f} perplexity points here.")
        verdict.append("composing 8:16 from 2:4 is cheaper in area but slower on real masks" if
                       h.area_overhead_pct < main.area_overhead_pct and h.prefill_speedup < main.prefill_speedup
                       else "the composed design is not dominated by native 8:16 here")
    fronts = []
    for flag, x, sign, what in (("pareto_speedup", "prefill_speedup", -1, "accuracy vs prefill speedup"),
                                ("pareto_area", "area_overhead_pct", 1, "accuracy vs area")):
        if main[flag]:
            fronts.append(f"on the {what} front")
            continue
        rivals = trade[(trade.perplexity <= main.perplexity) & (trade.pattern != "dense")
                       & (sign * trade[x] <= sign * main[x])
                       & ((trade.perplexity < main.perplexity) | (trade[x] != main[x]))]
        names = [f"{r.design} {r.pattern}" for r in rivals.itertuples()]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        fronts.append(f"dominated on {what} (by {listed})")
    # the design is named: with a user's design beside the presets, "native 8:16" alone is ambiguous
    lines.insert(0, f"**Conclusion for {model}:** native 8:16 ({main.design}) is " + ", and ".join(fronts) + ". "
                 + ("; ".join(verdict) + "." if verdict else ""))
    if even is not None and len(even):
        crossing = even[even.break_even_x.notna()]
        if len(crossing):
            parts = [f"{r.label} at {r.break_even_x:.2f} {r.unit} ({r.phase})" for r in crossing.itertuples()]
            lines.append("- **What would change it**: 16:32 breaks even with 8:16 when " + "; ".join(parts) + ".")
        elif (even.ratio_min >= 1).all():
            top = even.sort_values("ratio_span", ascending=False, kind="stable").iloc[0]
            lines.append(
                f"- **What would change it**: no single parameter swept (off-chip bandwidth, selector throughput, "
                f"clock, on-chip buffer, value width) makes 8:16 as efficient as 16:32 per {level} mm²; the one "
                f"that moves the ratio most is {top.label} in {top.phase} ({top.ratio_min:.3f}–{top.ratio_max:.3f}). "
                f"16:32's larger front end is too small a share of the {level} to decide: accuracy and the "
                "datapath budget do.")
        else:
            top = even.sort_values("ratio_span", ascending=False, kind="stable").iloc[0]
            lines.append(
                f"- **What would change it**: no single parameter swept (off-chip bandwidth, selector throughput, "
                f"clock, on-chip buffer, value width) makes 16:32 as efficient as 8:16; the one that moves the ratio "
                f"most is {top.label} in {top.phase} ({top.ratio_min:.3f}–{top.ratio_max:.3f}). The decision turns "
                "on accuracy instead: 16:32 is worth it only if its perplexity gain is worth the efficiency above, "
                "or if larger models show a bigger 8:16-to-16:32 gap than this one.")
    return lines


def _figure_paths(figure_dir: str, tables: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    names = [name for name, (table, _) in FIGURES.items() if table in tables and not tables[table].empty]
    names += [name for name, _ in sensitivity_figures(tables.get("sensitivity"))]
    return [(name, f"{figure_dir}/{name}.png") for name in names + ["bytes_per_level"]]


def _caption(name: str) -> str:
    return CAPTIONS["sensitivity"] if name.startswith("sensitivity_") else CAPTIONS[name]


def report_markdown(tables: dict[str, pd.DataFrame], context: ReportContext, table_files: list[str],
                    figure_dir: str = "figures") -> str:
    accuracy = tables["accuracy"]
    dense = accuracy[accuracy.pattern == "dense"].iloc[0]
    lines = [
        f"# N:M sparsity trade-off report: {context.model}",
        "",
        (f"Generated by nmsim {context.version} (`nmsim run`; the inputs table lists every input with its "
         f"checksum). Speedups are whole-model time ratios over "
         f"the same design run dense (prefill: {SEQ_TOKENS} tokens per sequence; decode: one token per sequence); "
         f"the baseline for absolute times is {context.baseline}. Accuracy: WikiText-2 test perplexity over "
         f"{int(dense.tokens_evaluated):,} tokens, dense {dense.perplexity:.4f}; each pattern shows its best "
         "method. Hardware numbers come from the committed real traces (magnitude criterion, no mitigation): at a "
         "fixed N:M density the method changes which values are kept, not how many."),
        "",
        "## Conclusion",
        "",
        *conclusion(tables, context.model),
        "",
        "## The case per pattern",
        "",
        _table(case_table(tables)),
        "",
        ("Unstructured 50 % has no design in the set (a zero-skipping datapath is not modelled); its row is the "
         "accuracy bound that structured patterns approach."),
        "",
        *deployment_section(tables, _area_level(tables)),
        "## Figures",
        "",
    ]
    for name, path in _figure_paths(figure_dir, tables):
        lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({path})", "", _caption(name),
                  f"SVG: [{Path(path).with_suffix('.svg').name}]({Path(path).with_suffix('.svg')})", ""]
    lines += ["## Tables", "", "CSV and Parquet beside this report, columns with units in their names:", ""]
    lines += [f"- `{name}`" for name in table_files]
    lines += ["", "## Inputs", "", _table(tables["inputs"]), ""]
    return "\n".join(lines)


_IMG = re.compile(r'<img src="([^"]+\.png)"')


def report_html(markdown: str, directory: Path, title: str) -> str:
    """The Markdown rendered to one self-contained HTML page (PNG figures embedded as data URIs)."""
    body = MarkdownIt("commonmark").enable("table").render(markdown)

    def embed(match: re.Match) -> str:
        data = (directory / match.group(1)).read_bytes()
        return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}"'

    body = _IMG.sub(embed, body)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head><body>\n{body}</body></html>\n")
