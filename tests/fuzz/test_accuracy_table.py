"""Fuzz: mutations of a committed accuracy table (a cell replaced by NaN, inf, −5, 0, text or nothing; the file cut at
a random byte; a row repeated with another perplexity; a column dropped; the columns shuffled) through `nmsim
summary TABLE` and through the reader the report uses (:func:`nmsim.report.tables.load_accuracy`). Each ends in a
clean refusal or is accepted with finite, in-range numbers."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmsim.accuracy.table import KEY_COLUMNS, OPTIONAL_COLUMNS, read_rows
from nmsim.errors import NmsimError
from nmsim.report.tables import load_accuracy

SOURCE = Path(__file__).resolve().parents[2] / "reports" / "study_smollm2_64k.csv"  # dense, activation and weight rows
ORIGINAL = pd.read_csv(SOURCE, keep_default_na=False, dtype=str)
NUMBERS = ["density", "seqlen_tokens", "tokens_evaluated", "perplexity"]  # a bad value here is always refused
BAD = ["nan", "NaN", "inf", "-inf", "-5", "0", "-1", "abc", "", "1e999", "4..2", "0x10"]
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "mutated.csv"
    path.write_text(frame.to_csv(index=False, lineterminator="\n"))
    return path


def _check(cli, path: Path) -> bool:
    """The table through the summary and the report's reader: both refuse it cleanly, or both accept it with every
    perplexity finite and at least 1. Returns whether it was accepted."""
    outcome = cli("summary", path)
    try:
        rows = load_accuracy([path])
    except NmsimError as exc:
        assert str(path) in str(exc)
        outcome.refused(path.name)
        return False
    outcome.accepted()
    assert rows.perplexity.map(math.isfinite).all() and (rows.perplexity >= 1).all()
    assert ((rows.density > 0) & (rows.density <= 1)).all()
    assert not rows.duplicated(subset=KEY_COLUMNS).any()
    return True


@FUZZ
@given(row=st.integers(0, len(ORIGINAL) - 1), column=st.sampled_from(list(ORIGINAL.columns)),
       value=st.sampled_from(BAD))
def test_a_replaced_cell_is_refused_or_harmless(tmp_path, cli, row, column, value):
    mutated = ORIGINAL.copy()
    mutated.loc[row, column] = value
    accepted = _check(cli, _write(tmp_path, mutated))
    if column in NUMBERS:
        assert not accepted, f"{column} = {value!r} was accepted"


@FUZZ
@given(cut=st.integers(1, SOURCE.stat().st_size - 1))
def test_a_table_cut_at_any_byte_is_refused_unless_cut_at_a_line_end(tmp_path, cli, cut):
    data = SOURCE.read_bytes()[:cut]
    path = tmp_path / "cut.csv"
    path.write_bytes(data)
    accepted = _check(cli, path)
    at_line_end = data.endswith(b"\n") and data.count(b"\n") >= 2  # the header and whole rows
    assert accepted == at_line_end
    if accepted:
        assert len(read_rows(path)) == data.count(b"\n") - 1


@FUZZ
@given(row=st.integers(0, len(ORIGINAL) - 1), factor=st.sampled_from([0.5, 0.99, 1.0, 1.01, 3.0]))
def test_a_repeated_row_with_another_perplexity_is_refused(tmp_path, cli, row, factor):
    repeat = ORIGINAL.iloc[[row]].copy()
    perplexity = float(repeat.perplexity.iloc[0]) * factor
    repeat["perplexity"] = f"{perplexity:.4f}"
    mutated = pd.concat([ORIGINAL, repeat], ignore_index=True)
    path = _write(tmp_path, mutated)
    same = f"{perplexity:.4f}" == f"{float(ORIGINAL.perplexity.iloc[row]):.4f}"
    try:
        read_rows(path)
        assert same
    except NmsimError as exc:
        assert not same and ("the same row twice" in str(exc) or "delta" in str(exc))
    assert _check(cli, path) == same


@FUZZ
@given(column=st.sampled_from(list(ORIGINAL.columns)), seed=st.integers(0, 2**16))
def test_a_dropped_column_is_refused_and_shuffled_columns_read_the_same(tmp_path, cli, column, seed):
    optional = column.startswith("delta_") or column in OPTIONAL_COLUMNS or column == "operand"
    assert _check(cli, _write(tmp_path, ORIGINAL.drop(columns=[column]))) == optional
    shuffled = ORIGINAL[list(ORIGINAL.columns.to_series().sample(frac=1, random_state=seed))]
    path = _write(tmp_path, shuffled)
    assert _check(cli, path)
    copy = tmp_path / "copy.csv"
    shutil.copy(SOURCE, copy)
    assert read_rows(path) == read_rows(copy)
