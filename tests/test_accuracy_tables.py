"""Accuracy tables under attack: concurrent writers keep every row, a full disk leaves the previous files whole, and
every table is checked where it enters (columns, numbers, settings, truncation, conflicting duplicates)."""

import errno
import multiprocessing
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

import nmsim.accuracy.study as study
import nmsim.io
from nmsim.accuracy.table import (COLUMNS, expected_tokens, read_rows, read_windows, row_key, window_frame,
                                  write_tables)
from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.io import DiskFullError

REPORTS = Path(__file__).resolve().parents[1] / "reports"
COMMITTED = sorted(p for p in REPORTS.glob("*.csv") if "perplexity" in p.read_text().splitlines()[0].split(","))
PERPLEXITY = {"dense": 20.0, "2:4": 40.0, "4:8": 30.0, "8:16": 25.0, "16:32": 22.0}  # the fake evaluator's, by pattern


def _row(pattern="2:4", ppl=40.0, **changes):
    dense = pattern == "dense"
    row = {"model": "m", "pattern": pattern, "density": 1.0 if dense else 0.5,
           "operand": "-" if dense else "activation", "criterion": "-" if dense else "magnitude",
           "mitigation": "-" if dense else "none", "targets": "-" if dense else "all", "seqlen_tokens": 512,
           "tokens_evaluated": 1022, "perplexity": ppl, "data": "d", "dtype": "float32"}
    return {**row, **changes}


# --- concurrent writers ---------------------------------------------------------------------------------------------
@contextmanager
def _fake_evaluator(barrier, settings, grid, out_prefix, command, scheduler, workers):
    """Rows without a model: the perplexity of :data:`PERPLEXITY`; both processes evaluate their k-th row
    together (the barrier), after both have read the table as it was when they started."""
    from nmsim.llm.data import load_split

    common = {"model": "smollm2-135m", "seqlen_tokens": settings.seqlen,
              "tokens_evaluated": expected_tokens(settings.seqlen, settings.max_tokens),
              "data": load_split("test", settings.data_dir).name, "dtype": settings.dtype}

    def results(pending):
        for index, config in pending.items():
            barrier.wait(timeout=20)
            row = {**common, **study.row_labels(config), "perplexity": PERPLEXITY[str(config.pattern)],
                   "kl_mean_nats": float("nan"), "top1_agreement": float("nan"),
                   "greedy_agreement_tokens": float("nan")}
            yield index, (row, window_frame(row, [1.0, 2.0], settings.seqlen - 1))

    yield common, {"model": "fake"}, results


def _eval_process(barrier, args):
    study._evaluator = lambda *a: _fake_evaluator(barrier, *a)
    sys.exit(main(args))


def test_two_concurrent_evals_of_different_grids_keep_every_row(tmp_path):
    """The lost row of issue 18: two `nmsim eval` runs (real processes, the real CLI, table and write path; a fake
    row producer) into one --out, each with its own grid, written in lockstep: every row of both ends up."""
    out = tmp_path / "acc"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    processes = [context.Process(target=_eval_process, args=(barrier, [
        "eval", "--patterns", pattern, "--criteria", "magnitude", "--mitigations", "none", "--max-tokens", "1024",
        "--no-fidelity", "--out", str(out)])) for pattern in ("8:16,16:32", "2:4,4:8")]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0, 0]
    rows = read_rows(out.with_suffix(".csv"))
    assert sorted(r["pattern"] for r in rows) == sorted(PERPLEXITY)
    assert {r["pattern"]: r["perplexity"] for r in rows} == PERPLEXITY
    windows = read_windows(out.with_suffix(".csv"))
    assert sorted(set(windows["pattern"])) == sorted(PERPLEXITY) and len(windows) == 2 * len(PERPLEXITY)
    table = pd.read_csv(out.with_suffix(".csv"))
    assert table.set_index("pattern")["delta_ppl_vs_dense"].to_dict() == {p: v - 20.0 for p, v in PERPLEXITY.items()}


def _merge_process(prefix, index, barrier):
    from nmsim.accuracy.table import merge_tables

    mine = []
    for step in range(5):
        barrier.wait(timeout=20)
        mine.append(_row("2:4", 10.0 + index * 100 + step, criterion=f"c{index}x{step}"))
        merge_tables(mine, prefix, None, {"writer": index}, {})


def test_merge_under_the_lock_loses_nothing_with_three_writers(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    processes = [context.Process(target=_merge_process, args=(tmp_path / "t", i, barrier)) for i in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    rows = read_rows(tmp_path / "t.csv")
    assert sorted(r["criterion"] for r in rows) == sorted(f"c{i}x{s}" for i in range(3) for s in range(5))
    assert (tmp_path / "t.lock").exists()


# --- a full disk ----------------------------------------------------------------------------------------------------
def test_a_full_disk_leaves_csv_markdown_json_and_sidecar_as_they_were(tmp_path, monkeypatch):
    prefix = tmp_path / "acc"
    rows = [_row("dense", 20.0), _row("2:4", 40.0)]
    windows = pd.concat([window_frame(r, [1.0, 2.0], 511) for r in rows])
    write_tables(rows, prefix, tmp_path / "acc.json", {"model": "m"}, windows)
    names = ["acc.csv", "acc.md", "acc.json", "acc.windows.csv"]
    before = {name: (tmp_path / name).read_bytes() for name in names}
    real, calls = nmsim.io._temporary, []

    def full(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(nmsim.io, "_temporary", full)
    more = [*rows, _row("8:16", 25.0)]
    with pytest.raises(DiskFullError, match=r"acc\.(windows\.)?csv: no space left on the device .* unchanged"):
        write_tables(more, prefix, tmp_path / "acc.json", {"model": "m"},
                     pd.concat([window_frame(r, [1.0, 2.0], 511) for r in more]))
    assert {name: (tmp_path / name).read_bytes() for name in names} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary left behind


# --- checked where they enter ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_every_committed_table_reads(path, tmp_path):
    rows = read_rows(path)
    assert rows and all(r["perplexity"] >= 1 for r in rows)
    assert len({row_key(r) for r in rows}) == len(rows)
    assert main(["summary", str(path), "--out", str(tmp_path / "s.md")]) == 0


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def _table_text(rows) -> str:
    return pd.DataFrame(rows).to_csv(index=False, lineterminator="\n")


@pytest.mark.parametrize("column, value, needles", [
    ("perplexity", "-5", ["line 3 (row activation 2:4 magnitude none all): column perplexity: '-5'", "at least 1"]),
    ("perplexity", "0", ["column perplexity: '0'"]),
    ("perplexity", "nan", ["column perplexity: 'nan'", "a finite number"]),
    ("perplexity", "inf", ["column perplexity: 'inf'"]),
    ("perplexity", "abc", ["column perplexity: 'abc'"]),
    ("perplexity", "", ["column perplexity: ''"]),
    ("density", "0.25", ["column density: '0.25'", "allowed: 0.5, the density of pattern 2:4"]),
    ("tokens_evaluated", "0", ["column tokens_evaluated: '0'", "at least 1"]),
    ("tokens_evaluated", "1022.5", ["column tokens_evaluated: '1022.5'", "a whole number"]),
    ("tokens_evaluated", "1000", ["multiple of seqlen_tokens − 1 = 511"]),
    ("seqlen_tokens", "1", ["column seqlen_tokens: '1'", "at least 2"]),
    ("dtype", "fp8", ["column dtype: 'fp8'", "float32, bfloat16, float16"]),
    ("operand", "both", ["column operand: 'both'", "activation, weight"]),
    ("mitigation", "median", ["column mitigation: 'median'", "median-shift"]),
    ("targets", "qkv", ["column targets: 'qkv'", "no-qkv"]),
    ("criterion", "1.5", ["column criterion: '1.5'"]),
    ("kl_mean_nats", "-0.1", ["column kl_mean_nats: '-0.1'"]),
    ("top1_agreement", "1.5", ["column top1_agreement: '1.5'", "at most 1"]),
    ("delta_ppl_vs_dense", "99", ["column delta_ppl_vs_dense: '99'", "the perplexities give 20.0000"]),
])
def test_a_bad_cell_is_refused_naming_file_line_row_and_column(tmp_path, column, value, needles):
    rows = [_row("dense", 20.0), _row("2:4", 40.0)]
    text = write_tables(rows, tmp_path / "good", None, {}).astype(object)
    text.loc[1, column] = value
    path = _write(tmp_path, _table_text(text))
    with pytest.raises(NmsimError) as caught:
        read_rows(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for needle in needles:
        assert needle in message


def test_the_dense_row_takes_dashes_and_a_dense_perplexity_of_zero_is_refused(tmp_path):
    path = _write(tmp_path, _table_text([_row("dense", 20.0, criterion="magnitude")]))
    with pytest.raises(NmsimError, match=r"line 2 \(row dense\): column criterion: 'magnitude'; allowed: -"):
        read_rows(path)
    path = _write(tmp_path, _table_text([_row("dense", 0.0), _row("2:4", 40.0)]))
    with pytest.raises(NmsimError, match=r"line 2 \(row dense\): column perplexity: '0.0'"):
        read_rows(path)


def test_a_table_cut_mid_line_or_at_4000_bytes_is_refused(tmp_path):
    whole = (REPORTS / "study_smollm2_16k.csv").read_text()
    cut = whole[:whole.index("132.9602") + 1]  # the last line ends in a plausible perplexity of 1
    with pytest.raises(NmsimError, match=r"t.csv: line 3: the table ends mid-line \(truncated\?\)"):
        read_rows(_write(tmp_path, cut))
    with pytest.raises(NmsimError, match="ends mid-line"):
        read_rows(_write(tmp_path, whole[:4000]))
    lines = whole.splitlines(keepends=True)
    short = "".join(lines[:3]) + ",".join(lines[3].split(",")[:6]) + "\n"
    with pytest.raises(NmsimError, match=r"line 4: 6 fields, the header has 13"):
        read_rows(_write(tmp_path, short))
    assert len(read_rows(_write(tmp_path, "".join(lines[:5])))) == 4  # cut at a line end: the rows before


def test_repeated_rows_identical_are_kept_once_conflicting_are_refused(tmp_path):
    rows = [_row("dense", 20.0), _row("2:4", 40.0)]
    assert len(read_rows(_write(tmp_path, _table_text([*rows, rows[1]])))) == 2
    path = _write(tmp_path, _table_text([*rows, {**rows[1], "perplexity": 4.0}]))
    with pytest.raises(NmsimError, match=r"lines 3 and 4 \(row activation 2:4 magnitude none all\): the same row "
                                         r"twice with different values \(perplexity 40.0 vs 4.0\)"):
        read_rows(path)
    spelled = _write(tmp_path, _table_text([*rows, {**rows[1], "pattern": "m4n2", "perplexity": 41.0}]))
    with pytest.raises(NmsimError, match="the same row twice"):  # one row key, whatever the spelling
        read_rows(spelled)


def test_columns_in_another_order_read_the_same(tmp_path):
    original = REPORTS / "study_smollm2_64k.csv"
    table = pd.read_csv(original, keep_default_na=False, dtype=str)
    path = _write(tmp_path, table[list(reversed(table.columns))].to_csv(index=False, lineterminator="\n"))
    assert read_rows(path) == read_rows(original)


def test_a_broken_sidecar_is_refused(tmp_path):
    rows = [_row("dense", 20.0), _row("2:4", 40.0)]
    write_tables(rows, tmp_path / "t", None, {}, pd.concat([window_frame(r, [1.0, 2.0], 511) for r in rows]))
    sidecar = tmp_path / "t.windows.csv"
    sidecar.write_text(sidecar.read_text().replace(",1.0,", ",-1.0,", 1))
    with pytest.raises(NmsimError, match=r"t.windows.csv: line 2 .*column nll_sum_nats: '-1.0'"):
        read_windows(tmp_path / "t.csv")


# --- the summary and the inputs of eval -----------------------------------------------------------------------------
def test_summary_without_weight_rows_or_dense_row_and_of_missing_or_empty_tables(tmp_path, cli_outcome):
    no_weights = tmp_path / "a"
    write_tables([_row("dense", 20.0), _row("2:4", 40.0), _row("16:32", 24.0)], no_weights, None, {})
    outcome = cli_outcome("summary", f"{no_weights}.csv")
    outcome.accepted()
    assert "No weight baselines in this table" in outcome.stdout
    no_dense = tmp_path / "b"
    write_tables([_row("2:4", 40.0), _row("2:4", 41.0, operand="weight", criterion="wanda")], no_dense, None, {})
    cli_outcome("summary", f"{no_dense}.csv").accepted()
    cli_outcome("summary", tmp_path / "nosuch.csv").refused("nosuch.csv", "no such accuracy table")
    (tmp_path / "empty.csv").write_text("")
    line = cli_outcome("summary", tmp_path / "empty.csv").refused("empty.csv", "the file is empty", "expected")
    assert "move it away" not in line
    line = cli_outcome("eval", "--headline-from", tmp_path / "empty.csv", "--out", tmp_path / "x").refused(
        "empty.csv", "is empty")
    assert "move it away" not in line
    (tmp_path / "header.csv").write_text(",".join(COLUMNS) + "\n")
    cli_outcome("summary", tmp_path / "header.csv").refused("header.csv", "no finished rows")


def test_a_broken_output_table_of_a_resumable_run_says_move_it_away(tmp_path, cli_outcome):
    (tmp_path / "x.csv").write_text("model,pattern\nm,2:")
    cli_outcome("eval", "--patterns", "2:4", "--max-tokens", "1024", "--no-fidelity", "--out",
                tmp_path / "x").refused("x.csv", "ends mid-line", "move it away to start over")


@pytest.mark.parametrize("args, needles", [
    (["--learn-lr", "nan"], ["--learn-lr", "finite number above 0"]),
    (["--learn-lr", "inf"], ["--learn-lr"]),
    (["--learn-lr", "-1e-4"], ["--learn-lr"]),
    (["--learn-lr", "0"], ["--learn-lr"]),
    (["--targets", ";"], ["--targets", "no target preset given", "all, no-qkv, amber"]),
    (["--targets", "all;qkv"], ["--targets", "'qkv'"]),
    (["--patterns", ","], ["--patterns", "no pattern given"]),
    (["--criteria", ","], ["--criteria", "no criterion given"]),
    (["--mitigations", " , "], ["--mitigations", "no mitigation given", "median-shift"]),
    (["--weight-patterns", "2:4", "--weight-methods", ","], ["--weight-methods", "no weight method given"]),
    (["--seqlen", "1"], ["--seqlen", "at least 2"]),
])
def test_study_arguments_are_checked_before_any_work(tmp_path, cli_outcome, args, needles):
    for command in ("eval", "run"):
        cli_outcome(command, *args, "--out", tmp_path / "x").refused(*needles)
    assert not list(tmp_path.iterdir())


@pytest.fixture
def cli_outcome():
    from tests.fuzz.conftest import run_cli

    return run_cli


def test_the_committed_table_copies_read_after_a_rewrite(tmp_path):
    """A committed table rewritten by the merge path (one writer) is the same rows."""
    from nmsim.accuracy.table import merge_tables

    for path in COMMITTED:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        rows = read_rows(copy)
        merge_tables(rows, copy.with_suffix(""), None, {}, {})
        assert read_rows(copy) == rows
