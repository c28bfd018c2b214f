"""The accuracy study built on :mod:`nmsim.accuracy.study`: headline methods chosen from a finished grid, and the summary.

- :func:`headline_grid`: dense, the activation method with the lowest perplexity for each pattern, and every
  weight-pruning baseline of a finished table, to evaluate again on more tokens or another model.
- :func:`summary_markdown`: per method, the seed's figure (PPL_N:M − PPL_dense) / (PPL_16:32 − PPL_dense) for
  2:4, 4:8 and 8:16 (the seed reports about 2.7 for 2:4 on 7–8B models), the gap of 16:32 to unstructured 50 %,
  activation against weight pruning at matched sparsity, and (:func:`noise_checks`) whether 8:16 vs 16:32 and
  activation vs weight pruning at 2:4 differ beyond the noise of the windows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from nmsim.accuracy.study import Method
from nmsim.accuracy.table import NOT_APPLICABLE, paired_interval, read_rows, read_windows, row_windows
from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.sparsify.linear import SparsityConfig
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.targets import make_targets
from nmsim.sparsify.weight_pruning import WeightPruningConfig

RATIO_PATTERNS = ("2:4", "4:8", "8:16")
REFERENCE = "16:32"
BEST = "best per pattern"
RATIO_COLUMNS = ["criterion", "mitigation", "targets", *(f"ppl_{p}" for p in (*RATIO_PATTERNS, REFERENCE,
                                                                              "unstructured:0.5")),
                 *(f"ratio_{p}" for p in RATIO_PATTERNS)]
MATCHED_COLUMNS = ["pattern", "best_activation", "activation_ppl", "best_weight", "weight_ppl", "activation_better"]


def _table(path: Path) -> pd.DataFrame:
    """The rows of the finished (input) table at ``path``, checked (:func:`nmsim.accuracy.table.read_rows`)."""
    path = Path(path)
    if not path.is_file():
        raise NmsimError(f"{path}: no such accuracy table; expected a CSV that `nmsim eval --out PREFIX` wrote "
                         "(e.g. reports/study_smollm2_16k.csv)")
    rows = read_rows(path)
    if not rows:
        raise NmsimError(f"{path}: no finished rows (a header only); expected the rows of a finished grid, as "
                         "`nmsim eval --out PREFIX` writes them; run the grid first")
    return pd.DataFrame(rows)


def headline_grid(path: str | Path) -> list[Method]:
    """Dense, the best activation method per pattern and every weight baseline of the table at ``path``."""
    table = _table(path)
    grid: list[Method] = [SparsityConfig(Pattern.dense())]
    activation = table[table.operand == "activation"]
    for _, group in activation.groupby("pattern", sort=False):
        best = group.loc[group.perplexity.idxmin()]
        grid.append(SparsityConfig(parse_pattern(best.pattern), best.criterion, parse_mitigation(best.mitigation),
                                   make_targets(best.targets)))
    for row in table[table.operand == "weight"].itertuples():
        grid.append(WeightPruningConfig(parse_pattern(row.pattern), row.criterion, make_targets(row.targets)))
    return grid


def _ratio(ppl: dict[str, float], dense: float, pattern: str) -> float:
    if pattern not in ppl or REFERENCE not in ppl or ppl[REFERENCE] == dense or math.isnan(dense):
        return math.nan
    return (ppl[pattern] - dense) / (ppl[REFERENCE] - dense)


def ratio_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per activation method: perplexity per pattern and the seed's ratios; a last row takes, per pattern, the best
    method pruning every layer (``criterion`` "best per pattern")."""
    dense_rows = table[table.pattern == "dense"].perplexity
    dense = float(dense_rows.iloc[0]) if len(dense_rows) else math.nan  # no dense row: no ratios
    rows = []
    methods = table[table.operand == "activation"].groupby(["criterion", "mitigation", "targets"], sort=False)
    for (criterion, mitigation, targets), group in methods:
        ppl = dict(zip(group.pattern, group.perplexity))
        row = {"criterion": criterion, "mitigation": mitigation, "targets": targets}
        row.update({f"ppl_{p}": ppl.get(p, math.nan) for p in (*RATIO_PATTERNS, REFERENCE, "unstructured:0.5")})
        row.update({f"ratio_{p}": round(_ratio(ppl, dense, p), 3) for p in RATIO_PATTERNS})
        rows.append(row)
    activation = table[(table.operand == "activation") & (table.targets == "all")]
    best = activation.groupby("pattern").perplexity.min().to_dict()
    if best:
        row = {"criterion": BEST, "mitigation": NOT_APPLICABLE, "targets": "all"}
        row.update({f"ppl_{p}": best.get(p, math.nan) for p in (*RATIO_PATTERNS, REFERENCE, "unstructured:0.5")})
        row.update({f"ratio_{p}": round(_ratio(best, dense, p), 3) for p in RATIO_PATTERNS})
        rows.append(row)
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


def matched_sparsity(table: pd.DataFrame) -> pd.DataFrame:
    """Best activation method against best weight baseline for each pattern both were run at."""
    rows = []
    for pattern, group in table[table.operand != NOT_APPLICABLE].groupby("pattern", sort=False):
        best = {operand: part.loc[part.perplexity.idxmin()] for operand, part in group.groupby("operand")}
        if {"activation", "weight"} <= set(best):
            act, weight = best["activation"], best["weight"]
            rows.append({"pattern": pattern,
                         "best_activation": f"{act.criterion} / {act.mitigation}", "activation_ppl": act.perplexity,
                         "best_weight": weight.criterion, "weight_ppl": weight.perplexity,
                         "activation_better": bool(act.perplexity < weight.perplexity)})
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)


def claims(table: pd.DataFrame) -> list[str]:
    """The seed's claims checked on ``table``, one sentence each, whatever the numbers show."""
    lines = []
    ratios = ratio_table(table)
    methods = ratios[ratios.criterion != BEST] if not ratios.empty else ratios
    if not methods.empty and methods["ratio_2:4"].notna().any():
        values = methods["ratio_2:4"].dropna()
        lines.append(f"2:4 vs 16:32: (PPL_2:4 − dense) / (PPL_16:32 − dense) is {values.min():.2f} to "
                     f"{values.max():.2f} (median {values.median():.2f}) over {len(values)} methods; the seed reports "
                     "about 2.7 for 7–8B models.")
        eight = methods["ratio_8:16"].dropna()
        lines.append(f"8:16: its perplexity increase is {eight.min():.2f} to {eight.max():.2f} times that of 16:32.")
    best = ratios[ratios.criterion == BEST] if not ratios.empty else ratios
    if not best.empty and best[[f"ratio_{p}" for p in RATIO_PATTERNS]].notna().any(axis=None):
        row = best.iloc[0]
        lines.append("With the best method per pattern, the ratio to 16:32 is "
                     + ", ".join(f"{row[f'ratio_{p}']:.2f} for {p}" for p in RATIO_PATTERNS
                                 if not math.isnan(row[f"ratio_{p}"])) + ".")
    dense = table[table.pattern == "dense"].perplexity
    if not methods.empty and len(dense):
        gap = ((ratios[f"ppl_{REFERENCE}"] - ratios["ppl_unstructured:0.5"])
               / (ratios["ppl_unstructured:0.5"] - float(dense.iloc[0]))).dropna()
        if len(gap):
            span = f"{100 * gap.min():.0f} %" if round(100 * gap.min()) == round(100 * gap.max()) else \
                f"{100 * gap.min():.0f} to {100 * gap.max():.0f} %"
            lines.append(f"16:32 vs unstructured 50 %: the 16:32 perplexity increase is {span} larger than the "
                         "unstructured one (the seed: 16:32 comes close to unstructured).")
    matched = matched_sparsity(table)
    for row in matched.itertuples():
        verdict = "beats" if row.activation_better else "does not beat"
        lines.append(f"At {row.pattern}, the best activation method ({row.best_activation}, PPL "
                     f"{row.activation_ppl}) {verdict} the best weight baseline ({row.best_weight}, PPL "
                     f"{row.weight_ppl}) (the seed: activation pruning wins at matched sparsity).")
    return lines


def _method(row) -> str:
    return f"{row.pattern} {row.operand} {row.criterion} / {row.mitigation}"


def noise_checks(table: pd.DataFrame, windows: pd.DataFrame) -> list[str]:
    """8:16 vs 16:32 (the best activation method each, every layer pruned) and activation vs weight pruning at 2:4
    (the best of each, as :func:`matched_sparsity`): Δ perplexity with its paired bootstrap 95 % interval over the
    windows (:mod:`nmsim.accuracy.bootstrap`) and whether the interval excludes 0."""
    activation = table[(table.operand == "activation") & (table.targets == "all")]
    best = {p: part.loc[part.perplexity.idxmin()] for p, part in activation.groupby("pattern")}
    two_four = {o: part.loc[part.perplexity.idxmin()] for o, part in table[table.pattern == "2:4"].groupby("operand")}
    pairs = []
    if {"8:16", REFERENCE} <= set(best):
        pairs.append(("8:16 vs 16:32 (best activation method each)", best[REFERENCE], best["8:16"]))
    if {"activation", "weight"} <= set(two_four):
        pairs.append(("Activation vs weight pruning at 2:4 (best each)", two_four["weight"], two_four["activation"]))
    per_row = row_windows(windows)
    lines = []
    for what, base, other in pairs:
        interval = paired_interval(per_row, base.to_dict(), other.to_dict())
        names = f"{_method(other)} minus {_method(base)}"
        if interval is None or math.isnan(interval.low):
            lines.append(f"{what}: Δ perplexity {other.perplexity - base.perplexity:+.2f} ({names}); no interval: the "
                         "table has no per-window NLLs of both rows (evaluated before they were kept; --recompute "
                         "keeps them).")
            continue
        verdict = "beyond noise" if interval.beyond_noise else "within noise"
        lines.append(f"{what}: Δ perplexity {interval.delta_ppl:+.2f} (95 % CI {interval.low:+.2f} to "
                     f"{interval.high:+.2f}; {interval.delta_pct:+.1f} %, CI {interval.pct_low:+.1f} to "
                     f"{interval.pct_high:+.1f} %) over {interval.windows} windows ({names}): {verdict}.")
    return lines


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    header = "| " + " | ".join(frame.columns) + " |\n| " + " | ".join("---" for _ in frame.columns) + " |\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def _settings(path: Path) -> str:
    """The evaluation windows and the learnable recipe, from the header of the table's Markdown file."""
    markdown = path.with_suffix(".md")
    if not markdown.exists():
        return ""
    wanted = ("- windows:", "- learnable recipe:")
    lines = [line for line in markdown.read_text(encoding="utf-8").splitlines() if line.startswith(wanted)]
    return "".join(f"{line}\n" for line in lines) + ("\n" if lines else "")


def overview(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Sentences across the finished tables (name → table) with the best method per pattern: where the models
    agree with the seed and where they do not."""
    ratio, eight, gap, wins, total = {}, {}, {}, 0, 0
    for name, table in tables.items():
        best = ratio_table(table)
        best = best[best.criterion == BEST]
        dense = table[table.pattern == "dense"].perplexity
        if best.empty or not len(dense):
            continue
        row = best.iloc[0]
        ratio[name], eight[name] = row["ratio_2:4"], row["ratio_8:16"]
        gap[name] = (row[f"ppl_{REFERENCE}"] - row["ppl_unstructured:0.5"]) / (row["ppl_unstructured:0.5"]
                                                                                - float(dense.iloc[0]))
        matched = matched_sparsity(table)
        wins, total = wins + int(matched.activation_better.sum()), total + len(matched)
    lines = []
    known = {k: v for k, v in ratio.items() if not math.isnan(v)}
    if known:
        listed = ", ".join(f"{v:.2f} ({k})" for k, v in known.items())
        side = "above" if min(known.values()) > 2.7 else "below" if max(known.values()) < 2.7 else "around"
        lines.append(f"(PPL_2:4 − dense) / (PPL_16:32 − dense), best method per pattern: {listed}; {side} the seed's "
                     "about 2.7 for 7–8B models" + (": on these small models the step from 16:32 down to 2:4 costs "
                                                   "relatively more." if side == "above" else "."))
    known = {k: v for k, v in eight.items() if not math.isnan(v)}
    if known:
        lines.append(f"8:16 loses {_span(known.values(), '{:.2f}')}× the perplexity 16:32 loses: "
                     "most of 16:32's quality at half its group size.")
    known = {k: v for k, v in gap.items() if not math.isnan(v)}
    if known:
        lines.append(f"16:32's perplexity increase is {_span([100 * v for v in known.values()], '{:.0f}')} % "
                     "larger than unstructured 50 %'s" + (" on every table" if len(known) > 1 else "")
                     + (": unlike the seed's 7–8B models, 16:32 is not close to unstructured here."
                        if min(known.values()) > 0.2 else "."))
    if total:
        lines.append(f"Activation pruning beats the best weight baseline (Wanda or magnitude) at {wins} of {total} "
                     "matched-sparsity comparisons" + (", as the seed claims." if wins == total else "."))
    return lines


def summary_markdown(paths: list[str | Path]) -> str:
    """The study summary for each finished table in ``paths`` (a missing or empty table is an error naming it)."""
    parts = ["# Accuracy study summary\n",
             "Ratio = (PPL_N:M − PPL_dense) / (PPL_16:32 − PPL_dense), per activation method (the seed paper reports "
             "about 2.7 for 2:4 on 7–8B models). Tables: "
             + ", ".join(f"`{p}`" for p in paths) + ".\n",
             "\nZero-shot tasks (ARC, BoolQ, HellaSwag, PIQA, WinoGrande) are not run: their data is not available "
             "offline on these machines (only WikiText-2 is), and nmsim downloads nothing at run time.\n"]
    finished = {Path(p): _table(Path(p)) for p in paths}
    lines = overview({path.stem: table for path, table in finished.items()})
    if lines:
        parts.append("\n## Across the tables\n\n" + "".join(f"- {line}\n" for line in lines))
    for path, table in finished.items():
        model = table.model.iloc[0]
        tokens = ", ".join(str(t) for t in sorted(table.tokens_evaluated.unique()))
        parts.append(f"\n## {path.name}: {model}, {tokens} test tokens\n\n")
        dense = table[table.pattern == "dense"].perplexity
        parts.append(f"Dense perplexity: {dense.iloc[0] if len(dense) else 'not run'}.\n\n")
        parts.append(_settings(path))
        parts.append("### Ratios per activation method\n\n" + _markdown(ratio_table(table)) + "\n")
        matched = matched_sparsity(table)
        parts.append("### Activation vs weight pruning at matched sparsity\n\n" + (
            _markdown(matched) if len(matched) else "No weight baselines in this table (or none at a pattern an "
                                                    "activation method was run at): nothing to compare.\n"))
        parts.append("\n### Against the seed's claims\n\n" + "".join(f"- {line}\n" for line in claims(table)))
        noise = noise_checks(table, read_windows(path))
        if noise:
            parts.append("\n### Beyond noise? Paired bootstrap over the windows\n\n"
                         + "".join(f"- {line}\n" for line in noise))
    return "".join(parts)


def _span(values, spelling: str) -> str:
    """'1.21–1.25', or one value when they round alike."""
    low, high = spelling.format(min(values)), spelling.format(max(values))
    return low if low == high else f"{low}–{high}"
