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

import csv
import io
import json
import logging
import math
import re
from pathlib import Path

import pandas as pd

from nmsim.accuracy.bootstrap import paired_delta
from nmsim.errors import NmsimError
from nmsim.io import atomic_write_files, exclusive_lock
from nmsim.llm.device import DTYPE_NAMES
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import PROJECTIONS
from nmsim.sparsify.mitigations import MITIGATION_NAMES, parse_mitigation
from nmsim.sparsify.targets import TARGET_PRESETS, make_targets

log = logging.getLogger(__name__)

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


def table_files(rows: list[dict], out_prefix: Path, json_path: Path | None, meta: dict,
                windows: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[Path, bytes]]:
    """The table of ``rows`` (deltas and intervals attached) and its files as bytes: the sidecar (when
    ``windows`` is given, first), ``<prefix>.csv``, ``<prefix>.md`` and the JSON (when ``json_path`` is given)."""
    csv_path = out_prefix.with_suffix(".csv")
    files: dict[Path, bytes] = {}
    if windows is not None:
        files[windows_path(csv_path)] = windows[KEY_COLUMNS + WINDOW_VALUES].to_csv(
            index=False, lineterminator="\n").encode("utf-8")
    table = _with_deltas(rows, windows)
    files[csv_path] = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    title = "# Accuracy: WikiText-2 perplexity under N:M activation (and weight) pruning\n\n"
    details = "".join(f"- {k}: {v}\n" for k, v in meta.items())
    files[out_prefix.with_suffix(".md")] = (title + details + "\n" + _markdown(table) + _gaps(table)).encode("utf-8")
    if json_path is not None:
        payload = {"meta": meta, "rows": json.loads(table.to_json(orient="records"))}
        files[Path(json_path)] = (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode("utf-8")
    return table, files


def write_tables(rows: list[dict], out_prefix: Path, json_path: Path | None, meta: dict,
                 windows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write ``<prefix>.csv`` and ``<prefix>.md`` (and JSON if asked, and the sidecar ``windows``, columns
    :data:`KEY_COLUMNS` + :data:`WINDOW_VALUES`, which gives the intervals) all or none
    (:func:`nmsim.io.atomic_write_files`: a full disk leaves the previous files whole); return the table."""
    table, files = table_files(rows, Path(out_prefix), json_path, meta, windows)
    atomic_write_files(files)
    return table


def table_lock(out_prefix: Path) -> Path:
    """The lock file of a table: ``<prefix>.lock`` beside ``<prefix>.csv``."""
    return Path(out_prefix).with_suffix(".lock")


def merge_tables(mine: list[dict], out_prefix: Path, json_path: Path | None, meta: dict,
                 windows_by_row: dict[tuple, pd.DataFrame], *, stale: set[tuple] = frozenset(),
                 start_over: bool = False, check=None) -> pd.DataFrame:
    """Write this run's rows ``mine`` into the table at ``out_prefix`` without losing another writer's: under the
    table's exclusive lock (:func:`table_lock`), re-read the table and its sidecar from disk, keep every row on
    disk that is not one of ``mine`` (by key) and not ``stale`` (rows a ``--recompute`` run started without), put
    ``mine`` after them in their order, and write everything (:func:`write_tables`). A single writer's table is
    exactly ``mine``. ``windows_by_row``: this run's sidecar rows by row key (they win over the disk's).
    start_over: a table on disk that cannot be read counts as empty (``--recompute``). check(rows on disk): raises
    when they cannot share the table with ``mine``."""
    csv_path = Path(out_prefix).with_suffix(".csv")
    with exclusive_lock(table_lock(out_prefix)):
        try:
            disk = read_rows(csv_path, resumable=True)
            disk_windows = row_windows(read_windows(csv_path, resumable=True))
        except NmsimError:
            if not start_over:
                raise
            disk, disk_windows = [], {}
        ours = {row_key(r) for r in mine}
        others = [r for r in disk if row_key(r) not in ours and row_key(r) not in stale]
        if check is not None:
            check(others)
        merged = others + list(mine)
        known = {**disk_windows, **windows_by_row}
        parts = [known[row_key(r)] for r in merged if row_key(r) in known]
        return write_tables(merged, out_prefix, json_path, meta, pd.concat(parts, ignore_index=True) if parts else None)


# --- reading: every table is checked where it enters ----------------------------------------------------------------
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^\d+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")  # a criterion's registered name (criteria are a registry)
OPERANDS = ("activation", "weight")
_TARGET_LABEL = re.compile(r"^(?P<preset>[^\[\]]+)(?:\[layers=[0-9,-]+\])?(?:\[exclude=[0-9,-]+\])?"
                           r"(?:\[prefill-only\])?$")
_RESUMABLE = "move it away to start over"
_INPUT = "restore it, or write it again with `nmsim eval`"


def _lines(path: Path, what: str, header_hint: list[str], resumable: bool) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and (line number, {column: text}) of every record of the CSV at ``path``, refusing a file that is
    empty, not UTF-8, cut mid-line (the writer ends every line with a newline) or whose records do not have the
    header's field count."""
    advice = _RESUMABLE if resumable else _INPUT
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NmsimError(f"{path}: not UTF-8 text ({exc}); expected {what}; {advice}") from None
    except OSError as exc:
        raise NmsimError(f"{path}: cannot read {what} ({exc.strerror})") from None
    if not text.strip():
        raise NmsimError(f"{path}: the file is empty; expected {what} (a CSV with the columns "
                         f"{', '.join(header_hint)}, as `nmsim eval` writes it); {advice}")
    if not text.endswith("\n"):
        raise NmsimError(f"{path}: line {text.count(chr(10)) + 1}: the table ends mid-line (truncated?): "
                         f"{text.splitlines()[-1][-40:]!r}; {advice}")
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, list[str]]] = []
    try:
        for record in reader:
            if record:
                records.append((reader.line_num, record))
    except csv.Error as exc:
        raise NmsimError(f"{path}: line {reader.line_num}: not a CSV record ({exc}); {advice}") from None
    header = records[0][1]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise NmsimError(f"{path}: line 1: columns repeat ({', '.join(repeated)}); expected {what}; {advice}")
    rows = []
    for line, record in records[1:]:
        if len(record) != len(header):
            raise NmsimError(f"{path}: line {line}: {len(record)} fields, the header has {len(header)} (truncated "
                             f"or edited?); {advice}")
        rows.append((line, dict(zip(header, record))))
    return header, rows


class _RowCheck:
    """Parse and check one row's cells; each error names the file, line, row, column, what is there and what is
    allowed."""

    def __init__(self, path: Path, line: int, cells: dict[str, str]):
        self.path, self.line, self.cells = path, line, cells
        self.label = "dense" if cells.get("pattern") == "dense" else " ".join(
            cells.get(c, "?") for c in ("operand", "pattern", "criterion", "mitigation", "targets"))

    def error(self, column: str, allowed: str) -> NmsimError:
        return NmsimError(f"{self.path}: line {self.line} (row {self.label}): column {column}: "
                          f"{self.cells.get(column, '')!r}; {allowed}")

    def number(self, column: str, low: float = -math.inf, high: float = math.inf, *, empty_ok: bool = False,
               above: bool = False, what: str = "") -> float:
        text = self.cells.get(column, "").strip()
        bound = (f"above {low:g}" if above else f"at least {low:g}") if low > -math.inf else ""
        bound += (" and " if bound else "") + f"at most {high:g}" if high < math.inf else ""
        allowed = f"allowed: a finite number{' ' + bound if bound else ''}{what}" + (
            " or empty (not measured)" if empty_ok else "")
        if not text:
            if empty_ok:
                return math.nan
            raise self.error(column, allowed)
        if not _NUMBER.match(text):
            raise self.error(column, allowed)
        value = float(text)
        if not math.isfinite(value) or value < low or value > high or (above and value == low):
            raise self.error(column, allowed)
        return value

    def integer(self, column: str, low: int) -> int:
        text = self.cells.get(column, "").strip()
        if not _INTEGER.match(text) or int(text) < low:
            raise self.error(column, f"allowed: a whole number of at least {low}")
        return int(text)


def _check_row(path: Path, line: int, cells: dict[str, str]) -> dict:
    """One table row as typed values (the columns of :data:`COLUMNS` but the deltas), checked."""
    check = _RowCheck(path, line, cells)
    row: dict = {}
    for column in ("model", "data"):
        if not cells[column].strip():
            raise check.error(column, "allowed: a name (not empty)")
        row[column] = cells[column]
    try:  # patterns become their canonical spelling at the boundary (m16n8 and 8:16 are one row key)
        pattern = parse_pattern(cells["pattern"])
    except NmsimError as exc:
        raise NmsimError(f"{path}: column pattern: {exc}") from None
    row["pattern"] = str(pattern)
    dense = pattern.kind == "dense"
    row["density"] = check.number("density", 0.0, 1.0, above=True)
    if abs(row["density"] - round(pattern.density, 6)) > 1e-6:
        raise check.error("density", f"allowed: {round(pattern.density, 6)}, the density of pattern {pattern}")
    if dense:
        for column in ("operand", "criterion", "mitigation", "targets"):
            if cells[column] != NOT_APPLICABLE:
                raise check.error(column, f"allowed: {NOT_APPLICABLE} (the dense row prunes nothing)")
            row[column] = NOT_APPLICABLE
    else:
        if cells["operand"] not in OPERANDS:
            raise check.error("operand", f"allowed: {', '.join(OPERANDS)}")
        if not _NAME.match(cells["criterion"]):
            raise check.error("criterion", "allowed: a criterion's name such as magnitude, amber, wina, clact, "
                                           "clact-causal, or a weight method (magnitude, wanda)")
        try:
            canonical = str(parse_mitigation(cells["mitigation"]))
        except NmsimError:
            canonical = None
        if canonical != cells["mitigation"] or (cells["operand"] == "weight" and canonical != "none"):
            raise check.error("mitigation", "allowed: none for weight rows; for activation rows one of "
                                            f"{', '.join(MITIGATION_NAMES)}")
        label = _TARGET_LABEL.match(cells["targets"])
        try:
            if label is None:
                raise NmsimError("")
            make_targets(label["preset"])
        except NmsimError:
            raise check.error("targets", f"allowed: a preset ({', '.join(TARGET_PRESETS)}) or a comma list of "
                                         f"projections from {', '.join(PROJECTIONS)}, then optionally "
                                         "[layers=…][exclude=…][prefill-only]") from None
        row.update({c: cells[c] for c in ("operand", "criterion", "mitigation", "targets")})
    row["seqlen_tokens"] = check.integer("seqlen_tokens", 2)
    row["tokens_evaluated"] = check.integer("tokens_evaluated", 1)
    if row["tokens_evaluated"] % (row["seqlen_tokens"] - 1):
        raise check.error("tokens_evaluated", f"allowed: a multiple of seqlen_tokens − 1 = {row['seqlen_tokens'] - 1}"
                                              " (every window scores seqlen − 1 tokens)")
    row["perplexity"] = check.number("perplexity", 1.0, what=" (the exponential of a mean negative "
                                                               "log-likelihood, which is ≥ 0)")
    row["kl_mean_nats"] = check.number("kl_mean_nats", 0.0, empty_ok=True)
    row["top1_agreement"] = check.number("top1_agreement", 0.0, 1.0, empty_ok=True, what=" (a fraction)")
    row["greedy_agreement_tokens"] = check.number("greedy_agreement_tokens", 0.0, empty_ok=True)
    dtype = cells.get("dtype", DEFAULT_DTYPE)
    if dtype not in DTYPE_NAMES:
        raise check.error("dtype", f"allowed: {', '.join(DTYPE_NAMES)}")
    row["dtype"] = dtype
    for column in ("delta_ppl_vs_dense", "delta_pct_vs_dense", "delta_ppl_ci_low", "delta_ppl_ci_high"):
        row[column] = check.number(column, empty_ok=True)  # deltas are recomputed on writing; checked below
    return row


def _check_deltas(path: Path, rows: list[tuple[int, dict]]) -> None:
    """A table's Δ columns, where it has them, must be those of its perplexities (an edited perplexity or Δ)."""
    same = ("model", "seqlen_tokens", "tokens_evaluated", "data", "dtype")
    dense = {tuple(r[c] for c in same): r["perplexity"] for _, r in rows if r["pattern"] == "dense"}
    for line, row in rows:
        base = dense.get(tuple(row[c] for c in same))
        if base is None:
            continue
        for column, want, tolerance in (("delta_ppl_vs_dense", row["perplexity"] - base, 2e-4),
                                        ("delta_pct_vs_dense", 100 * (row["perplexity"] / base - 1), 0.011)):
            found = row[column]
            if not math.isnan(found) and abs(found - want) > tolerance + 1e-9 * abs(want):
                raise _RowCheck(path, line, {**row, column: f"{found:g}"}).error(
                    column, f"the perplexities give {want:.4f} (perplexity {row['perplexity']:g}, dense "
                            f"{base:g}); one of them was edited")


def read_rows(csv_path: Path, *, resumable: bool = False) -> list[dict]:
    """Rows already finished (from a previous, possibly interrupted run), checked: the columns, every number
    (finite, in range, whole where a count is meant), a perplexity of at least 1, the density of the pattern, the
    method columns (``-`` for the dense row), the Δ columns against the perplexities, and rows repeated (an
    identical repeat is dropped, a conflicting one refused). A missing file has no rows. resumable: the table is the
    output of a run that resumes (its errors advise moving it away); else an input."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        return []
    what = "an nmsim accuracy table"
    header, records = _lines(csv_path, what, [c for c in COLUMNS if c not in OPTIONAL_COLUMNS], resumable)
    advice = _RESUMABLE if resumable else _INPUT
    if "operand" not in header and "pattern" in header:  # written before weight baselines existed
        for _, cells in records:
            cells["operand"] = NOT_APPLICABLE if cells["pattern"] == "dense" else "activation"
        header = [*header, "operand"]
    missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL_COLUMNS and c != "dtype"
               and not c.startswith("delta_")]
    if missing:
        raise NmsimError(f"{csv_path}: not an nmsim accuracy table (missing columns {', '.join(missing)}); {advice}")
    rows = [(line, _check_row(csv_path, line, cells)) for line, cells in records]
    _check_deltas(csv_path, rows)
    kept: dict[tuple, tuple[int, dict]] = {}
    for line, row in rows:
        key = row_key(row)
        if key in kept:
            first_line, first = kept[key]
            differ = [c for c in COLUMNS if c not in KEY_COLUMNS and not c.startswith("delta_")
                      and not _same(first[c], row[c])]
            if differ:
                shown = ", ".join(f"{c} {first[c]} vs {row[c]}" for c in differ)
                raise NmsimError(f"{csv_path}: lines {first_line} and {line} (row {_label(pd.Series(row))}): the "
                                 f"same row twice with different values ({shown}); keep the right one")
            log.warning("%s: line %d repeats line %d; one is kept", csv_path, line, first_line)
            continue
        kept[key] = (line, row)
    return [{c: row[c] for c in COLUMNS if not c.startswith("delta_")} for _, row in kept.values()]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def read_windows(csv_path: Path, *, resumable: bool = False) -> pd.DataFrame:
    """The per-window sidecar of the table at ``csv_path`` (no rows if there is none), checked: columns, finite
    numbers (window an index, tokens ≥ 1, NLL sums ≥ 0; KL ≥ 0 and top-1 matches within the tokens, or empty)."""
    path = windows_path(csv_path)
    if not path.exists():
        return pd.DataFrame(columns=KEY_COLUMNS + WINDOW_VALUES)
    header, records = _lines(path, "an nmsim per-window table", KEY_COLUMNS + WINDOW_VALUES, resumable)
    missing = [c for c in KEY_COLUMNS + WINDOW_VALUES if c not in header]
    if missing:
        raise NmsimError(f"{path}: not an nmsim per-window table (missing columns {', '.join(missing)}); "
                         f"{_RESUMABLE if resumable else _INPUT}")
    for line, cells in records:
        check = _RowCheck(path, line, cells)
        try:
            parse_pattern(cells["pattern"])
        except NmsimError as exc:
            raise NmsimError(f"{path}: line {line}: column pattern: {exc}") from None
        check.integer("seqlen_tokens", 2)
        check.integer("tokens_evaluated", 1)
        check.integer("window", 0)
        tokens = check.integer("tokens", 1)
        check.number("nll_sum_nats", 0.0)
        check.number("kl_sum_nats", 0.0, empty_ok=True)
        check.number("top1_matches", 0.0, tokens, empty_ok=True)
    frame = pd.read_csv(path, keep_default_na=False)  # checked above; pandas gives the columns' usual types
    for column in WINDOW_VALUES:
        frame[column] = _numbers(frame[column])
    frame["pattern"] = [str(parse_pattern(p)) for p in frame["pattern"]]
    return frame[KEY_COLUMNS + WINDOW_VALUES]


def _numbers(values: pd.Series) -> pd.Series:
    """A checked column read with ``keep_default_na=False`` as floats, the empty cells NaN."""
    return pd.to_numeric(values.replace("", math.nan))


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
