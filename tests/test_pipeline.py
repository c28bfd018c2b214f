"""``nmsim run`` as a list of stages: end to end on the committed inputs, each stage alone, and the bugs of the
structure it replaced (accuracy rows chosen by count, pattern strings as join keys)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

import nmsim.accuracy.study as study
from nmsim import pipeline
from nmsim.accuracy.table import read_rows
from nmsim.cli import main
from nmsim.patterns import parse_pattern
from nmsim.pipeline import AccuracyRequest, RunRequest, planned_row_keys
from nmsim.registry import TRACE_ROOT, model_shape

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "reports" / "smollm2-135m"
SMALL = ("a100-dense", "act-2of4", "act-8of16", "act-16of32")


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".csv", ".parquet", ".png", ".svg")}


@pytest.mark.slow
def test_nmsim_run_reproduces_the_committed_report(tmp_path, monkeypatch):
    """The README's main job from the committed tables and traces: every table (CSV and Parquet) and figure of
    reports/smollm2-135m/ byte for byte, and the same report text."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "reports"
    assert main(["run", "--report-root", str(out)]) == 0
    written = out / "smollm2-135m"
    expected = _files(COMMITTED)
    assert len(expected) == 19 * 2 + 12 * 2  # tables (CSV + Parquet) and figures (PNG + SVG)
    assert _files(written) == expected
    # the text too: it names no command line, so a plain `nmsim run` leaves the tracked report as it is
    assert (written / "report.md").read_text() == (COMMITTED / "report.md").read_text()
    assert (written / "report.html").read_text() == (COMMITTED / "report.html").read_text()


def _request(tmp: Path, **changes) -> RunRequest:
    settings = {"name": "small", "designs": SMALL, "accuracy": (REPO / "reports" / "accuracy.csv",),
                "out_root": tmp / "reports", "command": "pytest", "target_models": ()}
    return RunRequest(**{**settings, **changes})


def test_apex_and_prune_spellings_give_the_same_report(tmp_path, monkeypatch):
    """A regression test: pattern strings were the join keys, so build_report(patterns=("dense", "m4n2", "m16n8"))
    crashed in the tables with a pandas TypeError."""
    monkeypatch.chdir(REPO)
    canonical = pipeline.run(_request(tmp_path, name="canonical", patterns=("dense", "2:4", "8:16")))
    apex = pipeline.run(_request(tmp_path, name="apex", patterns=("dense", "m4n2", "m16n8")))
    prune = pipeline.run(_request(tmp_path, name="prune", patterns=("prune 2 of 4", "prune_n=8,prune_m=16")))
    assert _files(apex) == _files(canonical) == _files(prune)
    tradeoff = pd.read_csv(apex / "tradeoff.csv")
    assert set(tradeoff.pattern) == {"dense", "2:4", "8:16"}


def test_the_report_stages_read_results_and_never_simulate(tmp_path, monkeypatch):
    """The simulation stage runs each case once; tables and figures only read its results."""
    monkeypatch.chdir(REPO)
    request = _request(tmp_path, patterns=("8:16", "16:32"))
    designs = pipeline.load_designs(request.designs, request.baseline, request.patterns)
    shape = model_shape(request.model)
    traces = pipeline.statistics_stage(shape, request.patterns, TRACE_ROOT)
    assert [str(p) for p in traces] == ["dense", "8:16", "16:32"] and all(traces.values())
    cases = pipeline.report_cases(designs, request.patterns, traces)
    simulated = pipeline.simulation_stage(shape, designs, request.patterns, traces)
    assert len(simulated.results.totals) == len({case.key for case in cases}) < len(cases)

    def no_simulation(*args, **kwargs):
        raise AssertionError("a stage after the simulation simulated")

    monkeypatch.setattr("nmsim.sim.cases.simulate_model", no_simulation)
    monkeypatch.setattr("nmsim.sim.simulate.simulate_model", no_simulation)
    monkeypatch.setattr("nmsim.pipeline.simulate_model", no_simulation)
    from nmsim.report import tables

    accuracy = tables.load_accuracy(list(request.accuracy))
    inputs = tables.inputs(designs.designs, traces, request.accuracy, None)
    result = pipeline.tables_stage(shape, designs, request.patterns, traces, simulated, accuracy, inputs)
    target = pipeline.report_stage(result, shape, designs.baseline, tmp_path / "alone")
    assert (target / "report.md").is_file() and len(list((target / "figures").glob("*.png"))) == 9  # + validation
    perf = result["performance"]
    assert set(perf.design) == set(SMALL) and set(perf.pattern) == {"dense", "8:16", "16:32"}


def _copy_table(tmp: Path) -> Path:
    prefix = tmp / "accuracy"
    for suffix in (".csv", ".md"):
        shutil.copy(REPO / "reports" / f"accuracy{suffix}", prefix.with_suffix(suffix))
    return prefix


@pytest.fixture
def spy_study(monkeypatch):
    """Record run_study calls instead of evaluating."""
    calls = []
    monkeypatch.setattr(study, "run_study", lambda grid, settings, *a, **k: calls.append((grid, settings)) or
                        pd.DataFrame())
    return calls


def test_accuracy_stage_reuses_a_table_only_when_every_row_key_is_there(tmp_path, monkeypatch, spy_study):
    """A regression test: the stage compared row counts, so with the committed 16-row table `nmsim run --max-tokens
    65536` or `--criteria amber` reused the 16k-token magnitude rows."""
    monkeypatch.chdir(REPO)
    prefix = _copy_table(tmp_path)
    assert len(read_rows(prefix.with_suffix(".csv"))) == 16
    default = AccuracyRequest(out=prefix)
    assert len(planned_row_keys(default)) == 16
    pipeline.accuracy_stage(default)
    assert spy_study == []  # every row is there
    for changed in ({"max_tokens": 65536}, {"criteria": ("amber",)}, {"mitigations": ("none", "variance+learnable")},
                    {"patterns": (parse_pattern("m8n2"),)}, {"seqlen": 256}, {"targets": ("no-qkv",)},
                    {"model": "gemma3-270m"}, {"max_tokens": None}, {"recompute": True}, {"dtype": "bfloat16"}):
        spy_study.clear()
        pipeline.accuracy_stage(AccuracyRequest(out=prefix, **changed))
        assert len(spy_study) == 1, changed
        grid, settings = spy_study[0]
        assert settings.max_tokens == changed.get("max_tokens", 16384) and settings.model == changed.get(
            "model", "smollm2-135m")
        assert settings.dtype == changed.get("dtype", "float32") and settings.device == "cpu"
    smaller = AccuracyRequest(out=prefix, patterns=(parse_pattern("2:4"),), mitigations=("none",))
    spy_study.clear()
    pipeline.accuracy_stage(smaller)  # a sub-grid of the table's rows needs no evaluation
    assert spy_study == []


def test_nmsim_run_with_other_tokens_evaluates_instead_of_reusing(tmp_path, monkeypatch, spy_study):
    """The same through the command line: `nmsim run` reaches the accuracy stage with the options given."""
    monkeypatch.chdir(REPO)
    prefix = _copy_table(tmp_path)

    def stop(*args, **kwargs):
        raise pipeline.NmsimError("stopped after the accuracy stage")

    monkeypatch.setattr(pipeline, "statistics_stage", stop)
    args = ["run", "--out", str(prefix), "--report-root", str(tmp_path / "r")]
    assert main(args) == 2 and spy_study == []
    assert main([*args, "--max-tokens", "65536"]) == 2
    assert main([*args, "--criteria", "amber"]) == 2
    assert [(settings.max_tokens, {g.criterion for g in grid if g.pattern.kind != "dense"})
            for grid, settings in spy_study] == [(65536, {"magnitude"}), (16384, {"amber"})]


def test_eval_refuses_to_mix_settings_into_a_table(tmp_path, monkeypatch, capsys):
    """A regression test: `nmsim eval` appended rows of another token count or window length to
    reports/accuracy.csv and rewrote its header; now it refuses, naming both settings, and leaves the table be."""
    monkeypatch.chdir(REPO)
    prefix = _copy_table(tmp_path)
    before = prefix.with_suffix(".csv").read_bytes(), prefix.with_suffix(".md").read_bytes()
    assert main(["eval", "--patterns", "2:4", "--seqlen", "256", "--out", str(prefix)]) == 2
    error = capsys.readouterr().err
    assert "seqlen_tokens 512" in error and "seqlen_tokens 256" in error and "--out PREFIX" in error
    assert (prefix.with_suffix(".csv").read_bytes(), prefix.with_suffix(".md").read_bytes()) == before
    from nmsim.cli import _max_tokens

    assert _max_tokens("all") is None and _max_tokens("1024") == 1024  # the whole split is asked for by name


@pytest.mark.slow
def test_eval_refuses_another_token_count_and_defaults_to_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    prefix = _copy_table(tmp_path)
    before = prefix.with_suffix(".csv").read_bytes()
    assert main(["eval", "--patterns", "2:4", "--max-tokens", "1024", "--out", str(prefix)]) == 2
    error = capsys.readouterr().err
    assert "tokens_evaluated 16352" in error and "tokens_evaluated 1022" in error
    assert prefix.with_suffix(".csv").read_bytes() == before
    # without --max-tokens, eval evaluates what run does (16,384 tokens): the table's rows are there, nothing to do
    assert main(["eval", "--patterns", "2:4", "--out", str(prefix)]) == 0
    assert prefix.with_suffix(".csv").read_bytes() == before


def test_narrowed_patterns_keep_the_sensitivity_pair_on_its_traces(tmp_path, monkeypatch):
    """A regression test: with --patterns 2:4,8:16 the sensitivity's act-16of32 ran on the idealised N/M answer
    (1.234× decode) while the report said "from real traces"; its statistics are now measured, as in a full run."""
    monkeypatch.chdir(REPO)
    narrow = pipeline.run(_request(tmp_path, name="narrow", patterns=("2:4", "8:16")))
    full = pipeline.run(_request(tmp_path, name="full", patterns=("2:4", "8:16", "16:32")))
    narrow_sens, full_sens = (pd.read_csv(folder / "sensitivity.csv") for folder in (narrow, full))
    assert set(narrow_sens.design_b) == {"act-16of32"}
    assert set(narrow_sens["statistics_b"]) == {"measured (smollm2-135m_16of32_magnitude_none)"}
    pd.testing.assert_frame_equal(narrow_sens, full_sens)
    assert "16:32" not in set(pd.read_csv(narrow / "performance.csv").pattern)  # the tables keep to the run's
    assert "16of32" in pd.read_csv(narrow / "inputs.csv").to_string()  # the trace it read is listed


def test_a_users_design_beside_the_presets_reads_plainly(tmp_path, monkeypatch):
    """A regression test: with a user's 8:16 design in the run the conclusion read "native 8:16 is dominated … by
    act-8of16 8:16; on the accuracy vs area front"; it now names the design it speaks of and joins its clauses."""
    monkeypatch.chdir(REPO)
    mine = tmp_path / "my-8of16.yaml"
    mine.write_text("base: act-8of16\nname: my-8of16\ndescription: a user's 8:16 design\n"
                    "sparsity: {selector_groups_per_cycle: 8}\n", encoding="utf-8")
    folder = pipeline.run(_request(tmp_path, name="mine", patterns=("8:16", "16:32"),
                                   designs=("a100-dense", str(mine), "act-8of16", "act-16of32")))
    text = (folder / "report.md").read_text(encoding="utf-8")
    (line,) = [x for x in text.splitlines() if x.startswith("**Conclusion for")]
    assert "native 8:16 (my-8of16) is " in line and "; on the" not in line and "; dominated" not in line
    assert "front" in line


def test_sensitivity_runs_on_the_pairs_asked_for_with_units(tmp_path, monkeypatch):
    """The sensitivity runs on the run's own native designs and on every pair asked for; x carries its unit (a
    value width is bits, not a factor)."""
    monkeypatch.chdir(REPO)
    folder = pipeline.run(_request(tmp_path, name="pairs", patterns=("2:4", "8:16", "16:32"),
                                   sensitivity_pairs=(("2:4", "8:16"), ("8:16", "16:32"))))
    table = pd.read_csv(folder / "sensitivity.csv")
    assert list(dict.fromkeys(table.pair)) == ["2:4 vs 8:16", "8:16 vs 16:32"]
    assert set(table[table.pair == "2:4 vs 8:16"].design_a) == {"act-2of4"}
    width = table[table.parameter == "compute.value_bits"]
    assert set(width.unit) == {"bits"} and set(width.x) == {4, 8, 16}
    assert set(table[table.parameter != "compute.value_bits"].unit) == {"× preset"}
    assert not table.label.str.contains("×").any()
    even = pd.read_csv(folder / "break_even.csv")
    assert set(even.pair) == set(table.pair) and "unit" in even
    figures = {p.name for p in (folder / "figures").glob("sensitivity_*.png")}
    assert figures == {"sensitivity_2of4_vs_8of16.png", "sensitivity_8of16_vs_16of32.png"}
    with pytest.raises(pipeline.NmsimError, match="no native activation design for 4:8"):
        pipeline.run(_request(tmp_path, name="bad", patterns=("8:16", "16:32"), sensitivity_pairs=(("4:8", "8:16"),)))
