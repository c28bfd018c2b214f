"""Invariants of trace contents, checked where they enter: the statistics tables and the masks of a shard.

:func:`check_statistics` checks the ``stats/*.csv`` tables (as :mod:`nmsim.traces.stats` writes them) against each
other and against the manifest: schema, finite numbers in range, fractions in [0, 1], distributions that sum to 1,
kept ≤ group size, counts that are non-negative integers, known projections, positive tile sizes, no duplicate
keys, and the pattern's own invariants (an N:M trace keeps exactly N of every full group of M, a dense one keeps
everything). :func:`check_masks` checks one shard's unpacked masks against the manifest's pattern. Every error is
an :class:`~nmsim.errors.NmsimError` naming the file, the row (its line in the CSV) and the column.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import PROJECTIONS

PHASES = ("prefill", "decode")
_KEY = ["phase", "input", "layer", "projections", "k"]
COLUMNS = {  # the columns each table must have (the key columns first)
    "inputs": _KEY + ["tokens", "density", "natural_zero_fraction"],
    "group_nnz": _KEY + ["group_size", "kept_in_group", "fraction_of_groups"],
    "weight_fetch": _KEY + ["tile_tokens", "weight_rows_needed_fraction"],
    "compression": _KEY + ["metadata_format", "group_size", "value_dtype", "bytes_per_token",
                           "dense_bytes_per_token", "ratio_to_dense"],
    "agreement": _KEY + ["relation", "kept_overlap", "chance", "pairs"],
}
# columns that must be unique together (one row per key)
UNIQUE = {
    "inputs": ["phase", "input"],
    "group_nnz": ["phase", "input", "group_size", "kept_in_group"],
    "weight_fetch": ["phase", "input", "tile_tokens"],
    "compression": ["phase", "input", "metadata_format", "value_dtype"],
    "agreement": ["phase", "input", "relation"],
}
FRACTIONS = {"inputs": ["density", "natural_zero_fraction"], "group_nnz": ["fraction_of_groups"],
             "weight_fetch": ["weight_rows_needed_fraction"], "agreement": ["kept_overlap", "chance"]}
COUNTS = {"inputs": ["layer", "k", "tokens"], "group_nnz": ["layer", "k", "group_size", "kept_in_group"],
          "weight_fetch": ["layer", "k", "tile_tokens"], "compression": ["layer", "k", "group_size"],
          "agreement": ["layer", "k", "pairs"]}
POSITIVE = {"inputs": ["k", "tokens"], "group_nnz": ["k", "group_size"], "weight_fetch": ["k", "tile_tokens"],
            "compression": ["k", "group_size", "dense_bytes_per_token"], "agreement": ["k"]}
NON_NEGATIVE = {"compression": ["bytes_per_token", "ratio_to_dense"]}
# The CSVs hold 6 significant digits (%.6g): a value is off by at most 5e-7, a sum of n values by n times that.
ROUNDING = 1e-6
_MAX_COUNT = 1e15  # token counts, widths and layers stay far below this (and exact in float64 and int64)


def _line(table: pd.DataFrame, position: int) -> int:
    """The CSV line of a row (line 1 is the header)."""
    return int(table.index[position]) + 2


class _Table:
    """One statistics table with the label that errors name (e.g. ``stats/inputs.csv``)."""

    def __init__(self, label: str, table: pd.DataFrame):
        self.label, self.table = label, table

    def fail(self, detail: str, position: int | None = None, column: str | None = None) -> NmsimError:
        where = self.label
        if position is not None:
            where += f" line {_line(self.table, position)}"
        if column is not None:
            where += f" column {column}"
        return NmsimError(f"{where}: {detail}")


def _numbers(t: _Table, column: str) -> np.ndarray:
    values = pd.to_numeric(t.table[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        cell = t.table[column].iloc[i]
        raise t.fail(f"{cell!r} is not a finite number" if isinstance(cell, str) else f"{float(cell)} is not a finite "
                     "number", i, column)
    return values


def _check_table(name: str, t: _Table) -> pd.DataFrame:
    """Schema and per-row ranges of one table; returns it with numeric columns as numbers."""
    table = t.table
    missing = [c for c in COLUMNS[name] if c not in table.columns]
    if missing:
        raise t.fail(f"missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS[name])}")
    if name != "agreement" and table.empty:  # (agreement may lack rows: one token, one layer)
        raise t.fail("has a header but no rows (an empty body); every input has rows here")
    out = table.copy()
    numeric = set(COUNTS.get(name, [])) | set(FRACTIONS.get(name, [])) | set(NON_NEGATIVE.get(name, []))
    numeric |= {c for c in COLUMNS[name] if c in ("bytes_per_token", "dense_bytes_per_token", "ratio_to_dense")}
    for column in sorted(numeric):
        values = _numbers(t, column)
        if column in COUNTS.get(name, []):
            bad = values != np.round(values)
            if bad.any():
                i = int(np.argmax(bad))
                raise t.fail(f"{values[i]:g} is not a whole number", i, column)
            bad = values > _MAX_COUNT
            if bad.any():
                i = int(np.argmax(bad))
                raise t.fail(f"{values[i]:g} is beyond any real count (at most {_MAX_COUNT:.0e})", i, column)
            low = 1 if column in POSITIVE.get(name, []) else 0
            bad = values < low
            if bad.any():
                i = int(np.argmax(bad))
                raise t.fail(f"{values[i]:g} must be at least {low}", i, column)
        elif column in FRACTIONS.get(name, []):
            bad = (values < 0) | (values > 1)
            if bad.any():
                i = int(np.argmax(bad))
                raise t.fail(f"{values[i]:g} is not a fraction in [0, 1]", i, column)
        else:
            low = 0
            bad = (values <= 0) if column in POSITIVE.get(name, []) else (values < low)
            if bad.any():
                i = int(np.argmax(bad))
                raise t.fail(f"{values[i]:g} must be {'positive' if column in POSITIVE.get(name, []) else 'at least 0'}",
                             i, column)
        out[column] = values.astype(np.int64) if column in COUNTS.get(name, []) else values
    for i, (phase, key, layer, projections) in enumerate(
            zip(out["phase"], out["input"], out["layer"], out["projections"])):
        if phase not in PHASES:
            raise t.fail(f"phase {phase!r} is not one of {', '.join(PHASES)}", i, "phase")
        parts = str(projections).split("+")
        unknown = [p for p in parts if p not in PROJECTIONS]
        if unknown or len(set(parts)) != len(parts):
            raise t.fail(f"projections {projections!r}: each of {', '.join(PROJECTIONS)} at most once, joined by +",
                         i, "projections")
        if key != f"L{layer}.{projections}":
            raise t.fail(f"input {key!r} does not name layer {layer} and projections {projections} "
                         f"(expected L{layer}.{projections})", i, "input")
    duplicated = out.duplicated(UNIQUE[name], keep="first").to_numpy()
    if duplicated.any():
        i = int(np.argmax(duplicated))
        key = ", ".join(f"{c}={out[c].iloc[i]}" for c in UNIQUE[name])
        raise t.fail(f"a second row for {key} (duplicated rows)", i)
    return out


def _expected_density(pattern: Pattern, k: int) -> float | None:
    """The kept fraction a pattern gives a K-wide input exactly, or None where tail groups blur it."""
    if pattern.kind == "dense":
        return 1.0
    if pattern.kind == "nm":
        return pattern.n / pattern.m if k % pattern.m == 0 else None
    return max(1, int(pattern.unstructured_density * k + 0.5)) / k


def method_pattern(manifest: dict, label: str) -> Pattern:
    """The manifest's pattern, checked for agreement with its own ``kept_all`` and ``density``."""
    method = manifest.get("method")
    if not isinstance(method, dict) or "pattern" not in method:
        raise NmsimError(f"{label}: no method.pattern; the manifest must say how the trace was pruned")
    try:
        pattern = parse_pattern(str(method["pattern"]))
    except NmsimError as exc:
        raise NmsimError(f"{label}: method.pattern: {exc}") from None
    if method.get("kept_all", pattern.kind == "dense") is not (pattern.kind == "dense"):
        raise NmsimError(f"{label}: method.kept_all is {method.get('kept_all')!r} but the pattern is {pattern} "
                         "(kept_all is true exactly for dense traces)")
    density = method.get("density", pattern.density)
    if not isinstance(density, (int, float)) or not math.isclose(float(density), pattern.density, abs_tol=1e-9):
        raise NmsimError(f"{label}: method.density is {density!r} but pattern {pattern} keeps {pattern.density:g}")
    return pattern


def check_statistics(tables: dict[str, pd.DataFrame], manifest: dict, stats_label: str = "stats/",
                     manifest_label: str = "manifest") -> dict[str, pd.DataFrame]:
    """Check the statistics tables (``inputs``, ``group_nnz``, ``weight_fetch`` and, when present, ``compression``
    and ``agreement``) and their agreement with the manifest; returns the tables with numeric columns parsed."""
    pattern = method_pattern(manifest, manifest_label)
    labelled = {name: _Table(f"{stats_label}{name}.csv", table) for name, table in tables.items()}
    checked = {name: _check_table(name, t) for name, t in labelled.items()}
    inputs = checked["inputs"]
    t_inputs = labelled["inputs"]
    by_key = {(row.phase, row.input): (i, row) for i, row in enumerate(inputs.itertuples(index=False))}
    seen: dict[tuple[str, int, str], str] = {}
    counts = manifest.get("token_counts") or {}
    listed = {entry.get("key"): entry for entry in manifest.get("inputs", []) if isinstance(entry, dict)}
    for i, row in enumerate(inputs.itertuples(index=False)):
        for projection in row.projections.split("+"):
            other = seen.setdefault((row.phase, row.layer, projection), row.input)
            if other != row.input:
                raise t_inputs.fail(f"layer {row.layer} {projection} ({row.phase}) is in two inputs, {other} and "
                                    f"{row.input}", i, "projections")
        expected = _expected_density(pattern, row.k)
        if expected is not None and abs(row.density - expected) > ROUNDING:
            raise t_inputs.fail(f"density {row.density:g} but the manifest's pattern {pattern} keeps {expected:g} of "
                                f"K={row.k} ({manifest_label} method.pattern)", i, "density")
        if row.phase in counts and counts[row.phase] != row.tokens:
            raise t_inputs.fail(f"{row.tokens} tokens but the manifest's token_counts.{row.phase} is "
                                f"{counts[row.phase]!r}", i, "tokens")
        if listed and (row.input not in listed or listed[row.input].get("k") != row.k):
            found = "is not listed" if row.input not in listed else f"has k={listed[row.input].get('k')!r}"
            raise t_inputs.fail(f"input {row.input} (K={row.k}) {found} in the manifest's inputs", i, "input")
    for name in ("group_nnz", "weight_fetch", "compression", "agreement"):
        if name not in checked:
            continue
        t, table = labelled[name], checked[name]
        described = set(zip(inputs["phase"], inputs["input"], inputs["layer"], inputs["projections"], inputs["k"]))
        for i, row in enumerate(zip(table["phase"], table["input"], table["layer"], table["projections"],
                                    table["k"])):
            if row not in described:
                found = "is not" if row[:2] not in by_key else "has another layer, projections or k than"
                raise t.fail(f"input {row[1]} ({row[0]}) {found} in {stats_label}inputs.csv", i, "input")
    for name, columns in _EVERY_INPUT.items():
        if name in checked:
            _check_every_input(labelled[name], checked[name], inputs, columns)
    _check_groups(labelled["group_nnz"], checked["group_nnz"], inputs, pattern, stats_label)
    _check_fetch_tiles(labelled["weight_fetch"], checked["weight_fetch"], inputs)
    _check_fetch(labelled["weight_fetch"], checked["weight_fetch"], inputs, stats_label)
    if "compression" in checked:
        _check_compression(labelled["compression"], checked["compression"], pattern)
    if "agreement" in checked:
        _check_agreement(labelled["agreement"], checked["agreement"], inputs, stats_label)
    return checked


_EVERY_INPUT = {"group_nnz": ["group_size"], "weight_fetch": ["tile_tokens"],
                "compression": ["metadata_format", "value_dtype"]}  # rows that every input of a phase has


def _check_every_input(t: _Table, table: pd.DataFrame, inputs: pd.DataFrame, columns: list[str]) -> None:
    """Every input of a phase has a row for each value of ``columns`` that any input of the phase has (the
    inputs see the same tokens); a missing one is a deleted row."""
    rows = table.drop_duplicates(["phase", "input", *columns])
    per_phase = inputs.groupby("phase").size()
    counts = rows.groupby(["phase", *columns], sort=False).size().reset_index(name="inputs")
    short = counts[counts["inputs"].to_numpy() != per_phase.reindex(counts["phase"]).to_numpy()]
    if len(short):
        first = short.iloc[0]
        value = ", ".join(f"{c}={first[c]}" for c in columns)
        having = set(rows[(rows["phase"] == first["phase"]) & (rows[columns] == first[columns]).all(axis=1)]["input"])
        lacking = [key for phase, key in zip(inputs["phase"], inputs["input"])
                   if phase == first["phase"] and key not in having]
        raise t.fail(f"no row with {value} for {first['phase']} input {lacking[0] if lacking else '?'}, though "
                     f"{first['inputs']} other input(s) have one (a deleted row?)")


def _with_inputs(table: pd.DataFrame, inputs: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each row's position and its input's density (every row's input is in ``inputs``)."""
    density = inputs.set_index(["phase", "input"])["density"]
    keys = pd.MultiIndex.from_arrays([table["phase"], table["input"]])
    return table.assign(_position=np.arange(len(table)), _density=density.reindex(keys).to_numpy())


def _check_groups(t: _Table, table: pd.DataFrame, inputs: pd.DataFrame, pattern: Pattern, stats_label: str) -> None:
    """Kept ≤ group size; per (input, group size) the fractions sum to 1 and the mean kept fraction is the
    density; an N:M trace keeps exactly N·g/M in every group of g (M divides g and K), a dense one all g."""
    bad = (table["kept_in_group"] > table["group_size"]).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise t.fail(f"kept_in_group {table['kept_in_group'].iloc[i]} exceeds group_size "
                     f"{table['group_size'].iloc[i]}", i, "kept_in_group")
    table = _with_inputs(table, inputs)
    table["_weighted"] = table["kept_in_group"] * table["fraction_of_groups"]
    sums = table.groupby(["phase", "input", "group_size"], sort=False).agg(
        total=("fraction_of_groups", "sum"), rows=("fraction_of_groups", "size"), weighted=("_weighted", "sum"),
        first=("_position", "min"), k=("k", "first"), density=("_density", "first")).reset_index()
    tolerance = ROUNDING * np.maximum(1, sums["rows"])
    for bad, column in (((sums["total"] - 1).abs() > tolerance, "fraction_of_groups"),
                        ((sums["k"] % sums["group_size"] == 0)
                         & ((sums["weighted"] / sums["group_size"] - sums["density"]).abs() > tolerance),
                         "kept_in_group")):
        if bad.any():
            row = sums[bad.to_numpy()].iloc[0]
            what = (f"fraction_of_groups sums to {row.total:.7g}, not 1" if column == "fraction_of_groups" else
                    f"the groups keep {row.weighted / row.group_size:.6g} on average but {stats_label}inputs.csv "
                    f"has density {row.density:g}")
            raise t.fail(f"input {row.input} ({row.phase}), groups of {row.group_size}: {what}", int(row.first), column)
    size, kept = table["group_size"], table["kept_in_group"]
    if pattern.kind == "dense":
        only = size
    elif pattern.kind == "nm":
        only = (pattern.n * size // pattern.m).where(size % pattern.m == 0, -1)
    else:
        return
    bad = ((table["k"] % size == 0) & (only >= 0) & (kept != only)).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise t.fail(f"input {table['input'].iloc[i]} ({table['phase'].iloc[i]}): groups of {size.iloc[i]} keeping "
                     f"{kept.iloc[i]}, but pattern {pattern} keeps exactly {only.iloc[i]} of {size.iloc[i]}", i,
                     "kept_in_group")


def _first_bad(t: _Table, bad, detail, column: str) -> None:
    """Raise ``detail(i)`` for the first row where ``bad`` holds."""
    bad = np.asarray(bad)
    if bad.any():
        i = int(np.argmax(bad))
        raise t.fail(detail(i), i, column)


def _check_fetch_tiles(t: _Table, table: pd.DataFrame, inputs: pd.DataFrame) -> None:
    """A tile holds at most the input's tokens."""
    tokens = inputs.set_index(["phase", "input"])["tokens"]
    limit = tokens.reindex(pd.MultiIndex.from_arrays([table["phase"], table["input"]])).to_numpy()
    _first_bad(t, table["tile_tokens"].to_numpy() > limit,
               lambda i: f"a tile of {table['tile_tokens'].iloc[i]} tokens, but input {table['input'].iloc[i]} has "
                         f"{limit[i]} tokens", "tile_tokens")


def _check_compression(t: _Table, table: pd.DataFrame, pattern: Pattern) -> None:
    """Known formats and value types, the pattern's format group, dense bytes = K × value bits / 8, and the ratio
    = bytes / dense bytes."""
    from nmsim.traces.stats import UNSTRUCTURED_GROUP, VALUE_BITS

    formats = ("none",) if pattern.kind == "dense" else ("index", "bitmask", "enumerative")
    _first_bad(t, ~table["metadata_format"].isin(formats),
               lambda i: f"{table['metadata_format'].iloc[i]!r}: a {pattern} trace has formats {', '.join(formats)}",
               "metadata_format")
    _first_bad(t, ~table["value_dtype"].isin(list(VALUE_BITS)),
               lambda i: f"{table['value_dtype'].iloc[i]!r} is not one of {', '.join(VALUE_BITS)}", "value_dtype")
    group = pattern.m if pattern.kind == "nm" else UNSTRUCTURED_GROUP
    if pattern.kind != "dense":
        _first_bad(t, table["group_size"] != group,
                   lambda i: f"{table['group_size'].iloc[i]}, but a {pattern} trace's formats use groups of {group}",
                   "group_size")
    dense = table["k"] * table["value_dtype"].map(VALUE_BITS) / 8
    _first_bad(t, (table["dense_bytes_per_token"] - dense).abs() > ROUNDING * dense,
               lambda i: f"{table['dense_bytes_per_token'].iloc[i]:g}, but K={table['k'].iloc[i]} values of "
                         f"{table['value_dtype'].iloc[i]} take {dense.iloc[i]:g} bytes", "dense_bytes_per_token")
    ratio = table["bytes_per_token"] / table["dense_bytes_per_token"]
    _first_bad(t, (table["ratio_to_dense"] - ratio).abs() > 10 * ROUNDING * np.maximum(1, ratio),
               lambda i: f"{table['ratio_to_dense'].iloc[i]:g}, but bytes_per_token / dense_bytes_per_token is "
                         f"{ratio.iloc[i]:.6g}", "ratio_to_dense")


def _check_agreement(t: _Table, table: pd.DataFrame, inputs: pd.DataFrame, stats_label: str) -> None:
    """Relations token and layer; chance is the input's density; pairs ≤ tokens."""
    _first_bad(t, ~table["relation"].isin(["token", "layer"]),
               lambda i: f"{table['relation'].iloc[i]!r} is not token or layer", "relation")
    table = _with_inputs(table, inputs)
    _first_bad(t, (table["chance"] - table["_density"]).abs() > ROUNDING,
               lambda i: f"{table['chance'].iloc[i]:g}, but the input's density in {stats_label}inputs.csv is "
                         f"{table['_density'].iloc[i]:g}", "chance")
    tokens = inputs.set_index(["phase", "input"])["tokens"]
    limit = tokens.reindex(pd.MultiIndex.from_arrays([table["phase"], table["input"]])).to_numpy()
    _first_bad(t, table["pairs"].to_numpy() > limit,
               lambda i: f"{table['pairs'].iloc[i]} pairs, more than the input's {limit[i]} tokens", "pairs")


def _check_fetch(t: _Table, table: pd.DataFrame, inputs: pd.DataFrame, stats_label: str) -> None:
    """Every input has a tile of 1 token, whose rows needed are its density; larger tiles need no fewer rows
    than one token does (every token of these patterns keeps the same count)."""
    table = _with_inputs(table, inputs)
    fraction = table["weight_rows_needed_fraction"]
    single = (table["tile_tokens"] == 1).to_numpy()
    have = set(zip(table["phase"], table["input"]))
    have_single = set(zip(table["phase"][single], table["input"][single]))
    for phase, key in zip(inputs["phase"], inputs["input"]):
        if (phase, key) not in have:
            raise t.fail(f"no rows for input {key} ({phase}) of {stats_label}inputs.csv")
        if (phase, key) not in have_single:
            raise t.fail(f"input {key} ({phase}): no row for tile_tokens 1", None, "tile_tokens")
    tolerance = 10 * ROUNDING
    for bad, what in ((single & ((fraction - table["_density"]).abs() > tolerance).to_numpy(), "equal to"),
                      ((fraction < table["_density"] - tolerance).to_numpy(), "at least")):
        if bad.any():
            i = int(np.argmax(bad))
            raise t.fail(f"input {table['input'].iloc[i]} ({table['phase'].iloc[i]}): a tile of "
                         f"{table['tile_tokens'].iloc[i]} token(s) needs {fraction.iloc[i]:g} of the weight rows; it "
                         f"must be {what} the density {table['_density'].iloc[i]:g} in {stats_label}inputs.csv (one "
                         "token's kept fraction)", i, "weight_rows_needed_fraction")


def check_masks(kept: np.ndarray, pattern: Pattern, where: str) -> None:
    """``kept`` bool [T, K] obeys ``pattern``: N of every full group of M (at most N in a tail group), round(D·K)
    per token for unstructured:D, everything for dense."""
    tokens, k = kept.shape
    if pattern.kind == "dense":
        if not kept.all():
            raise NmsimError(f"{where}: a dense trace drops values")
        return
    if pattern.kind == "unstructured":
        want = max(1, int(pattern.unstructured_density * k + 0.5))
        per_token = kept.sum(axis=1)
        bad = per_token != want
        if bad.any():
            i = int(np.argmax(bad))
            raise NmsimError(f"{where}: token {i} keeps {per_token[i]} of {k}; pattern {pattern} keeps {want}")
        return
    m, n = pattern.m, pattern.n
    full = k // m
    if full:
        counts = kept[:, : full * m].reshape(tokens, full, m).sum(axis=2)
        bad = counts != n
        if bad.any():
            i, g = np.argwhere(bad)[0]
            raise NmsimError(f"{where}: token {i} keeps {counts[i, g]} in group {g} (positions {g * m}-{g * m + m - 1})"
                             f"; pattern {pattern} keeps exactly {n} of {m}")
    if k % m:
        tail = kept[:, full * m:].sum(axis=1)
        if (tail > n).any():
            i = int(np.argmax(tail > n))
            raise NmsimError(f"{where}: token {i} keeps {tail[i]} in its tail group; pattern {pattern} keeps at most {n}")
