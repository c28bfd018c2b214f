"""Mask profiles: the file, the statistical mask model against the committed traces' measured statistics, the
transplant to untraced models, and the rule that nothing is idealised silently."""

from __future__ import annotations

import json
import logging
import math
import shutil

import pytest

from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import parse_pattern
from nmsim.pipeline import SimulateRequest, simulate
from nmsim.registry import TRACE_ROOT, model_shape, statistics_source
from nmsim.traces.mask_model import MaskModel, fit, group_histogram
from nmsim.traces.profile import PROFILE_FILE, measured_statistics, profile_from_trace, read_profile, write_profile
from nmsim.traces.reader import TraceData
from nmsim.traces.sources import statistics_for
from nmsim.traces.transplant import mac_slots_per_position, summarize, transfer_errors, transplant

SPARSE = ("2of4", "4of8", "8of16", "16of32", "unstructured0.5")


def _trace(model: str, slug: str) -> TraceData:
    name = f"{model}_dense" if slug == "dense" else f"{model}_{slug}_magnitude_none"
    return TraceData.open(TRACE_ROOT / name)


@pytest.fixture(scope="module")
def profile_816():
    return profile_from_trace(_trace("smollm2-135m", "8of16"))


def test_profile_round_trip_and_measured_statistics_equal_the_trace(tmp_path, profile_816):
    path = write_profile(profile_816, tmp_path / PROFILE_FILE)
    again = read_profile(tmp_path)
    assert again == read_profile(path)
    assert write_profile(again, tmp_path / "second.json").read_bytes() == path.read_bytes()  # stable bytes
    assert len(again.inputs) == 240 and again.model == "smollm2-135m" and str(again.pattern) == "8:16"
    assert again.source["token_order"]["decode"].startswith("step-major")
    trace = _trace("smollm2-135m", "8of16")
    stats = measured_statistics(again, tmp_path)
    assert stats.inputs.keys() == trace.inputs.keys()
    for key, measured in trace.inputs.items():
        assert [t for t, _ in stats.inputs[key].rows_needed] == [t for t, _ in measured.rows_needed]
        assert [u for _, u in stats.inputs[key].rows_needed] == pytest.approx([u for _, u in measured.rows_needed],
                                                                              abs=1e-6)
        assert stats.inputs[key].density == pytest.approx(measured.density, abs=1e-6)
    assert stats.provenance.startswith("measured")


def test_committed_profiles_are_the_ones_the_traces_give(profile_816):
    committed = read_profile(TRACE_ROOT / "smollm2-135m_8of16_magnitude_none")
    for phase, errors in profile_816.fit_summary().items():
        assert committed.fit_summary()[phase] == pytest.approx(errors, abs=1e-6)


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "not readable JSON"),
    (lambda text: text.replace('"density":0.5', '"density":0.51', 1), "checksum mismatch"),
    (lambda text: text.replace('"format_version": 1', '"format_version": 9'), "format version 9"),
    (lambda text: json.dumps({"format": "something else"}), "not an nmsim mask profile"),
])
def test_a_damaged_profile_gives_one_clear_error(tmp_path, damage, message):
    path = tmp_path / PROFILE_FILE
    shutil.copy(TRACE_ROOT / "smollm2-135m_8of16_magnitude_none" / PROFILE_FILE, path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(NmsimError, match=message):
        read_profile(path)
    with pytest.raises(NmsimError, match="nmsim traces profile"):
        read_profile(path)


def test_a_profile_missing_is_named(tmp_path):
    with pytest.raises(NmsimError, match=r"profile .*profile.json: missing"):
        read_profile(tmp_path)


def test_union_formula_limits_and_monotonicity():
    independent = MaskModel(0.5)
    assert independent.union(1) == 0.5 and independent.union(3) == pytest.approx(1 - 0.5 ** 3)
    assert MaskModel(0.5, kappa=1e9).union(7) == pytest.approx(1 - 0.5 ** 7, rel=1e-6)  # κ → ∞: independent
    clustered = MaskModel(0.5, kappa=0.5)
    values = [clustered.union(t) for t in (1, 2, 4, 16, 128)]
    assert values[0] == pytest.approx(0.5) and values == sorted(values) and values[-1] < independent.union(128)
    assert MaskModel(0.5, kappa=2.0, rho=0.5).union(3) == pytest.approx(MaskModel(0.5, kappa=2.0).union(2))
    fitted = fit(0.5, [(t, MaskModel(0.5, kappa=3.0, rho=0.6).union(t)) for t in (1, 2, 4, 8, 16, 32, 64, 128)])
    model, error = fitted["beta-correlated"]
    assert error < 1e-3 and model.kappa == pytest.approx(3.0, rel=0.1) and model.rho == pytest.approx(0.6, abs=0.05)


def test_group_histograms_are_hypergeometric_within_the_selection_group():
    two_of_four_in_816 = group_histogram(parse_pattern("8:16"), 4, 576)
    assert sum(two_of_four_in_816.values()) == pytest.approx(1.0)
    assert two_of_four_in_816[2] == pytest.approx(math.comb(4, 2) * math.comb(12, 6) / math.comb(16, 8))
    assert group_histogram(parse_pattern("8:16"), 32, 576) == {16: 1.0}
    assert group_histogram(parse_pattern("2:4"), 4, 576) == {2: 1.0}
    assert group_histogram(parse_pattern("dense"), 8, 576) == {8: 1.0}
    unstructured = group_histogram(parse_pattern("unstructured:0.5"), 4, 576)
    assert sum(j * f for j, f in unstructured.items()) == pytest.approx(2.0)


@pytest.mark.parametrize("model", ("smollm2-135m", "gemma3-270m"))
@pytest.mark.parametrize("slug", SPARSE)
def test_the_chosen_model_reproduces_the_measured_union_curves(model, slug):
    """Every committed sparse trace: the fitted union curve within 0.005 of the measured one on average, at least
    three times closer than the independent-tokens answer (which misses by 0.01 to 0.03)."""
    profile = read_profile(TRACE_ROOT / f"{model}_{slug}_magnitude_none")
    for phase, errors in profile.fit_summary().items():
        chosen = [e.fits[e.chosen]["mae"] for e in profile.phase_inputs(phase)]
        assert sum(chosen) / len(chosen) < 0.005, (slug, phase)
        assert 3 * sum(chosen) / len(chosen) < errors["independent"], (slug, phase)
        for entry in profile.phase_inputs(phase):
            measured = dict(entry.union)
            assert entry.model.union(1) == pytest.approx(measured[1], abs=2e-3)


@pytest.mark.parametrize("slug, base", [("8of16", "2:4"), ("16of32", "2:4"), ("4of8", "2:4")])
def test_hypergeometric_groups_give_the_measured_mac_slots(slug, base):
    trace = _trace("smollm2-135m", slug)
    pattern, base = trace.pattern, parse_pattern(base)
    errors = [abs(mac_slots_per_position(group_histogram(pattern, 4, s.k), base)
                  - mac_slots_per_position(s.group_histogram(4), base)) for s in trace.inputs.values()]
    assert max(errors) < 0.02 and sum(errors) / len(errors) < 0.002


@pytest.mark.parametrize("slug", ("8of16", "2of4", "unstructured0.5"))
def test_held_out_layers_of_smollm2_are_predicted_from_the_other_half(slug):
    from nmsim.traces.transplant import held_out_errors

    profile = read_profile(TRACE_ROOT / f"smollm2-135m_{slug}_magnitude_none")
    summary = summarize(held_out_errors(profile, _trace("smollm2-135m", slug), model_shape("smollm2-135m")))
    assert (summary["mean"] <= 0.03).all(), summary


def test_transplant_maps_layers_by_depth_and_role_and_rescales_k(profile_816):
    llama = model_shape("llama-3.1-8b")
    stats = transplant(profile_816, llama)
    assert stats.provenance == "transplanted from smollm2-135m" and stats.pattern == parse_pattern("8:16")
    assert {layer for _, layer, _ in stats.inputs} == set(range(32))
    down = stats.inputs[("decode", 31, "down")]
    assert down.k == 14336 and down.key == "L31.down"
    source = next(e for e in profile_816.inputs if e.phase == "decode" and e.layer == 29 and e.role == "down")
    assert dict(down.rows_needed)[16] == pytest.approx(source.model.union(16))
    stats.check_model(llama)
    self_errors = summarize(transfer_errors(profile_816, _trace("smollm2-135m", "8of16"),
                                            model_shape("smollm2-135m")))
    assert (self_errors["mean"] < 0.01).all()


def test_untraced_models_take_their_family_source():
    assert statistics_source(model_shape("llama-3.1-8b")) == "smollm2-135m"
    assert statistics_source(model_shape("qwen2.5-7b")) == "smollm2-135m"
    assert statistics_source(model_shape("gemma-3-4b")) == "gemma3-270m"
    assert statistics_source(model_shape("smollm2-135m")) == "smollm2-135m"
    assert statistics_for(model_shape("smollm2-135m"), "8:16").provenance == \
        "measured (smollm2-135m_8of16_magnitude_none)"
    assert statistics_for(model_shape("llama-2-7b"), "m16n8").provenance == "transplanted from smollm2-135m"


def test_decode_speedup_of_an_untraced_8b_model_falls_with_batch_like_the_measured_curve():
    """Fed the transplanted union of B tokens' masks, the 8B decode GEMMs lose their N/M weight saving as the
    batch grows, as the measured SmolLM2 union does (not the idealised 2x at every batch)."""
    speedups, fetched, ideal = {}, {}, {}
    for batch in (1, 4, 16, 64):
        out = simulate(SimulateRequest(hw="act-8of16", model="llama-3.1-8b", pattern="8:16", phase="decode",
                                       batch=batch, ideal=True))
        speedups[batch] = out.payload["totals"]["trace"]["speedup_vs_dense_same_design"]
        fetched[batch] = out.payload["totals"]["trace"]["offchip_bytes_vs_dense"]
        ideal[batch] = out.payload["totals"]["ideal"]["speedup_vs_dense_same_design"]
        assert out.payload["run"]["statistics"] == "transplanted from smollm2-135m"
    assert speedups[1] > 1.8 and speedups[1] > speedups[4] > speedups[16]
    assert speedups[16] < 1.05 and speedups[64] < 1.05
    assert all(ideal[b] > 1.8 for b in ideal)  # the idealised answer would have claimed ~2x throughout
    measured = TraceData.open(TRACE_ROOT / "smollm2-135m_8of16_magnitude_none")
    union = [dict(s.rows_needed) for (phase, _, _), s in measured.inputs.items() if phase == "decode"]
    for batch in (4, 16):  # the weight bytes follow the measured union of `batch` decode tokens
        assert fetched[batch] == pytest.approx(sum(u[batch] for u in union) / len(union), abs=0.05)


def test_nothing_is_idealised_silently(tmp_path, caplog, capsys):
    config = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
              "num_attention_heads": 4, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(config))
    empty = tmp_path / "no-traces"
    empty.mkdir()
    with pytest.raises(NmsimError, match="no mask statistics for .*nmsim traces build .*--ideal"):
        simulate(SimulateRequest(hw="act-8of16", model=str(tmp_path), trace_root=empty))
    with caplog.at_level(logging.WARNING):
        out = simulate(SimulateRequest(hw="act-8of16", model=str(tmp_path), trace_root=empty, ideal=True,
                                       phase="decode", batch=8))
    assert "assumes all 8 tokens of a tile keep the same values" in caplog.text
    assert out.payload["run"]["statistics"] == "ideal" and set(out.tables) == {"ideal"}
    assert (out.tables["ideal"].statistics == "ideal").all()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        simulate(SimulateRequest(hw="act-8of16", model=str(tmp_path), trace_root=empty, ideal=True,
                                 phase="decode", batch=1))
    assert "assumes all" not in caplog.text  # one token: one mask, the idealised answer is exact
    transplanted = simulate(SimulateRequest(hw="act-8of16", model=str(tmp_path)))  # a Llama config: SmolLM2's
    assert transplanted.payload["run"]["statistics"] == "transplanted from smollm2-135m"
    assert main(["simulate", "--hw", "act-8of16", "--model", "llama-3.1-8b", "--json", str(tmp_path / "o.json")]) == 0
    text = capsys.readouterr().out
    assert "mask statistics: transplanted from smollm2-135m" in text
    payload = json.loads((tmp_path / "o.json").read_text())
    assert {row["statistics"] for row in payload["gemms"]["trace"]} == {"transplanted from smollm2-135m"}


def test_traces_profile_command_writes_a_readable_profile(tmp_path, capsys):
    trace = tmp_path / "t"
    shutil.copytree(TRACE_ROOT / "smollm2-135m_2of4_magnitude_none", trace, ignore=shutil.ignore_patterns("sample"))
    (trace / PROFILE_FILE).unlink()
    assert main(["traces", "profile", str(trace)]) == 0
    assert "240 inputs" in capsys.readouterr().out
    assert read_profile(trace).pattern == parse_pattern("2:4")
    assert main(["traces", "profile"]) == 2
    assert "needs a trace directory" in capsys.readouterr().err


def test_a_design_that_needs_no_activation_statistics_still_runs(tmp_path):
    spec = AcceleratorSpec.from_name("nvidia-2of4")
    assert spec.sparsity.operand == "weight"
    out = simulate(SimulateRequest(hw="nvidia-2of4", model="llama-3.1-8b", pattern="2:4", trace_root=tmp_path))
    assert out.payload["totals"]["ideal"]["speedup_vs_dense_same_design"] > 1.0


def test_profiles_transfer_between_the_two_real_models():
    """Fit on one real model, predict the other's measured statistics (and each model's held-out half of its
    layers): mean absolute error ≤ 0.03 on union fractions at T = 4, 16, 64, 128 and on MAC slots per position."""
    from nmsim.traces.transplant import transfer_study

    summary, errors = transfer_study(("smollm2-135m", "gemma3-270m"), ("2:4", "8:16", "16:32", "unstructured:0.5"))
    assert set(summary.pattern) == {"2:4", "8:16", "16:32", "unstructured:0.5"}
    assert {"smollm2-135m -> gemma3-270m", "gemma3-270m -> smollm2-135m", "smollm2-135m held-out halves",
            "gemma3-270m held-out halves"} == set(summary.direction)
    assert (summary["mean"] <= 0.03).all(), summary
    slots = summary[summary.kind == "mac_slots_per_position"]
    assert len(slots) == 8 and (slots["mean"] <= 0.005).all()
    assert set(errors.quantity) == {"union_T4", "union_T16", "union_T64", "union_T128", "mac_slots_per_position"}
    assert {"layer", "input", "phase", "predicted", "measured", "abs_error"} <= set(errors.columns)


def test_a_transplanted_run_carries_the_other_models_band(capsys):
    out = simulate(SimulateRequest(hw="act-8of16", model="llama-3.1-8b", pattern="8:16", phase="decode", batch=4))
    band = out.payload["sensitivity_band"]
    assert band["statistics"] == "transplanted from gemma3-270m"
    main_speedup = out.payload["totals"]["trace"]["speedup_vs_dense_same_design"]
    assert abs(band["totals"]["speedup_vs_dense_same_design"] - main_speedup) < 0.2
    assert "sensitivity band (transplanted from gemma3-270m instead)" in out.text()
    gemma = simulate(SimulateRequest(hw="act-8of16", model="gemma-3-4b", pattern="8:16"))
    assert gemma.payload["run"]["statistics"] == "transplanted from gemma3-270m"
    assert gemma.payload["sensitivity_band"]["statistics"] == "transplanted from smollm2-135m"
