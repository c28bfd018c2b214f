"""The report at deployment scale: scenarios, device counts, the designs that run, the tables, and a conclusion
generated from the numbers (it changes when they do, and every number it quotes is in the tables)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from nmsim import pipeline
from nmsim.cli import main
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import parse_pattern
from nmsim.registry import (DEPLOYMENT_DECODE_BATCHES, DEPLOYMENT_DECODE_CONTEXTS, DEPLOYMENT_PREFILL_TOKENS,
                            TRACE_ROOT, model_shape)
from nmsim.report import deployment as dep
from nmsim.report import tables
from nmsim.sim.inference import memory_use
from nmsim.report.deployment_text import deployment_section, scale_lines, target_lines

REPO = Path(__file__).resolve().parents[2]
ACCURACY = (REPO / "reports" / "accuracy.csv", REPO / "reports" / "study_gemma3_16k.csv")
BASELINE = AcceleratorSpec.from_name("a100-dense")
PATTERNS = tuple(parse_pattern(p) for p in ("dense", "8:16", "16:32", "2:4"))


def test_scenarios_come_from_the_registry():
    labels = [s.label for s in dep.scenarios()]
    assert labels[:3] == ["prefill 512", "prefill 2k", "prefill 8k"]
    assert len(labels) == len(DEPLOYMENT_PREFILL_TOKENS) + len(DEPLOYMENT_DECODE_BATCHES) * len(
        DEPLOYMENT_DECODE_CONTEXTS) == 11
    assert "decode B=256 @ 32k" in labels


def test_a_model_that_does_not_fit_runs_on_the_fewest_devices_that_hold_it():
    prefill = dep.Scenario("prefill", 1, 2048)
    assert dep.fitting_devices(BASELINE, model_shape("llama-3.1-8b"), prefill) == 1  # 16 GB of weights in 40 GB
    # Llama 3 70B: 141 GB of FP16 weights; A100 40 GB: 4 devices (3 does not divide its 8 KV heads)
    assert dep.fitting_devices(BASELINE, model_shape("llama-3-70b"), prefill) == 4
    # decode of 64 sequences at 32k: the KV cache (275 GB) needs 8 devices, 4 do not hold it
    shape = model_shape("llama-3.1-8b")
    assert dep.fitting_devices(BASELINE, shape, dep.Scenario("decode", 64, 32768)) == 8
    assert memory_use(BASELINE, shape, 64, 32768 + 16, 8, 0.0).fits and not memory_use(
        BASELINE, shape, 64, 32768 + 16, 4, 0.0).fits
    # 256 sequences at 32k (1.1 TB of KV cache) fit on no degree that divides its 8 KV heads
    assert dep.fitting_devices(BASELINE, shape, dep.Scenario("decode", 256, 32768)) is None


def test_the_designs_that_run_at_deployment_scale():
    designs = pipeline.load_designs((), "a100-dense", PATTERNS)
    pairs = dep.deployment_pairs(designs.designs, designs.baseline, designs.natives, PATTERNS)
    names = [(spec.name, str(p)) for spec, p in pairs]
    assert names[0] == ("a100-dense", "dense")
    assert {("act-8of16", "8:16"), ("act-16of32", "16:32"), ("act-2of4", "2:4"), ("nvidia-2of4", "2:4")} <= set(names)
    # a weight-sparse design on other hardware (the PCIe card) is left out: the comparison is of sparsity alone
    assert not any(name == "a100-80gb-pcie-2of4" for name, _ in names)


@pytest.fixture(scope="module")
def small_run():
    """The deployment stage on the two traced models with four designs (the 7-8B models take longer)."""
    designs = pipeline.load_designs(("a100-dense", "act-8of16", "act-16of32", "nvidia-2of4"), "a100-dense", PATTERNS)
    targets = dep.load_targets(("smollm2-135m", "gemma3-270m"), PATTERNS, TRACE_ROOT)
    deployment = pipeline.deployment_stage(targets, designs, PATTERNS)
    rows = tables.load_accuracy(list(ACCURACY))
    fronts = dep.fronts(deployment.table, targets, deployment.pairs, rows, tables.best_accuracy)
    out = {"targets": dep.targets_table(targets, rows, tables.best_accuracy), "deployment": deployment.table,
           "deployment_band": deployment.band, "deployment_fronts": fronts,
           "deployment_summary": dep.summary(deployment.table, fronts, deployment.band, designs.natives)}
    return out


def test_deployment_rows_are_end_to_end_and_consistent(small_run):
    table = small_run["deployment"]
    assert list(table.columns) == list(dep.COLUMNS)
    assert len(table) == 2 * 11 * 4  # targets × scenarios × (design, pattern)
    prefill, decode = table[table.phase == "prefill"], table[table.phase == "decode"]
    assert prefill.tpot_ms.isna().all() and decode.ttft_ms.isna().all()
    # tokens/s is the step's tokens over its time
    decode = decode[decode.devices > 0]
    assert (decode.tokens_per_s * decode.tpot_ms / 1e3 / decode.batch).sub(1).abs().max() < 1e-9
    assert (prefill.tokens_per_s * prefill.ttft_ms / 1e3 / prefill.context_tokens).sub(1).abs().max() < 1e-9
    fits = table[table.devices > 0]
    assert (fits.energy_per_token_mJ > 0).all()
    # smollm2-135m (3 KV heads) at B=256 @ 32k fits no degree: not simulated, and the note says what it needs
    unfit = table[table.devices == 0]
    assert set(unfit.scenario) == {"decode B=256 @ 32k"} and set(unfit.model) == {"smollm2-135m"}
    assert unfit.tpot_ms.isna().all() and unfit.note.str.contains("does not fit a100-dense").all()
    sparse = table[(table.pattern == "8:16") & (table.scenario == "prefill 2k")]
    assert (sparse.e2e_speedup_vs_dense_same_design > 1.1).all()
    assert set(table[table.pattern != "dense"].statistics) == {
        "measured (smollm2-135m_8of16_magnitude_none)", "measured (smollm2-135m_16of32_magnitude_none)",
        "measured (gemma3-270m_8of16_magnitude_none)", "measured (gemma3-270m_16of32_magnitude_none)"} | set(
        table[table.operand == "weight"].statistics)
    # the band runs the other traced model's profiles on the same cases
    band = small_run["deployment_band"]
    assert set(band.band_statistics) == {"transplanted from gemma3-270m", "transplanted from smollm2-135m"}


def test_accuracy_is_the_targets_own_or_a_labelled_proxy(small_run, tmp_path):
    rows = tables.load_accuracy(list(ACCURACY))
    llama = dep.load_targets(("llama-3.1-8b",), PATTERNS, TRACE_ROOT)[0]
    _, label = dep.target_accuracy(rows, llama, tables.best_accuracy)
    assert label.startswith("proxy: measured on smollm2-135m, not on llama-3.1-8b")
    own = rows[rows.model == "smollm2-135m"].assign(model="llama-3.1-8b")  # a user's table for the target
    _, label = dep.target_accuracy(pd.concat([rows, own]), llama, tables.best_accuracy)
    assert label == "measured on llama-3.1-8b"
    assert list(small_run["targets"].accuracy) == ["measured on smollm2-135m", "measured on gemma3-270m"]


def _numbers(text: str) -> list[str]:
    """The numbers a sentence quotes, without names, patterns and labels that carry digits."""
    for name in ("llama-2-7b", "llama-3.1-8b", "qwen2.5-7b", "gemma-3-4b", "smollm2-135m", "gemma3-270m",
                 "act-8of16", "act-16of32", "nvidia-2of4", "a100-dense"):
        text = text.replace(name, "")
    text = re.sub(r"\d+:\d+", "", text)  # patterns
    text = re.sub(r"\b\d+k\b", "", text)  # scenario contexts
    text = re.sub(r"_\w+", "", text)
    return re.findall(r"\d+(?:\.\d+)?", text)


def test_every_number_in_the_conclusion_is_in_the_tables(small_run):
    values = set()
    for frame in small_run.values():
        for column in frame.select_dtypes("number"):
            for v in frame[column].dropna():
                values.update({f"{v:.{d}f}" for d in range(4)})
                values.update({f"{-v:.{d}f}" for d in range(4)})
    values.update({"1.05", "1", "2", "0"})  # the benefit threshold; "1 device"; B=1 and the like
    lines = target_lines(small_run, "die") + scale_lines(small_run, "die")
    assert lines and all(number in values for line in lines for number in _numbers(line)), [
        (number, line[:80]) for line in lines for number in _numbers(line) if number not in values]


def test_the_conclusion_follows_the_numbers(small_run):
    """A small synthetic case where 16:32 wins: the same tables with its prefill speedup raised."""
    base = "\n".join(scale_lines(small_run, "die"))
    changed = {name: frame.copy() for name, frame in small_run.items()}
    summary = changed["deployment_summary"]
    for sign, word in ((1, "more efficient"), (-1, "less efficient")):
        summary["efficiency_gain_pct"] = sign * 12.5
        summary["efficiency_ratio"] = 1 + sign * 0.125
        text = "\n".join(scale_lines(changed, "die"))
        assert f"16:32 is 12.5 % {word} per die mm² than 8:16" in text
        assert ("pays for itself only if" in text) == (sign < 0)
    assert base != text
    # a decode benefit that never ends is said so
    changed["deployment_summary"]["decode_benefit_gone_batch"] = math.nan
    assert "keeps a decode benefit at every batch" in "\n".join(target_lines(changed, "die"))


@pytest.fixture(scope="module")
def report_runs(tmp_path_factory):
    """Two whole `nmsim run`s on SmolLM2-135M at datapath area, where 16:32 loses on efficiency with the preset
    8:16 design and wins when the 8:16 design is a synthetic user's one with four times the selector lanes (a
    larger front end): the conclusion has to follow."""
    tmp = tmp_path_factory.mktemp("runs")
    wide = tmp / "wide-8of16.yaml"
    wide.write_text("base: act-8of16\nname: wide-8of16\ndescription: act-8of16 with four times the selector lanes\n"
                    "sparsity: {selector_groups_per_cycle: 64}\n", encoding="utf-8")
    folders = {}
    for name, eight in (("preset", "act-8of16"), ("wide", str(wide))):
        request = pipeline.RunRequest(
            name=name, designs=("a100-dense", eight, "act-16of32", "act-hierarchical", "nvidia-2of4"),
            patterns=("2:4", "8:16", "16:32"), accuracy=(REPO / "reports" / "accuracy.csv",),
            out_root=tmp / "reports", command="pytest", target_models=("smollm2-135m",), area_level="datapath",
            trace_root=TRACE_ROOT)
        folders[name] = pipeline.run(request)
    return folders


def _conclusions(folder: Path) -> list[str]:
    """The report's conclusion lines and the deployment section's bullets."""
    text = (folder / "report.md").read_text(encoding="utf-8")
    main = text.split("## Conclusion", 1)[1].split("\n## ", 1)[0]
    deployment = text.split("## At deployment scale", 1)[1].split("\n## ", 1)[0]
    return [line for line in main.splitlines() if line.strip()] + [
        line for line in deployment.splitlines() if line.startswith("- **")]


def test_every_number_in_both_conclusions_is_in_the_written_tables(report_runs):
    for folder in report_runs.values():
        values = {"1.05"}  # the decode-benefit threshold
        for path in folder.glob("*.csv"):
            frame = pd.read_csv(path)
            for column in frame.select_dtypes("number"):
                for v in frame[column].dropna():
                    values.update({f"{sign * v:.{d}f}" for d in range(4) for sign in (1, -1)})
        lines = _conclusions(folder)
        assert len(lines) >= 8 and sum(len(_numbers(line)) for line in lines) > 40
        missing = [(number, line[:70]) for line in lines for number in _numbers(line) if number not in values]
        assert not missing, (folder.name, missing)


def test_the_conclusion_changes_when_the_inputs_do(report_runs):
    """With the preset 8:16 design 16:32 pays for its larger front end; with a larger 8:16 front end it does not,
    and both conclusions (the traced model's and the deployment's) say so, quoting the decision tables."""
    said = {name: "\n".join(_conclusions(folder)) for name, folder in report_runs.items()}
    decision = {name: pd.read_csv(folder / "decision_summary.csv").iloc[0] for name, folder in report_runs.items()}
    summary = {name: pd.read_csv(folder / "deployment_summary.csv").iloc[0] for name, folder in report_runs.items()}
    assert decision["preset"].efficiency_ratio < 1 < decision["wide"].efficiency_ratio
    assert summary["preset"].efficiency_gain_pct < 0 < summary["wide"].efficiency_gain_pct
    preset, wide = said["preset"], said["wide"]
    assert f"16:32 is {-decision['preset'].efficiency_change_pct:.1f} % less efficient per datapath mm²" in preset
    assert "16:32's price" in preset and "costs nothing" not in preset
    assert f"16:32 is {decision['wide'].efficiency_change_pct:.1f} % more efficient per datapath mm²" in wide
    assert "16:32 costs nothing here" in wide and "its design is the smaller one" in wide
    assert "native 8:16 (wide-8of16)" in wide
    # the deployment conclusion: the accuracy lever when 16:32 costs throughput, the area lever when it does not
    assert "16:32 pays for itself only if" in preset and "area does not favour 8:16" not in preset
    assert "area does not favour 8:16" in wide and "pays for itself" not in wide
    assert f"{summary['wide'].efficiency_gain_pct:.1f} % more efficient per datapath mm² than 8:16" in wide
    # one target model: the scale comparison names it once
    assert wide.count("at smollm2-135m (0.1 B)") == 1 and "model size:" not in wide


def test_the_section_and_the_command_line(small_run, tmp_path, monkeypatch):
    section = "\n".join(deployment_section(small_run, "die"))
    assert section.startswith("## At deployment scale") and "| smollm2-135m |" in section
    assert deployment_section({"targets": pd.DataFrame()}, "die") == []
    monkeypatch.chdir(REPO)
    out = tmp_path / "r"
    assert main(["run", "--target-models", "none", "--designs", "a100-dense,act-8of16,act-16of32",
                 "--patterns", "8:16,16:32", "--report-root", str(out)]) == 0
    assert not (out / "smollm2-135m" / "deployment.csv").exists()
    assert main(["run", "--target-models", "no-such-model", "--report-root", str(out)]) == 2


def test_figures_say_when_designs_are_at_different_nodes():
    from nmsim.report.figures import _nodes_note

    assert _nodes_note(pd.DataFrame({"technology_nm": [7, 7]})) == ""
    assert "designs at 4, 7, 45 nm (labels): not like for like" in _nodes_note(
        pd.DataFrame({"technology_nm": [7, 4, 45]}))


def test_deployment_scenarios_can_be_chosen():
    chosen = dep.scenarios((1024,), (2, 16), (4096,))
    assert [s.label for s in chosen] == ["prefill 1k", "decode B=2 @ 4k", "decode B=16 @ 4k"]
    with pytest.raises(pipeline.NmsimError, match="decode batches: expected positive whole numbers"):
        dep.scenarios((512,), (0,), (2048,))
    with pytest.raises(SystemExit) as exit_info:  # argparse: one usage line and status 2
        main(["run", "--decode-batches", "0", "--report-root", "/nonexistent"])
    assert exit_info.value.code == 2
