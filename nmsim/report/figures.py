"""The report's figures (matplotlib), each drawn from one tidy table and saved as PNG and SVG.

Axes carry units; speedups are over the same design run dense. Files are byte-for-byte reproducible: no dates in
the metadata and a fixed SVG id salt.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from nmsim.patterns import parse_pattern
from nmsim.registry import REPORT_PATTERNS
from nmsim.io import atomic_write_bytes
from nmsim.parallel import fork_map

STYLE = {"svg.hashsalt": "nmsim", "figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False}
PATTERN_ORDER = tuple(str(p) for p in REPORT_PATTERNS)
PATTERN_COLORS = {"dense": "#555555", "2:4": "#1f77b4", "4:8": "#2ca02c", "8:16": "#d62728", "16:32": "#9467bd",
                  "unstructured:0.5": "#8c564b"}
PNG_DPI = 150


def save_figure(fig: plt.Figure, directory: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.svg under ``directory``; close the figure."""
    paths = []
    for fmt, extra in (("png", {"dpi": PNG_DPI, "metadata": {"Software": None}}), ("svg", {"metadata": {"Date": None}})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, bbox_inches="tight", **extra)
        path = directory / f"{name}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def _annotate(ax, points: pd.DataFrame, x: str) -> None:
    """One label per distinct preset point (designs at the same spot share it), alternating above and below."""
    points = points[points.source == "preset"]
    cell = 0.012 * max(points[x].max() - points[x].min(), 1e-9)  # points closer than this share a label
    groups = points.groupby([(points[x] / cell).round(), points.perplexity.round(3)], sort=True)
    nodes = "technology_nm" in points and points.technology_nm.nunique() > 1  # then every label names its node
    for index, (_, group) in enumerate(groups):
        names = ", ".join(dict.fromkeys(
            d.removeprefix("act-") + (f" ({int(n)} nm)" if nodes else "")
            for d, n in zip(group.design, group.technology_nm if nodes else group.design)))
        ax.annotate(names, (group[x].max(), group.perplexity.iloc[0]), textcoords="offset points", xytext=(5, 4 if index % 2 else -10), fontsize=7)


def _pattern_legend(ax, points: pd.DataFrame, extra: list) -> None:
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=PATTERN_COLORS[p], label=p)
               for p in PATTERN_ORDER if p in set(points.pattern)]
    handles.append(plt.Line2D([], [], marker="s", linestyle="", color="gray", label="weight-pruned"))
    if (points.source == "sweep").any():
        handles.append(plt.Line2D([], [], marker="x", linestyle="", color="gray", label="sweep point"))
    ax.legend(handles=handles + extra, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))


def _front(ax, points: pd.DataFrame, x: str, flag: str, ascending: bool) -> list:
    front = points[points[flag]].sort_values(x, ascending=ascending)
    (line,) = ax.step(front[x], front.perplexity, where="post", color="black", linewidth=1, alpha=0.6, zorder=1,
                      label="Pareto front")
    return [line]


def _nodes_note(points: pd.DataFrame) -> str:
    """A title note when the points are designs at different process nodes (their labels name the node)."""
    if "technology_nm" not in points or points.technology_nm.nunique() <= 1:
        return ""
    nodes = ", ".join(f"{int(n)}" for n in sorted(points.technology_nm.dropna().unique()))
    return f"\ndesigns at {nodes} nm (labels): not like for like"


def _scatter(ax, points: pd.DataFrame, x: str, flag: str) -> None:
    for row in points.itertuples():
        marker = "x" if row.source == "sweep" else "s" if row.operand == "weight" else "o"
        edge = {} if marker == "x" else {"edgecolor": "black" if getattr(row, flag) else "none"}
        ax.scatter(getattr(row, x), row.perplexity, s=60 if getattr(row, flag) else 30, zorder=3,
                   color=PATTERN_COLORS.get(row.pattern, "black"), marker=marker, **edge)


def accuracy_vs_area(tradeoff: pd.DataFrame) -> plt.Figure:
    points = tradeoff[tradeoff.perplexity.notna()]
    sparse = points[points.pattern != "dense"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _scatter(ax, points, "area_overhead_pct", "pareto_area")
    _annotate(ax, points, "area_overhead_pct")
    front = _front(ax, sparse, "area_overhead_pct", "pareto_area", True)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis, minor=True)
    ax.margins(x=0.15)  # room for the labels
    level = points.area_level.dropna().iloc[0] if "area_level" in points and points.area_level.notna().any() \
        else "datapath"
    ax.set_xlabel(f"{level} area over the same {level} without N:M support (%)")
    ax.set_ylabel("WikiText-2 perplexity (log scale, lower is better)")
    ax.set_title("Accuracy vs area (front among sparse designs; dense is the reference)" + _nodes_note(points),
                 fontsize=9)
    _pattern_legend(ax, points, front)
    return fig


def accuracy_vs_speedup(tradeoff: pd.DataFrame) -> plt.Figure:
    points = tradeoff[tradeoff.perplexity.notna()]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _scatter(ax, points, "prefill_speedup", "pareto_speedup")
    for row in points.itertuples():
        ax.scatter(row.prefill_roofline_speedup, row.perplexity, s=30, facecolor="none", zorder=2,
                   edgecolor=PATTERN_COLORS.get(row.pattern, "black"))
    _annotate(ax, points, "prefill_speedup")
    roofline = [plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="gray",
                           label="roofline estimate")]
    front = _front(ax, points, "prefill_speedup", "pareto_speedup", False)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis, minor=True)
    ax.margins(x=0.15)
    ax.set_xlabel("prefill speedup over the same design run dense (×, 512 tokens)")
    ax.set_ylabel("WikiText-2 perplexity (log scale, lower is better)")
    ax.set_title("Accuracy vs speedup: filled = simulated, hollow = roofline; outlined = Pareto-optimal"
                 + _nodes_note(points), fontsize=9)
    _pattern_legend(ax, points, roofline + front)
    return fig


def speedup_by_pattern(performance: pd.DataFrame) -> plt.Figure:
    sparse = performance[performance.pattern != "dense"]
    cases = [("prefill", b) for b in sorted(set(sparse[sparse.phase == "prefill"].batch))] + \
            [("decode", b) for b in sorted(set(sparse[sparse.phase == "decode"].batch))]
    designs = list(dict.fromkeys(sparse.design))
    fig, axes = plt.subplots(1, len(cases), figsize=(2.6 * len(cases), 4), sharey=True)
    for ax, (phase, batch) in zip(np.atleast_1d(axes), cases):
        part = sparse[(sparse.phase == phase) & (sparse.batch == batch)]
        for index, design in enumerate(designs):
            rows = part[part.design == design]
            width = 0.8 / max(len(rows), 1)
            for offset, row in enumerate(rows.itertuples()):
                ax.bar(index - 0.4 + width * (offset + 0.5), row.speedup_vs_dense_same_design, width,
                       color=PATTERN_COLORS.get(row.pattern, "black"))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(designs)), designs, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{phase}, batch {batch}" + (" × 512 tokens" if phase == "prefill" else ""), fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("speedup over the same design run dense (×)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PATTERN_COLORS[p]) for p in PATTERN_ORDER
               if p in set(sparse.pattern)]
    fig.legend(handles, [p for p in PATTERN_ORDER if p in set(sparse.pattern)], loc="upper center", ncol=6,
               bbox_to_anchor=(0.5, 1.06))
    return fig


def bytes_per_level(performance: pd.DataFrame, levels: list[str]) -> plt.Figure:
    rows = performance[(performance.phase == "prefill") & (performance.batch == performance.batch.min())]
    rows = rows[(rows.pattern != "dense") | ~rows.design.isin(rows[rows.pattern != "dense"].design)]
    rows = rows.dropna(subset=[f"{level}_output_bytes" for level in levels])  # designs with other levels
    labels = [f"{r.design}\n{r.pattern}" for r in rows.itertuples()]
    parts = (("activation_value", "activation values", "#1f77b4"), ("metadata", "metadata", "#ff7f0e"),
             ("weight_value", "weight values", "#2ca02c"), ("output", "outputs", "#7f7f7f"))
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 4.2), sharey=False)
    for ax, level in zip(np.atleast_1d(axes), levels):
        bottom = np.zeros(len(rows))
        for part, name, color in parts:
            values = rows[f"{level}_{part}_bytes"].to_numpy(float) / 1e6
            ax.bar(range(len(rows)), values, bottom=bottom, color=color, label=name)
            bottom += values
        ax.set_xticks(range(len(rows)), labels, rotation=70, ha="right", fontsize=6)
        ax.set_title(f"{level}", fontsize=9)
        ax.set_ylabel("MB moved per 512-token prefill")
    fig.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), fontsize=7, loc="lower center",
               ncol=len(parts), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Bytes moved per memory level (outermost first)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def area_breakdown(components: pd.DataFrame) -> plt.Figure:
    names = (("mac_array", "MAC array", "#c7c7c7"), ("operand_select_muxes", "operand-select muxes", "#1f77b4"),
             ("selection_network", "top-N selection network", "#d62728"), ("metadata", "metadata", "#ff7f0e"),
             ("extra_buffering", "extra buffering", "#2ca02c"))
    designs = list(dict.fromkeys(components.design))
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(designs))
    for component, label, color in names:
        values = np.array([components[(components.design == d) & (components.component == component)].area_mm2.sum()
                           for d in designs])
        ax.bar(range(len(designs)), values, bottom=bottom, color=color, label=label)
        bottom += values
    nodes = {d: int(components[components.design == d].technology_nm.iloc[0]) for d in designs} \
        if "technology_nm" in components else {}
    labels = [f"{d} ({nodes[d]} nm)" if nodes else d for d in designs]
    ax.set_xticks(range(len(designs)), labels, rotation=45, ha="right")
    ax.set_ylabel("datapath area (mm², at each design's node)")
    mixed = len(set(nodes.values())) > 1
    ax.set_title("Area breakdown per design" + (": designs at different nodes (labels), not like for like"
                                                if mixed else ""), fontsize=9 if mixed else None)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def layer_heatmap(layers: pd.DataFrame) -> plt.Figure:
    """Per native design: each layer's prefill speedup over that projection's mean over the layers, so the colours
    show how the masks vary with depth (a projection's shape sets its level, which the tick labels give)."""
    designs = list(dict.fromkeys(layers.design))
    projections = list(dict.fromkeys(layers.projection))
    fig, axes = plt.subplots(1, len(designs), figsize=(2.4 * len(designs) + 1, 5.8), sharey=True)
    grids = {}
    for design in designs:
        grid = layers[layers.design == design].pivot(index="layer", columns="projection",
                                                     values="speedup_vs_dense_same_design")[projections]
        grids[design] = (grid, grid.mean(axis=0))
    spread = max(float(np.nanmax(np.abs(grid / mean - 1).to_numpy())) for grid, mean in grids.values()) or 1e-3
    image = None
    for ax, design in zip(np.atleast_1d(axes), designs):
        grid, mean = grids[design]
        image = ax.imshow(100 * (grid / mean - 1).to_numpy(), aspect="auto", cmap="RdBu",
                          vmin=-100 * spread, vmax=100 * spread)
        ax.set_xticks(range(len(projections)), [f"{p} {mean[p]:.2f}×" for p in projections], rotation=90, fontsize=7)
        ax.set_title(f"{design}\n{layers[layers.design == design].pattern.iloc[0]}", fontsize=8)
        ax.grid(False)
    np.atleast_1d(axes)[0].set_ylabel("decoder layer")
    fig.colorbar(image, ax=axes, label="prefill speedup vs the projection's mean over layers (%)")
    return fig


def decode_fetch(fetch: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for pattern in [p for p in PATTERN_ORDER if p in set(fetch.pattern)]:
        rows = fetch[fetch.pattern == pattern]
        color = PATTERN_COLORS[pattern]
        ax.plot(rows.batch_tokens, rows.weight_rows_fraction, marker="o", color=color, label=f"{pattern} (trace)")
        if pattern != "dense":
            ax.plot(rows.batch_tokens, rows.independent_tokens_fraction, linestyle=":", color=color, linewidth=1)
    ax.plot([], [], linestyle=":", color="gray", label="if tokens chose independently")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("decode batch size (tokens sharing one weight fetch)")
    ax.set_ylabel("fraction of weight rows fetched")
    ax.set_title("Decode weight fetch vs batch size (real masks from the traces)")
    ax.legend(fontsize=7)
    return fig


def sensitivity(table: pd.DataFrame) -> plt.Figure:
    """One pair's ratio of throughput per area against each parameter, one panel per phase."""
    a, b = table.pattern_a.iloc[0], table.pattern_b.iloc[0]
    phases = list(dict.fromkeys(table.phase))
    fig, axes = plt.subplots(1, len(phases), figsize=(5.5 * len(phases), 4.2), sharey=True)
    for ax, phase in zip(np.atleast_1d(axes), phases):
        part = table[table.phase == phase]
        for _, rows in part.groupby("parameter", sort=False):
            unit = rows.unit.iloc[0]
            values = ", ".join(f"{v:g}" for v in rows.x)
            label = rows.label.iloc[0] + (f" ({values} {unit}, over the preset)" if unit != "× preset" else "")
            ax.plot(rows.x_relative, rows.efficiency_ratio, marker="o", label=label)
        ax.axhline(1.0, color="black", linewidth=1)
        ax.text(0.02, 1.0, f" break-even: {b} as efficient as {a}", fontsize=7, va="bottom",
                transform=ax.get_yaxis_transform())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("parameter × its preset value")
        batch = part.batch.iloc[0]
        ax.set_title(f"{phase}, batch {batch}", fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel(f"{b} ÷ {a} throughput per area ({table.design_b.iloc[0]} ÷ "
                                      f"{table.design_a.iloc[0]})")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"Which parameter moves the {a}-vs-{b} decision (one at a time, others at preset)")
    return fig


def sensitivity_figures(table: pd.DataFrame) -> list[tuple[str, Callable[[], plt.Figure]]]:
    """One sensitivity figure per pattern pair of the table: (name, draw)."""
    if table is None or table.empty:
        return []
    jobs = []
    for _, part in table.groupby("pair", sort=False):
        slug = f"{parse_pattern(part.pattern_a.iloc[0]).slug}_vs_{parse_pattern(part.pattern_b.iloc[0]).slug}"
        jobs.append((f"sensitivity_{slug}", lambda part=part: sensitivity(part)))
    return jobs


def _series_label(operand: str, pattern: str, design: str) -> str:
    return f"{pattern} weight ({design})" if operand == "weight" else pattern


def deployment_latency(table: pd.DataFrame) -> plt.Figure:
    """Time to first token (prefill 2k) and decode tokens/s (B=64 at 2k) per target model and pattern."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    models = list(dict.fromkeys(table.model))
    series = list(dict.fromkeys(zip(table.operand, table.pattern, table.design)))
    width = 0.8 / max(len(series), 1)
    for ax, scenario, column, label in ((axes[0], "prefill 2k", "ttft_ms", "time to first token, 2k prompt (ms)"),
                                        (axes[1], "decode B=64 @ 2k", "tokens_per_s",
                                         "decode tokens/s, batch 64 at 2k context")):
        part = table[table.scenario == scenario]
        for index, (operand, pattern, design) in enumerate(series):
            values = [part[(part.model == m) & (part.pattern == pattern) & (part.design == design)][column]
                      for m in models]
            heights = [v.iloc[0] if len(v) else np.nan for v in values]
            ax.bar(np.arange(len(models)) + (index - (len(series) - 1) / 2) * width, heights, width,
                   color=PATTERN_COLORS.get(pattern, "gray"), hatch="//" if operand == "weight" else None,
                   edgecolor="white", label=_series_label(operand, pattern, design))
        ax.set_xticks(np.arange(len(models)), models, rotation=20, ha="right")
        ax.set(ylabel=label, yscale="log", title=scenario)
        _plain_log_ticks(ax.yaxis)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle("End to end on the target models (fewest devices that hold them)")
    fig.tight_layout()
    return fig


def deployment_decode_batch(table: pd.DataFrame) -> plt.Figure:
    """Decode speedup over the same design dense against batch (2k context), one panel per target model: where
    activation sparsity's decode benefit ends, against weight 2:4."""
    models = list(dict.fromkeys(table.model))
    columns = min(3, len(models))
    rows = -(-len(models) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False, sharey=True)
    decode = table[table.phase == "decode"]
    decode = decode[(decode.context_tokens == decode.context_tokens.min()) & (decode.pattern != "dense")]
    for ax, model in zip(axes.flat, models):
        part = decode[decode.model == model]
        for (operand, pattern, design), line in part.groupby(["operand", "pattern", "design"], sort=False):
            line = line.sort_values("batch")
            ax.plot(line.batch, line.e2e_speedup_vs_dense_same_design, "s--" if operand == "weight" else "o-",
                    color=PATTERN_COLORS.get(pattern, "gray"), label=_series_label(operand, pattern, design))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set(xscale="log", title=model, xlabel="decode batch (sequences)")
        ax.set_xticks(sorted(set(decode.batch)), [str(b) for b in sorted(set(decode.batch))])
        ax.minorticks_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("end-to-end decode speedup vs dense")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"Decode at {int(decode.context_tokens.min()) // 1024}k context: where the benefit ends")
    fig.tight_layout()
    return fig


def deployment_fronts(table: pd.DataFrame) -> plt.Figure:
    """Per target model: accuracy (Δ perplexity vs dense, %) against end-to-end prefill speedup over the baseline
    (left) and against area overhead (right), the Pareto points ringed."""
    part = table[table.scenario == "prefill 2k"]
    models = list(dict.fromkeys(part.model))
    fig, axes = plt.subplots(2, len(models), figsize=(3.2 * len(models), 6), squeeze=False)
    for index, model in enumerate(models):
        mine = part[part.model == model]
        for row_index, (x, flag, label) in enumerate((("e2e_speedup_vs_baseline", "pareto_speed",
                                                       "prefill 2k speedup vs baseline"),
                                                      ("area_overhead_pct", "pareto_area", "area overhead (%)"))):
            ax = axes[row_index][index]
            points = mine if x == "e2e_speedup_vs_baseline" else mine[mine.pattern != "dense"]
            for row in points.itertuples():
                ax.scatter(getattr(row, x), row.delta_pct_vs_dense, color=PATTERN_COLORS.get(row.pattern, "gray"),
                           marker="s" if row.operand == "weight" else "o", s=30, zorder=3)
                if getattr(row, flag):
                    ax.scatter(getattr(row, x), row.delta_pct_vs_dense, facecolors="none", edgecolors="black", s=90,
                               zorder=4)
            ax.set(xlabel=label + (f" ({points.area_level.iloc[0]})" if x == "area_overhead_pct" and len(points)
                                   else ""))
            if index == 0:
                ax.set_ylabel("perplexity vs dense (+%)")
            if row_index == 0:
                source = "own" if mine.accuracy.iloc[0].startswith("measured") else "proxy"
                ax.set_title(f"{model}\n(accuracy: {source})", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=PATTERN_COLORS[p], label=p)
               for p in PATTERN_ORDER if p in set(part.pattern)]
    handles += [plt.Line2D([], [], marker="s", linestyle="", color="gray", label="weight 2:4"),
                plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="black",
                           label="Pareto front")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _plain_log_ticks(axis, minor: bool = False) -> None:
    """Log-axis labels as plain numbers (60, not 6×10¹); ``minor`` labels the minor ticks too."""
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if minor else matplotlib.ticker.NullFormatter())


FIGURES: dict[str, tuple[str, Callable[..., plt.Figure]]] = {
    "accuracy_vs_area": ("tradeoff", accuracy_vs_area),
    "accuracy_vs_speedup": ("tradeoff", accuracy_vs_speedup),
    "speedup_by_pattern": ("performance", speedup_by_pattern),
    "area_breakdown": ("area_components", area_breakdown),
    "layer_heatmap": ("layers", layer_heatmap),
    "decode_weight_fetch": ("decode_fetch", decode_fetch),
    "deployment_latency": ("deployment", deployment_latency),
    "deployment_decode_batch": ("deployment", deployment_decode_batch),
    "deployment_fronts": ("deployment_fronts", deployment_fronts),
    "validation": ("validation", lambda table: _validation(table)),
}


def draw_all(tables: dict[str, pd.DataFrame], levels: list[str], directory: Path) -> list[Path]:
    """Every figure of the report under ``directory`` (drawn on the available cores); returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [(name, lambda table=table, draw=draw: draw(tables[table])) for name, (table, draw) in FIGURES.items()
            if table in tables and not tables[table].empty]  # a run without target models has no deployment
    jobs += sensitivity_figures(tables.get("sensitivity"))
    jobs.append(("bytes_per_level", lambda: bytes_per_level(tables["performance"], levels)))

    def draw_one(job) -> list[Path]:
        name, draw = job
        with plt.rc_context(STYLE):
            return save_figure(draw(), directory, name)

    return [path for paths in fork_map(draw_one, jobs) for path in paths]


def _validation(table: pd.DataFrame) -> plt.Figure:
    sparse_sets = [name for name in table.set.unique() if "measured_speedup_2of4" in table and
                   table[table.set == name].measured_speedup_2of4.notna().any()]
    fig, axes = plt.subplots(1, 1 + bool(sparse_sets), figsize=(6 + 5 * bool(sparse_sets), 5), squeeze=False)
    ax = axes[0][0]
    markers = {"dense": "o", "2:4": "s", "softmax": "^", "layernorm": "v"}
    for (name, kernel), part in table.groupby(["set", "kernel"], sort=False):
        ax.scatter(part.measured_us, part.predicted_us, marker=markers.get(kernel, "^"), alpha=0.8,
                   label=f"{name} ({kernel})")
    low, high = table.measured_us.min() / 1.5, table.measured_us.max() * 1.5
    line = np.geomspace(low, high, 50)
    ax.plot(line, line, color="black", linewidth=1)
    ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.25, label="±10 %")
    ax.set(xscale="log", yscale="log", xlabel="measured latency (µs)", ylabel="nmsim latency (µs)",
           title="Kernel latency (GEMM, softmax, layer norm): nmsim vs measured GPUs")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    if sparse_sets:
        ax = axes[0][1]
        for name in sparse_sets:
            part = table[(table.set == name) & (table.kernel == "2:4")]
            ax.plot(part.M, part.measured_speedup_2of4, "o-", label=f"{name}: measured")
            ax.plot(part.M, part.predicted_speedup_2of4, "s--", label=f"{name}: nmsim")
        ax.axhline(1.0, color="black", linewidth=1)
        ax.axhline(2.0, color="grey", linewidth=1, linestyle=":")
        ax.set(xscale="log", xlabel="M = N = K", ylabel="2:4 speedup over dense", title="2:4 sparse vs dense")
        _plain_log_ticks(ax.xaxis)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def validation_figure(table: pd.DataFrame, directory: Path) -> list[Path]:
    """``nmsim validate``'s figure (:mod:`nmsim.sim.validation` table): predicted vs measured latency (log-log,
    ±10 % band) and, for 2:4 sets, the speedup against M, measured and predicted; PNG and SVG, byte-stable."""
    with plt.rc_context(STYLE):
        return save_figure(_validation(table), directory, "validation")
