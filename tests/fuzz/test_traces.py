"""Fuzz: mutations of a committed trace's statistics and manifest, through `nmsim simulate` and `nmsim traces verify`.

Each example copies the committed gemma3-270m 8:16 trace's ``stats/`` and ``full_manifest.json`` (not its raw
sample) into a fresh folder, mutates it, and runs both commands. Mutations: a cell of any table set to NaN,
negative, above 1, huge, fractional or text; a row deleted or duplicated; a body emptied; a column dropped; a
projection renamed; a manifest field edited. An editor may also recompute the checksums (the manifest's own and
``stats/checksums.json``): then the invariants of :mod:`nmsim.traces.checks` must refuse it. Every mutated case
must be a clean refusal naming the trace; only the untouched copy is accepted.

Mutations the invariants cannot see once the checksums are recomputed, and so not generated with recomputed
checksums: in-range edits of a value that no other value constrains (e.g. a weight-row fraction of a large tile
kept within [density, 1]), a pattern whose masks the trace's masks also satisfy (8:16 statistics relabelled 16:32
or unstructured:0.5), and rows deleted from ``agreement.csv`` (inputs of layer 0 legitimately lack a "layer" row).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nmsim.registry import TRACE_ROOT

TRACE = TRACE_ROOT / "gemma3-270m_8of16_magnitude_none"
MODEL = "gemma3-270m"
TABLES = ("inputs", "group_nnz", "weight_fetch", "compression", "agreement")
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def frames():
    return {name: pd.read_csv(TRACE / "stats" / f"{name}.csv") for name in TABLES}


@pytest.fixture
def fresh(tmp_path_factory):
    """A function making a fresh copy of the trace's statistics and manifest."""

    def make() -> Path:
        target = tmp_path_factory.mktemp("fuzz") / TRACE.name
        shutil.copytree(TRACE / "stats", target / "stats")
        shutil.copy(TRACE / "full_manifest.json", target)
        return target

    return make


def _resign(directory: Path, stats: bool = True) -> None:
    """What an editor covering their tracks does: the manifest's checksum, then (``stats``) the statistics'."""
    from nmsim.traces.format import manifest_text
    from nmsim.traces.stats import CHECKSUMS, checksums_text

    manifest_file = directory / "full_manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(manifest_text(manifest))
    if stats:
        files = {p.name: p.read_bytes() for p in sorted((directory / "stats").glob("*.csv"))}
        (directory / "stats" / CHECKSUMS).write_text(checksums_text(files, json.loads(manifest_file.read_text())))


def _write(directory: Path, name: str, table: pd.DataFrame) -> None:
    (directory / "stats" / f"{name}.csv").write_text(table.to_csv(index=False, float_format="%.6g",
                                                                  lineterminator="\n"))


def _both_refuse(cli, directory: Path) -> None:
    untouched = all((directory / p.relative_to(TRACE)).read_bytes() == p.read_bytes()
                    for p in [TRACE / "full_manifest.json", *(TRACE / "stats").iterdir()])
    assume(not untouched)  # a "mutation" that wrote the same bytes is the untouched case, tested on its own
    simulate = cli("simulate", "--hw", "act-8of16", "--model", MODEL, "--traces", directory, "--linear-only")
    simulate.refused(str(directory))
    cli("traces", "verify", directory).refused(str(directory))


def test_the_untouched_copy_is_accepted(cli, fresh):
    directory = fresh()
    cli("simulate", "--hw", "act-8of16", "--model", MODEL, "--traces", directory, "--linear-only").accepted()
    cli("traces", "verify", directory).accepted()


BAD_VALUES = st.sampled_from([float("nan"), float("inf"), -1.0, -0.25, 1.5, 1e30, 2.5, "abc", ""])


@FUZZ
@given(data=st.data(), value=BAD_VALUES, resign=st.booleans())
def test_a_bad_number_is_refused(cli, fresh, frames, data, value, resign):
    name = data.draw(st.sampled_from(TABLES), label="table")
    table = frames[name].copy()
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    column = data.draw(st.sampled_from(numeric), label="column")
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    if value == 2.5 and column not in ("layer", "k", "tokens", "group_size", "kept_in_group", "tile_tokens", "pairs"):
        value = -2.5  # 2.5 is only wrong where a whole number is meant; elsewhere make it negative
    if value == 1e30 and name == "compression" and column == "bytes_per_token":
        value = -1e30  # (a huge byte count with its ratio left alone is caught; keep the case simple)
    table[column] = table[column].astype(object)
    table.loc[row, column] = value
    directory = fresh()
    _write(directory, name, table)
    if resign:
        _resign(directory)
    _both_refuse(cli, directory)


@FUZZ
@given(data=st.data(), operation=st.sampled_from(["delete", "duplicate", "empty", "drop column", "rename"]),
       resign=st.booleans())
def test_a_damaged_table_is_refused(cli, fresh, frames, data, operation, resign):
    names = TABLES if operation in ("duplicate", "drop column", "rename") else TABLES[:4]
    name = data.draw(st.sampled_from(names), label="table")
    table = frames[name].copy()
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    if operation == "delete":
        table = table.drop(index=row)
    elif operation == "duplicate":
        table = pd.concat([table, table.iloc[[row]]])
    elif operation == "empty":
        table = table.iloc[:0]
    elif operation == "drop column":
        table = table.drop(columns=data.draw(st.sampled_from(list(table.columns)), label="column"))
    else:
        to = data.draw(st.sampled_from(["x", "gate+up", "q", "Q", "down+down", ""]), label="projection")
        table["projections"] = table["projections"].astype(object)
        table.loc[row, "projections"] = to
    directory = fresh()
    _write(directory, name, table)
    if resign:
        _resign(directory)
    _both_refuse(cli, directory)


def _edit(manifest: dict, field: str) -> None:
    method = manifest["method"]
    if field == "token_counts":
        manifest["token_counts"]["prefill"] += 1
    elif field.startswith("pattern "):
        pattern = field.split(" ", 1)[1]
        method.update(pattern=pattern)
        if pattern == "dense":
            method.update(kept_all=True, density=1.0)
        else:
            from nmsim.patterns import parse_pattern

            method.update(density=parse_pattern(pattern).density)
    elif field == "kept_all":
        method["kept_all"] = not method["kept_all"]
    elif field == "density":
        method["density"] = 0.25
    elif field == "method":
        del manifest["method"]
    elif field == "input k":
        manifest["inputs"][3]["k"] += 8
    elif field == "format_version":
        manifest["format_version"] = 2


MANIFEST_EDITS = st.sampled_from(["token_counts", "pattern 1:2", "pattern 2:4", "pattern 4:8", "pattern dense",
                                  "pattern unstructured:0.25", "kept_all", "density", "method", "input k",
                                  "format_version"])


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=MANIFEST_EDITS, resign=st.sampled_from(["none", "manifest", "manifest and stats"]))
def test_an_edited_manifest_is_refused(cli, fresh, field, resign):
    directory = fresh()
    path = directory / "full_manifest.json"
    manifest = json.loads(path.read_text())
    _edit(manifest, field)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if resign != "none":
        _resign(directory, stats=resign == "manifest and stats")
    _both_refuse(cli, directory)
