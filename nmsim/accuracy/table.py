"""Accuracy tables: the columns, reading finished rows back, and writing CSV + Markdown (+ JSON) atomically.

Torch-free: the report reads these tables without loading the pruning side. One row per (model, pattern, operand,
criterion, mitigation, targets, sequence length, tokens, data, dtype): :data:`KEY_COLUMNS` is what makes a row the
same row. The device is not part of it (the same dtype on a CPU or a GPU is the same measurement up to float noise);
a table's Markdown header names it. Tables written before dtypes were chosen have no dtype column: their rows are
float32.

Beside ``<prefix>.csv``, ``<prefix>.windows.csv`` keeps every row's per-window sums (long format: the key columns,
then :data:`WINDOW_VALUES`); the Δ-vs-dense confidence interval of a row (paired bootstrap,
:mod:`nmsim.accuracy.bootstrap`) comes from it. Tables written before the fidelity metrics and the windows existed
still read: those columns are NaN (not measured).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from nmsim.accuracy.bootstrap import paired_delta
from nmsim.errors import NmsimError
from nmsim.io import atomic_write_text
from nmsim.patterns import Pattern, parse_pattern

COLUMNS = [
    "model",
    "pattern",
    "density",
    "operand",
    "criterion",
    "mitigation",
    "targets",
    "seqlen_tokens",
    "tokens_evaluated",
    "perplexity",
    "delta_ppl_vs_dense",
    "delta_pct_vs_dense",
    "delta_ppl_ci_low",  # 95 % paired bootstrap interval of delta_ppl_vs_dense over the windows
    "delta_ppl_ci_high",
    "kl_mean_nats",  # KL(dense ‖ pruned) per scored token (nmsim.accuracy.fidelity)
    "top1_agreement",  # fraction of scored tokens whose argmax is dense's
    "greedy_agreement_tokens",  # mean over the prompts of tokens generated before diverging from dense
    "data",
    "dtype",
]
KEY_COLUMNS = ["model", "pattern", "operand", "criterion", "mitigation", "targets", "seqlen_tokens", "tokens_evaluated",
               "data", "dtype"]
DEFAULT_DTYPE = "float32"  # the dtype of rows from tables without the column
NOT_APPLICABLE = "-"  # operand, criterion, mitigation and targets of the dense row
FIDELITY_COLUMNS = ["kl_mean_nats", "top1_agreement", "greedy_agreement_tokens"]
OPTIONAL_COLUMNS = ["delta_ppl_ci_low", "delta_ppl_ci_high", *FIDELITY_COLUMNS]  # absent from older tables
WINDOW_VALUES = ["window", "tokens", "nll_sum_nats", "kl_sum_nats", "top1_matches"]  # per row and window


def windows_path(csv_path: Path) -> Path:
    """The per-window sidecar of a table: ``<prefix>.windows.csv`` beside ``<prefix>.csv``."""
    return Path(csv_path).with_suffix(".windows.csv")


def _with_deltas(rows: list[dict], windows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Attach Δ vs the dense row of the same model, seqlen, token count, data and dtype, and its interval where
    both rows' windows are in ``windows``."""
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if not c.startswith("delta_")])
    table["dtype"] = table["dtype"].astype(object).fillna(DEFAULT_DTYPE)  # rows made before dtypes: float32
    same = ["model", "seqlen_tokens", "tokens_evaluated", "data", "dtype"]
    dense = table[table["pattern"] == "dense"].set_index(same)["perplexity"]
    base = table.set_index(same).index.map(lambda key: dense.get(key, math.nan))
    table["delta_ppl_vs_dense"] = (table["perplexity"] - base.to_numpy()).round(4)
    table["delta_pct_vs_dense"] = (100 * (table["perplexity"] / base.to_numpy() - 1)).round(2)
    low, high = [], []
    per_row = row_windows(windows)
    dense_labels = method_labels(Pattern.dense(), "", "", "", "")
    for row in table.to_dict("records"):
        interval = paired_interval(per_row, {**row, **dense_labels}, row)
        low.append(round(interval.low, 4) if interval else math.nan)
        high.append(round(interval.high, 4) if interval else math.nan)
    table["delta_ppl_ci_low"], table["delta_ppl_ci_high"] = low, high
    return table[COLUMNS]


def row_windows(windows: pd.DataFrame | None) -> dict[tuple, pd.DataFrame]:
    """The sidecar split by row key, each part in window order."""
    if windows is None or windows.empty:
        return {}
    keyed = windows.assign(**{c: windows[c].astype(str) for c in KEY_COLUMNS})
    return {key: part.sort_values("window") for key, part in keyed.groupby(KEY_COLUMNS, sort=False)}


def paired_interval(per_row: dict[tuple, pd.DataFrame], base: dict, other: dict):
    """The paired bootstrap :class:`~nmsim.accuracy.bootstrap.DeltaInterval` of PPL(other) − PPL(base), or None
    unless both rows' windows are known and are the same windows."""
    a, b = per_row.get(row_key(base)), per_row.get(row_key(other))
    if a is None or b is None or not (a["window"].tolist() == b["window"].tolist()
                                      and a["tokens"].tolist() == b["tokens"].tolist()):
        return None
    return paired_delta(a["nll_sum_nats"].to_numpy(), b["nll_sum_nats"].to_numpy(), a["tokens"].to_numpy())


def _label(row) -> str:
    return "dense" if row.pattern == "dense" else f"{row.operand} {row.pattern} {row.criterion} {row.mitigation} " \
        f"{row.targets}"


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _gaps(table: pd.DataFrame) -> str:
    """Which rows lack the fidelity metrics or the interval (nan in the table), in words."""
    notes = []
    for columns, why in ((FIDELITY_COLUMNS, "not measured (evaluated before these metrics existed, or with "
                                            "--no-fidelity; --recompute measures them)"),
                         (["delta_ppl_ci_low"], "unknown (no per-window NLLs for the row or its dense row)")):
        lacking = table[table[columns].isna().all(axis=1)]
        if len(lacking):
            which = f"all {len(table)} rows" if len(lacking) == len(table) else \
                "; ".join(_label(r) for r in lacking.itertuples())
            notes.append(f"- {', '.join(columns if len(columns) > 1 else ['delta_ppl_ci_low/high'])} {why}: "
                         f"{which}.\n")
    return "\n" + "".join(notes) if notes else ""


def write_tables(rows: list[dict], out_prefix: Path, json_path: Path | None, meta: dict,
                 windows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write ``<prefix>.csv`` and ``<prefix>.md`` (and JSON if asked) atomically; return the table. ``windows``
    (columns :data:`KEY_COLUMNS` + :data:`WINDOW_VALUES`) is written first, as the sidecar, and gives the
    intervals."""
    if windows is not None:
        atomic_write_text(windows_path(out_prefix.with_suffix(".csv")),
                          windows[KEY_COLUMNS + WINDOW_VALUES].to_csv(index=False, lineterminator="\n"))
    table = _with_deltas(rows, windows)
    atomic_write_text(out_prefix.with_suffix(".csv"), table.to_csv(index=False, lineterminator="\n"))
    title = "# Accuracy: WikiText-2 perplexity under N:M activation (and weight) pruning\n\n"
    details = "".join(f"- {k}: {v}\n" for k, v in meta.items())
    atomic_write_text(out_prefix.with_suffix(".md"), title + details + "\n" + _markdown(table) + _gaps(table))
    if json_path is not None:
        payload = {"meta": meta, "rows": json.loads(table.to_json(orient="records"))}
        atomic_write_text(json_path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return table


def read_rows(csv_path: Path) -> list[dict]:
    """Rows already finished (from a previous, possibly interrupted run)."""
    if not csv_path.exists():
        return []
    try:
        table = pd.read_csv(csv_path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise NmsimError(f"{csv_path}: cannot read the existing results table ({exc}); move it away to start over")
    if "operand" not in table.columns and "pattern" in table.columns:  # written before weight baselines existed
        table.insert(3, "operand", [NOT_APPLICABLE if p == "dense" else "activation" for p in table["pattern"]])
    if "dtype" not in table.columns:  # written before dtypes were chosen: evaluated in float32
        table["dtype"] = DEFAULT_DTYPE
    missing = [c for c in COLUMNS if c not in table.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise NmsimError(f"{csv_path}: not an nmsim accuracy table (missing columns {', '.join(missing)})")
    try:  # patterns become their canonical spelling at the boundary (m16n8 and 8:16 are one row key)
        table["pattern"] = [str(parse_pattern(p)) for p in table["pattern"]]
    except NmsimError as exc:
        raise NmsimError(f"{csv_path}: column pattern: {exc}") from None
    for column in FIDELITY_COLUMNS:  # NaN: not measured (an older table, or --no-fidelity)
        table[column] = _numbers(table[column], csv_path, column) if column in table.columns else math.nan
    return table[[c for c in COLUMNS if not c.startswith("delta_")]].to_dict("records")


def _numbers(values: pd.Series, path: Path, column: str) -> pd.Series:
    """A column read with ``keep_default_na=False`` as floats, the empty cells NaN."""
    try:
        return pd.to_numeric(values.replace("", math.nan))
    except (ValueError, TypeError) as exc:
        raise NmsimError(f"{path}: column {column}: {exc}") from None


def read_windows(csv_path: Path) -> pd.DataFrame:
    """The per-window sidecar of the table at ``csv_path`` (no rows if there is none)."""
    path = windows_path(csv_path)
    if not path.exists():
        return pd.DataFrame(columns=KEY_COLUMNS + WINDOW_VALUES)
    try:
        frame = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise NmsimError(f"{path}: cannot read the per-window table ({exc}); move it away to start over")
    missing = [c for c in KEY_COLUMNS + WINDOW_VALUES if c not in frame.columns]
    if missing:
        raise NmsimError(f"{path}: not an nmsim per-window table (missing columns {', '.join(missing)})")
    for column in WINDOW_VALUES:
        frame[column] = _numbers(frame[column], path, column)
    try:
        frame["pattern"] = [str(parse_pattern(p)) for p in frame["pattern"]]
    except NmsimError as exc:
        raise NmsimError(f"{path}: column pattern: {exc}") from None
    return frame[KEY_COLUMNS + WINDOW_VALUES]


def window_frame(row: dict, nll_sum_nats, tokens: int, kl_sum_nats=None, top1_matches=None) -> pd.DataFrame:
    """One row's per-window sums as sidecar rows. nll_sum_nats, kl_sum_nats, top1_matches: [W]; tokens: scored
    tokens per window. KL and top-1 are NaN where not measured."""
    count = len(nll_sum_nats)
    frame = pd.DataFrame({c: [row.get(c, DEFAULT_DTYPE) if c == "dtype" else row[c]] * count for c in KEY_COLUMNS})
    frame["window"] = range(count)
    frame["tokens"] = tokens
    frame["nll_sum_nats"] = nll_sum_nats
    frame["kl_sum_nats"] = math.nan if kl_sum_nats is None else kl_sum_nats
    frame["top1_matches"] = math.nan if top1_matches is None else top1_matches
    return frame


def row_key(row: dict) -> tuple:
    return tuple(str(row[c]) for c in KEY_COLUMNS)


def method_labels(pattern: Pattern, operand: str, criterion: str, mitigation: str, targets: str) -> dict[str, object]:
    """The method columns of a table row (the dense row has ``-`` for everything but its pattern)."""
    dense = pattern.kind == "dense"
    return {
        "pattern": str(pattern),
        "density": round(pattern.density, 6),
        "operand": NOT_APPLICABLE if dense else operand,
        "criterion": NOT_APPLICABLE if dense else criterion,
        "mitigation": NOT_APPLICABLE if dense else mitigation,
        "targets": NOT_APPLICABLE if dense else targets,
    }


def expected_tokens(seqlen: int, max_tokens: int) -> int:
    """Scored tokens of the first max(1, max_tokens // seqlen) windows (each scores seqlen − 1), assuming the text
    is long enough: :func:`nmsim.llm.data.evaluation_windows`' count."""
    return max(1, max_tokens // seqlen) * (seqlen - 1)
