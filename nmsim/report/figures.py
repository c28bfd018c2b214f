"""The report's figures (matplotlib), each drawn from one tidy table and saved as PNG and SVG.

Axes carry units; speedups are over the same design run dense. Files are byte-for-byte reproducible: no dates in
the metadata and a fixed SVG id salt.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

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
    for index, (_, group) in enumerate(groups):
        names = ", ".join(dict.fromkeys(d.removeprefix("act-") for d in group.design))
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
    ax.margins(x=0.15)  # room for the labels
    ax.set_xlabel("datapath area over the dense datapath (%)")
    ax.set_ylabel("WikiText-2 perplexity (log scale, lower is better)")
    ax.set_title("Accuracy vs area (front among sparse designs; dense is the reference)", fontsize=9)
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
    ax.margins(x=0.15)
    ax.set_xlabel("prefill speedup over the same design run dense (×, 512 tokens)")
    ax.set_ylabel("WikiText-2 perplexity (log scale, lower is better)")
    ax.set_title("Accuracy vs speedup: filled = simulated, hollow = roofline; outlined = Pareto-optimal", fontsize=9)
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
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("Bytes moved per memory level (outermost first)")
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
    ax.legend(fontsize=7)
    return fig


def layer_heatmap(layers: pd.DataFrame) -> plt.Figure:
    designs = list(dict.fromkeys(layers.design))
    projections = list(dict.fromkeys(layers.projection))
    fig, axes = plt.subplots(1, len(designs), figsize=(2.2 * len(designs) + 1, 5.5), sharey=True)
    vmin, vmax = layers.speedup_vs_dense_same_design.min(), layers.speedup_vs_dense_same_design.max()
    image = None
    for ax, design in zip(np.atleast_1d(axes), designs):
        grid = layers[layers.design == design].pivot(index="layer", columns="projection",
                                                     values="speedup_vs_dense_same_design")[projections]
        image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(projections)), projections, rotation=90, fontsize=7)
        ax.set_title(f"{design}\n{layers[layers.design == design].pattern.iloc[0]}", fontsize=8)
        ax.grid(False)
    np.atleast_1d(axes)[0].set_ylabel("decoder layer")
    fig.colorbar(image, ax=axes, label="prefill speedup over dense (×)")
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
    phases = list(dict.fromkeys(table.phase))
    fig, axes = plt.subplots(1, len(phases), figsize=(5.5 * len(phases), 4.2), sharey=True)
    for ax, phase in zip(np.atleast_1d(axes), phases):
        part = table[table.phase == phase]
        for _, rows in part.groupby("parameter", sort=False):
            ax.plot(rows.x_relative, rows.efficiency_ratio, marker="o", label=rows.label.iloc[0])
        ax.axhline(1.0, color="black", linewidth=1)
        ax.text(0.02, 1.0, " break-even: 16:32 as efficient as 8:16", fontsize=7, va="bottom",
                transform=ax.get_yaxis_transform())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("parameter × its preset value")
        batch = part.batch.iloc[0]
        ax.set_title(f"{phase}, batch {batch}", fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("16:32 ÷ 8:16 throughput per datapath area")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Which parameter moves the 8:16-vs-16:32 decision (one at a time, others at preset)")
    return fig


FIGURES: dict[str, tuple[str, Callable[..., plt.Figure]]] = {
    "accuracy_vs_area": ("tradeoff", accuracy_vs_area),
    "accuracy_vs_speedup": ("tradeoff", accuracy_vs_speedup),
    "speedup_by_pattern": ("performance", speedup_by_pattern),
    "area_breakdown": ("area_components", area_breakdown),
    "layer_heatmap": ("layers", layer_heatmap),
    "decode_weight_fetch": ("decode_fetch", decode_fetch),
    "sensitivity_8of16_vs_16of32": ("sensitivity", sensitivity),
}


def draw_all(tables: dict[str, pd.DataFrame], levels: list[str], directory: Path) -> list[Path]:
    """Every figure of the report under ``directory`` (drawn on the available cores); returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [(name, lambda table=table, draw=draw: draw(tables[table])) for name, (table, draw) in FIGURES.items()]
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
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def validation_figure(table: pd.DataFrame, directory: Path) -> list[Path]:
    """``nmsim validate``'s figure (:mod:`nmsim.sim.validation` table): predicted vs measured latency (log-log,
    ±10 % band) and, for 2:4 sets, the speedup against M, measured and predicted; PNG and SVG, byte-stable."""
    with plt.rc_context(STYLE):
        return save_figure(_validation(table), directory, "validation")
