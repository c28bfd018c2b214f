"""The report's conclusion at deployment scale, in plain sentences generated from the deployment tables.

Every number is read from ``targets``, ``deployment``, ``deployment_band`` and ``deployment_fronts``
(:mod:`nmsim.report.deployment`); nothing is a fixed narrative. Per target: how fast each pattern makes prefill
and decode end to end, where activation sparsity's decode benefit ends against weight 2:4, what long context does,
which patterns are on the Pareto fronts, and how far the other traced model's statistics move the answer. Across
targets: how the 16:32-versus-8:16 choice changes with model size, and the levers that would change it.
"""

from __future__ import annotations

import math

import pandas as pd

from nmsim.report.deployment import BENEFIT_GONE, HEADLINE_DECODE_CONTEXT, HEADLINE_PREFILL, decode_curve


def _x(value: float) -> str:
    return f"{value:.3f}×"


def _names(rows: pd.DataFrame) -> str:
    names = [f"{r.pattern} ({r.design})" if r.operand == "weight" else r.pattern for r in rows.itertuples()]
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _gone(value: float) -> int | None:
    return None if math.isnan(value) else int(value)


def target_lines(tables: dict[str, pd.DataFrame], level: str) -> list[str]:
    """One paragraph per target model."""
    targets, table = tables["targets"], tables["deployment"]
    fronts, numbers = tables["deployment_fronts"], tables["deployment_summary"].set_index("model")
    lines = []
    for target in targets.itertuples():
        mine = table[table.model == target.model]
        sparse = mine[mine.pattern != "dense"]
        head = sparse[sparse.scenario == HEADLINE_PREFILL].sort_values("e2e_speedup_vs_dense_same_design",
                                                                        ascending=False, kind="stable")
        dense = mine[(mine.pattern == "dense") & (mine.scenario == HEADLINE_PREFILL)]
        parts = [f"**{target.model}** ({target.params_B:.1f} B parameters; mask statistics {target.statistics}"
                 + (f", band from {target.band_from}" if target.band_from else "") + f"; accuracy {target.accuracy})"]
        if len(head) and len(dense):
            d = dense.iloc[0]
            listed = ", ".join(f"{r.pattern}{' weight' if r.operand == 'weight' else ''} "
                               f"{_x(r.e2e_speedup_vs_dense_same_design)}" for r in head.itertuples())
            parts.append(f"{HEADLINE_PREFILL} (time to first token {d.ttft_ms:.1f} ms dense on {d.devices} "
                         f"device{'s' if d.devices > 1 else ''}): {listed}")
        activation = sparse[(sparse.operand == "activation") & (sparse.pattern == "8:16")]
        weight = sparse[sparse.operand == "weight"]
        if len(activation):
            design = activation.design.iloc[0]
            curve = decode_curve(mine, design, "8:16", HEADLINE_DECODE_CONTEXT)
            speeds = "/".join(f"{v:.2f}" for v in curve.e2e_speedup_vs_dense_same_design)
            batches = "/".join(str(b) for b in curve.batch)
            sentence = f"decode at 2k, B={batches}: 8:16 {speeds}×"
            if len(weight):
                wdesign = weight.design.iloc[0]
                wcurve = decode_curve(mine, wdesign, weight.pattern.iloc[0], HEADLINE_DECODE_CONTEXT)
                wspeeds = "/".join(f"{v:.2f}" for v in wcurve.e2e_speedup_vs_dense_same_design)
                sentence += f", weight {weight.pattern.iloc[0]} ({wdesign}) {wspeeds}×"
            gone = _gone(numbers.loc[target.model, "decode_benefit_gone_batch"])
            sentence += (f"; activation 8:16's decode benefit is gone at B={gone} (≤ {BENEFIT_GONE:.2f}×: the union "
                         "of a batch's masks needs almost every weight row)" if gone
                         else "; activation 8:16 keeps a decode benefit at every batch")
            long = decode_curve(mine, design, "8:16", int(mine.context_tokens.max()))
            if len(long) and len(curve):
                sentence += (f"; at {int(long.context_tokens.iloc[0]) // 1024}k context B=1 decodes at "
                             f"{_x(long.e2e_speedup_vs_dense_same_design.iloc[0])} (2k: "
                             f"{_x(curve.e2e_speedup_vs_dense_same_design.iloc[0])})")
            parts.append(sentence)
        front = fronts[(fronts.model == target.model) & (fronts.scenario == HEADLINE_PREFILL)] if len(fronts) \
            else fronts
        if len(front):
            parts.append(f"on the accuracy vs end-to-end speed front ({HEADLINE_PREFILL}): "
                         f"{_names(front[front.pareto_speed])}; on the accuracy vs {level} area front: "
                         f"{_names(front[front.pareto_area])}")
        shift = numbers.loc[target.model, "band_max_shift"]
        if not math.isnan(shift):
            parts.append(f"with {target.band_from}'s statistics instead, no end-to-end speedup above moves by more "
                         f"than {shift:.3f}")
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def scale_lines(tables: dict[str, pd.DataFrame], level: str) -> list[str]:
    """How the 8:16-versus-16:32 choice changes from the smallest to the largest target, and what would change it."""
    numbers = tables["deployment_summary"]
    if "efficiency_ratio" not in numbers:
        return []
    rows = numbers[numbers.efficiency_ratio.notna()].sort_values("params_B", kind="stable")
    if rows.empty:
        return []
    small, large = rows.iloc[0], rows.iloc[-1]

    def verdict(row) -> str:
        gain = row.efficiency_gain_pct
        return (f"16:32 is {gain:.1f} % more efficient per {level} mm² than 8:16" if gain >= 0 else
                f"16:32 is {-gain:.1f} % less efficient per {level} mm² than 8:16")

    one = small.model == large.model
    scale = f"at {large.model} ({large.params_B:.1f} B) {verdict(large)}" if one else \
        f"at {small.model} ({small.params_B:.1f} B) {verdict(small)}; at {large.model} ({large.params_B:.1f} B) " \
        f"{verdict(large)}"
    gap = f"{large.accuracy_gap_pct_points:.2f} percentage points smaller than 8:16's" + (
        f" at {large.model}" if one else f" at {small.model} and {large.accuracy_gap_pct_points:.2f} at {large.model}")
    lines = [f"- **Across scales** ({HEADLINE_PREFILL}, end to end): {scale}. 16:32's perplexity increase over "
             f"dense is {gap} (proxies where the targets say so)."]
    levers = []
    gone = _gone(large.decode_benefit_gone_batch)
    if gone:
        levers.append(f"batch: at B={gone} activation 8:16's decode benefit on {large.model} is gone "
                      f"(≤ {BENEFIT_GONE:.2f}×), so batched serving gains from activation sparsity mostly in prefill")
    if large.efficiency_gain_pct < 0:
        levers.append(f"accuracy: 16:32 pays for itself only if its {large.accuracy_gap_pct_points:.2f}-point smaller "
                      f"perplexity increase is worth {-large.efficiency_gain_pct:.1f} % of throughput per {level} mm²")
    else:
        levers.append(_area_lever(large, level))
    if not one:
        levers.append(f"model size: 16:32 over 8:16 per {level} mm² is {small.efficiency_ratio:.3f} at {small.model} "
                      f"and {large.efficiency_ratio:.3f} at {large.model}")
    lines.append("- **What would change it**: " + "; ".join(levers) + ".")
    return lines


def _area_lever(row, level: str) -> str:
    """Why the area does not stop 16:32 (it is as efficient as 8:16 or more), from the two designs' overheads."""
    areas = f"+{row.area_overhead_pct_16of32:.2f} % vs +{row.area_overhead_pct_8of16:.2f} % {level} area"
    if row.area_overhead_pct_16of32 <= row.area_overhead_pct_8of16:
        return f"area: 16:32's design is the smaller one here ({areas}), so area does not favour 8:16"
    tighter = "a datapath-level budget or a smaller die" if level != "datapath" else \
        "a design whose selection front end is a larger share of the datapath"
    return (f"area: 16:32's larger front end ({areas}) is outweighed by its speed at {level} level; {tighter} "
            "would make it count")


def _targets_shown(targets: pd.DataFrame) -> pd.DataFrame:
    shown = targets.copy()
    shown["params_B"] = [f"{v:.2f}" for v in shown.params_B]
    return shown


def deployment_section(tables: dict[str, pd.DataFrame], level: str) -> list[str]:
    """The report's deployment section (empty without target models)."""
    if "targets" not in tables or tables["targets"].empty:
        return []
    from nmsim.report.render import _table  # one table renderer for the report

    summary = tables["deployment"].copy()
    summary = summary[summary.scenario.isin([HEADLINE_PREFILL, "decode B=1 @ 2k", "decode B=64 @ 2k",
                                             "decode B=1 @ 32k"])]
    shown = summary[["model", "design", "pattern", "scenario", "devices", "ttft_ms", "tpot_ms", "tokens_per_s",
                     "energy_per_token_mJ", "e2e_speedup_vs_dense_same_design"]].copy()
    for column in ("ttft_ms", "tpot_ms"):
        shown[column] = [("–" if math.isnan(v) else f"{v:.2f}") for v in shown[column]]
    shown["tokens_per_s"] = [f"{v:,.0f}" for v in shown.tokens_per_s]
    shown["energy_per_token_mJ"] = [f"{v:.3g}" for v in shown.energy_per_token_mJ]
    shown["e2e_speedup_vs_dense_same_design"] = [f"{v:.3f}" for v in shown.e2e_speedup_vs_dense_same_design]
    return ["## At deployment scale", "",
            ("The target models end to end (every op of a step: attention, norms, the KV cache, communication, not "
             "only the linear layers) in the registry's scenarios, on the fewest tensor-parallel devices that hold "
             "the weights and the KV cache. Speedups are over the same design dense; energy counts arithmetic, "
             "memory traffic and on-chip wires (no static power). Mask statistics and accuracy say where they come "
             "from: a model without its own trace or accuracy rows uses a traced model's, labelled."), "",
            *target_lines(tables, level), *scale_lines(tables, level), "",
            _table(_targets_shown(tables["targets"])), "", _table(shown), "",
            "Every scenario is in the `deployment` table, the statistics band in `deployment_band`, the fronts in "
            "`deployment_fronts`.", ""]
