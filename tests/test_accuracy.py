"""The accuracy table: columns, Δ vs dense and its interval, the per-window sidecar, older tables, resume,
interruption, and the CLI's error handling."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nmsim.accuracy.fidelity as fidelity
import nmsim.accuracy.study as accuracy
from nmsim.accuracy.fidelity import GreedySettings
from nmsim.accuracy.study import COLUMNS, StudySettings, build_grid, read_rows, row_labels, run_study, write_tables
from nmsim.accuracy.table import FIDELITY_COLUMNS, OPTIONAL_COLUMNS, read_windows, window_frame
from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.sparsify.targets import make_targets

REPO = Path(__file__).resolve().parents[1]


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
    """A real run on two windows: fidelity columns, the per-window sidecar and its intervals, one dense reference
    for every row and run, and resumes that skip finished rows, also when they lack the newer columns."""
    monkeypatch.setattr(fidelity, "reference_root", lambda: tmp_path / "cache")
    builds = []
    real_build = fidelity._build
    monkeypatch.setattr(fidelity, "_build", lambda *a: builds.append(1) or real_build(*a))
    grid = build_grid(["2:4", "8:16"], ["magnitude"], ["none"], [make_targets("all")])
    settings = StudySettings(max_tokens=1024, greedy=GreedySettings(prompts=2, prompt_tokens=16, tokens=4))
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
    assert table["tokens_evaluated"].tolist() == [1022] * 3
    dense, two_four, eight_sixteen = table["perplexity"].tolist()
    assert dense < eight_sixteen < two_four
    assert table.loc[0, ["kl_mean_nats", "top1_agreement", "greedy_agreement_tokens"]].tolist() == [0.0, 1.0, 4.0]
    kl, top1, greedy = (table[c].tolist()[1:] for c in ("kl_mean_nats", "top1_agreement", "greedy_agreement_tokens"))
    assert kl[0] > kl[1] > 0 and 0 < top1[0] < top1[1] < 1 and all(0 <= g <= 4 for g in greedy)
    assert (table["delta_ppl_ci_low"] <= table["delta_ppl_vs_dense"] + 1e-3).all()
    assert (table["delta_ppl_vs_dense"] <= table["delta_ppl_ci_high"] + 1e-3).all()
    assert table.loc[0, ["delta_ppl_ci_low", "delta_ppl_ci_high"]].tolist() == [0.0, 0.0]
    windows = read_windows(tmp_path / "acc.csv")
    assert len(windows) == 6 and windows["window"].tolist() == [0, 1] * 3 and set(windows["tokens"]) == {511}
    by_row = windows.groupby("pattern", sort=False)
    assert by_row["nll_sum_nats"].sum().apply(lambda nll: round(math.exp(nll / 1022), 4)).tolist() == \
        table["perplexity"].tolist()
    assert (by_row["kl_sum_nats"].sum() / 1022).round(6).tolist() == table["kl_mean_nats"].tolist()
    assert builds == [1]  # one dense reference, built for the 2:4 row and read back for 8:16

    finished = (tmp_path / "acc.csv").read_bytes()
    old = pd.read_csv(tmp_path / "acc.csv").drop(columns=OPTIONAL_COLUMNS)  # as a table from before the metrics
    old.to_csv(tmp_path / "acc.csv", index=False)
    (tmp_path / "acc.windows.csv").unlink()
    calls.clear()
    table = run_study(grid, settings, tmp_path / "acc")
    assert calls == [] and table["kl_mean_nats"].isna().all()  # nothing recomputed for the missing metrics
    assert "kl_mean_nats, top1_agreement, greedy_agreement_tokens not measured" in (tmp_path / "acc.md").read_text()

    calls.clear()
    run_study(grid, settings, tmp_path / "acc", recompute=True)
    assert len(calls) == 3  # every row evaluated again
    assert (tmp_path / "acc.csv").read_bytes() == finished  # and the same table, byte for byte
    assert builds == [1]  # the dense reference came from the cache


def test_old_tables_read_with_unmeasured_metrics_and_keep_their_numbers(tmp_path):
    """The committed tables predate the fidelity columns and the sidecar: they read, NaN where not measured, and
    written again every older column is the same, byte for byte."""
    committed = REPO / "reports" / "study_smollm2_16k.csv"
    rows = read_rows(committed)
    assert all(math.isnan(r[c]) for r in rows for c in FIDELITY_COLUMNS)
    table = write_tables(rows, tmp_path / "old", None, {})
    original = pd.read_csv(committed)
    assert table[list(original.columns)].to_csv(index=False, lineterminator="\n") == committed.read_text()
    assert table[OPTIONAL_COLUMNS].isna().all(axis=None)
    markdown = (tmp_path / "old.md").read_text()
    assert "greedy_agreement_tokens not measured (evaluated before these metrics existed" in markdown
    assert f"delta_ppl_ci_low/high unknown (no per-window NLLs for the row or its dense row): all {len(rows)} rows" \
        in markdown
    assert not (tmp_path / "old.windows.csv").exists()


def test_the_sidecar_gives_intervals_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    dense = {**_row("dense", 0.0), "operand": "-", "criterion": "-", "mitigation": "-", "targets": "-",
             "density": 1.0, "kl_mean_nats": 0.0, "top1_agreement": 1.0, "greedy_agreement_tokens": 32.0}
    rows = [dense, _row("2:4", 0.0), _row("8:16", 0.0)]  # 8:16: no windows
    base = rng.normal(3.0, 0.3, 4) * 511
    windows = pd.concat([window_frame(dense, base, 511, 0.0, 511),
                         window_frame(rows[1], base + 0.4 * 511, 511, rng.random(4) * 511, [200, 210, 220, 230])])
    for row, nll in zip(rows, (base, base + 0.4 * 511, base + 0.2 * 511)):
        row["perplexity"] = round(math.exp(nll.sum() / (4 * 511)), 4)
    table = write_tables(rows, tmp_path / "acc", None, {}, windows)
    assert table.loc[0, "delta_ppl_ci_low"] == table.loc[0, "delta_ppl_ci_high"] == 0.0
    assert 0 < table.loc[1, "delta_ppl_ci_low"] < table.loc[1, "delta_ppl_vs_dense"] < table.loc[1, "delta_ppl_ci_high"]
    assert math.isnan(table.loc[2, "delta_ppl_ci_low"])
    assert "delta_ppl_ci_low/high unknown (no per-window NLLs for the row or its dense row): activation 8:16" in \
        (tmp_path / "acc.md").read_text()
    back = read_windows(tmp_path / "acc.csv")
    assert back["nll_sum_nats"].tolist() == windows["nll_sum_nats"].tolist()  # float64, exactly
    assert back["top1_matches"].tolist() == [511] * 4 + [200, 210, 220, 230]
    first = (tmp_path / "acc.csv").read_bytes()
    write_tables(read_rows(tmp_path / "acc.csv"), tmp_path / "acc", None, {}, back)
    assert (tmp_path / "acc.csv").read_bytes() == first


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
                                      "tokens_evaluated": 511, "perplexity": 10.0, "data": "d", "density": 0.5,
                                      "dtype": "float32"}
    import pandas as pd

    pd.DataFrame([row, {**row, "pattern": "prune 2 of 4"}], columns=COLUMNS).to_csv(table, index=False)
    assert [r["pattern"] for r in read_rows(table)] == ["8:16", "2:4"]
    pd.DataFrame([{**row, "pattern": "8-16"}], columns=COLUMNS).to_csv(table, index=False)
    with pytest.raises(NmsimError, match=r"t.csv: column pattern: unrecognised sparsity pattern '8-16'"):
        read_rows(table)


def test_tables_without_a_dtype_column_are_float32_and_read_as_before(tmp_path):
    """The committed tables predate the column: their rows read as float32 and write back with only the column
    added (every other value, the deltas included, unchanged)."""
    older = 0
    for committed in sorted((Path(__file__).parents[1] / "reports").glob("*.csv")):
        original = pd.read_csv(committed, keep_default_na=False)
        if "perplexity" not in original.columns or "dtype" in original.columns:
            continue  # not an accuracy table, or one written since (reports/accuracy.csv)
        older += 1
        rows = read_rows(committed)
        assert {r["dtype"] for r in rows} == {"float32"}
        rewritten = write_tables(rows, tmp_path / committed.stem, None, {})
        added = ["dtype", *OPTIONAL_COLUMNS]  # columns the committed tables predate (the others are NaN: not measured)
        assert rewritten[OPTIONAL_COLUMNS].isna().all().all()
        pd.testing.assert_frame_equal(rewritten.drop(columns=added).astype(str).reset_index(drop=True),
                                      original[rewritten.columns.drop(added)].astype(str))
    assert older >= 4  # the study tables and the dense full-test baseline


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
