"""The accuracy table: columns, Δ vs dense, resume, interruption, and the CLI's error handling."""

import json
from pathlib import Path

import pandas as pd
import pytest

import nmsim.accuracy.study as accuracy
from nmsim.accuracy.study import COLUMNS, StudySettings, build_grid, read_rows, row_labels, run_study, write_tables
from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.sparsify.targets import make_targets


def _row(pattern, ppl, criterion="magnitude", mitigation="none", targets="all", tokens=1022):
    return {"model": "m", "pattern": pattern, "density": 0.5, "operand": "activation", "criterion": criterion,
            "mitigation": mitigation,
            "targets": targets, "seqlen_tokens": 512, "tokens_evaluated": tokens, "perplexity": ppl, "data": "d",
            "dtype": "float32"}


def test_grid_is_dense_first_without_duplicates():
    grid = build_grid(["2:4", "m4n2", "dense", "8:16"], ["magnitude"], ["none", "median-shift"],
                      [make_targets("all")])
    labels = [row_labels(c) for c in grid]
    assert labels[0] == {"pattern": "dense", "density": 1.0, "operand": "-", "criterion": "-", "mitigation": "-",
                         "targets": "-"}
    assert [(r["pattern"], r["mitigation"]) for r in labels[1:]] == [
        ("2:4", "none"), ("2:4", "median-shift"), ("8:16", "none"), ("8:16", "median-shift")]


def test_tables_have_the_documented_columns_and_deltas(tmp_path):
    rows = [{**_row("dense", 30.0), "operand": "-", "criterion": "-", "mitigation": "-", "targets": "-",
             "density": 1.0},
            _row("2:4", 45.0), _row("dense", 20.0, tokens=511), _row("8:16", 25.0, tokens=511)]
    rows[2].update(operand="-", criterion="-", mitigation="-", targets="-", density=1.0)
    table = write_tables(rows, tmp_path / "acc", tmp_path / "acc.json", {"model": "m"})
    assert list(table.columns) == COLUMNS
    assert table["delta_ppl_vs_dense"].tolist() == [0.0, 15.0, 0.0, 5.0]
    assert table["delta_pct_vs_dense"].tolist() == [0.0, 50.0, 0.0, 25.0]
    on_disk = pd.read_csv(tmp_path / "acc.csv")
    assert on_disk["perplexity"].tolist() == [30.0, 45.0, 20.0, 25.0]
    assert "| 2:4 | 0.5 | activation | magnitude |" in (tmp_path / "acc.md").read_text()
    payload = json.loads((tmp_path / "acc.json").read_text())
    assert payload["rows"][1]["delta_ppl_vs_dense"] == 15.0
    assert read_rows(tmp_path / "acc.csv")[1]["pattern"] == "2:4"
    first = (tmp_path / "acc.csv").read_bytes()
    write_tables(read_rows(tmp_path / "acc.csv"), tmp_path / "acc", None, {"model": "m"})
    assert (tmp_path / "acc.csv").read_bytes() == first  # byte-identical after a round trip


def test_a_foreign_table_is_refused(tmp_path):
    (tmp_path / "acc.csv").write_text("a,b\n1,2\n")
    with pytest.raises(NmsimError, match="not an nmsim accuracy table"):
        read_rows(tmp_path / "acc.csv")


@pytest.mark.slow
def test_study_resumes_and_loses_no_row_on_interrupt(smollm, tmp_path, monkeypatch):
    grid = build_grid(["2:4", "8:16"], ["magnitude"], ["none"], [make_targets("all")])
    settings = StudySettings(max_tokens=512)
    real_perplexity = accuracy.perplexity
    calls = []
    interrupted = []

    def interrupt_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3 and not interrupted:
            interrupted.append(1)
            raise KeyboardInterrupt
        return real_perplexity(*args, **kwargs)

    monkeypatch.setattr(accuracy, "perplexity", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_study(grid, settings, tmp_path / "acc")
    assert [r["pattern"] for r in read_rows(tmp_path / "acc.csv")] == ["dense", "2:4"]

    calls.clear()
    table = run_study(grid, settings, tmp_path / "acc")
    assert len(calls) == 1  # only the unfinished 8:16 row ran
    assert table["pattern"].tolist() == ["dense", "2:4", "8:16"]
    assert table["tokens_evaluated"].tolist() == [511] * 3
    dense, two_four, eight_sixteen = table["perplexity"].tolist()
    assert dense < eight_sixteen < two_four

    calls.clear()
    first = (tmp_path / "acc.csv").read_bytes()
    run_study(grid, settings, tmp_path / "acc", recompute=True)
    assert len(calls) == 3  # every row evaluated again
    assert (tmp_path / "acc.csv").read_bytes() == first  # and the same table, byte for byte


def test_cli_rejects_bad_input_with_one_clear_line(capsys, tmp_path):
    assert main(["eval", "--patterns", "8-16", "--out", str(tmp_path / "x")]) == 2
    assert "unrecognised sparsity pattern '8-16'" in capsys.readouterr().err
    assert main(["eval", "--mitigations", "median", "--out", str(tmp_path / "x")]) == 2
    assert "unknown mitigation" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.gguf does not exist" in capsys.readouterr().err
    assert main(["eval", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_read_rows_spells_patterns_canonically(tmp_path):
    table = tmp_path / "t.csv"
    row = {c: "" for c in COLUMNS} | {"model": "m", "pattern": "m16n8", "operand": "activation", "criterion": "magnitude",
                                      "mitigation": "none", "targets": "all", "seqlen_tokens": 512,
                                      "tokens_evaluated": 511, "perplexity": 10.0, "data": "d", "density": 0.5}
    import pandas as pd

    pd.DataFrame([row, {**row, "pattern": "prune 2 of 4"}], columns=COLUMNS).to_csv(table, index=False)
    assert [r["pattern"] for r in read_rows(table)] == ["8:16", "2:4"]
    pd.DataFrame([{**row, "pattern": "8-16"}], columns=COLUMNS).to_csv(table, index=False)
    with pytest.raises(NmsimError, match=r"t.csv: column pattern: unrecognised sparsity pattern '8-16'"):
        read_rows(table)


def test_tables_without_a_dtype_column_are_float32_and_read_as_before(tmp_path):
    """The committed tables predate the column: their rows read as float32 and write back with only the column
    added (every other value, the deltas included, unchanged)."""
    for committed in sorted((Path(__file__).parents[1] / "reports").glob("*.csv")):
        original = pd.read_csv(committed, keep_default_na=False)
        if "perplexity" not in original.columns:
            continue
        assert "dtype" not in original.columns
        rows = read_rows(committed)
        assert {r["dtype"] for r in rows} == {"float32"}
        rewritten = write_tables(rows, tmp_path / committed.stem, None, {})
        pd.testing.assert_frame_equal(rewritten.drop(columns="dtype").astype(str).reset_index(drop=True),
                                      original[rewritten.columns.drop("dtype")].astype(str))


def test_a_bfloat16_row_is_refused_in_a_float32_table(tmp_path):
    from nmsim.llm.data import load_split

    data = load_split("test").name
    dense = {**_row("dense", 30.0, tokens=511), "operand": "-", "criterion": "-", "mitigation": "-", "targets": "-",
             "density": 1.0, "data": data}
    write_tables([dense], tmp_path / "acc", None, {})
    grid = build_grid(["8:16"], ["magnitude"], ["none"], [make_targets("all")])
    with pytest.raises(NmsimError, match=r"evaluated with dtype float32; this run has dtype bfloat16"):
        run_study(grid, StudySettings(dtype="bfloat16", max_tokens=512), tmp_path / "acc")
    with pytest.raises(NmsimError, match=r"unknown dtype 'bf16'; choose from float32, bfloat16, float16"):
        run_study(grid, StudySettings(dtype="bf16"), tmp_path / "acc")
