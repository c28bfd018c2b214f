"""Accuracy tables: the columns, reading finished rows back, and writing CSV + Markdown (+ JSON) atomically.

Torch-free: the report reads these tables without loading the pruning side. One row per (model, pattern, operand,
criterion, mitigation, targets, sequence length, tokens, data, dtype): :data:`KEY_COLUMNS` is what makes a row the
same row. The device is not part of it (the same dtype on a CPU or a GPU is the same measurement up to float noise);
a table's Markdown header names it. Tables written before dtypes were chosen have no dtype column: their rows are
float32.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

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
    "data",
    "dtype",
]
KEY_COLUMNS = ["model", "pattern", "operand", "criterion", "mitigation", "targets", "seqlen_tokens", "tokens_evaluated",
               "data", "dtype"]
DEFAULT_DTYPE = "float32"  # the dtype of rows from tables without the column
NOT_APPLICABLE = "-"  # operand, criterion, mitigation and targets of the dense row


def _with_deltas(rows: list[dict]) -> pd.DataFrame:
    """Attach Δ vs the dense row of the same model, seqlen, token count, data and dtype."""
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("delta_ppl_vs_dense", "delta_pct_vs_dense")])
    same = ["model", "seqlen_tokens", "tokens_evaluated", "data", "dtype"]
    dense = table[table["pattern"] == "dense"].set_index(same)["perplexity"]
    base = table.set_index(same).index.map(lambda key: dense.get(key, math.nan))
    table["delta_ppl_vs_dense"] = (table["perplexity"] - base.to_numpy()).round(4)
    table["delta_pct_vs_dense"] = (100 * (table["perplexity"] / base.to_numpy() - 1)).round(2)
    return table[COLUMNS]


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_tables(rows: list[dict], out_prefix: Path, json_path: Path | None, meta: dict) -> pd.DataFrame:
    """Write ``<prefix>.csv`` and ``<prefix>.md`` (and JSON if asked) atomically; return the table."""
    table = _with_deltas(rows)
    atomic_write_text(out_prefix.with_suffix(".csv"), table.to_csv(index=False, lineterminator="\n"))
    title = "# Accuracy: WikiText-2 perplexity under N:M activation (and weight) pruning\n\n"
    details = "".join(f"- {k}: {v}\n" for k, v in meta.items())
    atomic_write_text(out_prefix.with_suffix(".md"), title + details + "\n" + _markdown(table))
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
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise NmsimError(f"{csv_path}: not an nmsim accuracy table (missing columns {', '.join(missing)})")
    try:  # patterns become their canonical spelling at the boundary (m16n8 and 8:16 are one row key)
        table["pattern"] = [str(parse_pattern(p)) for p in table["pattern"]]
    except NmsimError as exc:
        raise NmsimError(f"{csv_path}: column pattern: {exc}") from None
    return table[[c for c in COLUMNS if not c.startswith("delta_")]].to_dict("records")


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
