"""The simulator against independent numbers: SCALE-Sim dense cycles, ideal N:M halving, metadata hand counts,
decode weight bytes = dense × union fraction, hierarchical overflow from the real masks."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec, SparsitySpec
from nmsim.patterns import parse_pattern
from nmsim.sim.results import totals
from nmsim.sim.simulate import simulate_gemm, simulate_model
from nmsim.traces.reader import TraceData
from nmsim.sim.usage import DENSE, LayerUse, layer_use
from nmsim.registry import model_shape
from nmsim.sim.workload import Gemm

GOLDEN = json.loads((Path(__file__).with_name("scalesim_golden.json")).read_text())["cases"]
TRACES = Path(__file__).resolve().parents[2] / "traces"
TRACE_816 = TRACES / "smollm2-135m_8of16_magnitude_none"
P816 = parse_pattern("8:16")


def _systolic(rows, cols, dataflow, patterns=()):
    base = AcceleratorSpec.from_name("systolic-32x32-os")
    compute = dataclasses.replace(base.compute, rows=rows, cols=cols, dataflow=dataflow)
    sparsity = SparsitySpec("activation", tuple(patterns), False, "bitmask", "half_split", 0) if patterns \
        else base.sparsity
    return dataclasses.replace(base, compute=compute, sparsity=sparsity)


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"{c['dataflow']}-{c['rows']}x{c['cols']}-"
                                                      f"{c['m']}x{c['k']}x{c['n']}")
def test_dense_simulated_cycles_equal_scalesim(case):
    spec = _systolic(case["rows"], case["cols"], case["dataflow"])
    gemm = Gemm(0, "q", "prefill", case["m"], case["k"], case["n"])
    result = simulate_gemm(gemm, spec, layer_use(spec, DENSE), ideal_memory=True)
    assert result.cycles == case["total_cycles"]
    assert result.breakdown["stall_memory"] == 0


def test_the_issue_anchor_on_the_preset():
    spec = AcceleratorSpec.from_name("systolic-32x32-os")
    result = simulate_gemm(Gemm(0, "gate", "prefill", 128, 576, 1536), spec, layer_use(spec, DENSE),
                           ideal_memory=True)
    assert result.cycles == 122_495
    modelled = simulate_gemm(Gemm(0, "gate", "prefill", 128, 576, 1536), spec, layer_use(spec, DENSE))
    assert modelled.cycles > 122_495 and modelled.breakdown["stall_memory"] > 0  # 10 B/cycle DRAM stalls it


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_ideal_half_pattern_halves_the_systolic_compute(dataflow):
    dense_spec = _systolic(32, 32, dataflow)
    sparse_spec = _systolic(32, 32, dataflow, [P816])
    gemm = Gemm(0, "down", "prefill", 256, 1536, 576)
    dense = simulate_gemm(gemm, dense_spec, layer_use(dense_spec, DENSE), ideal_memory=True)
    sparse = simulate_gemm(gemm, sparse_spec, layer_use(sparse_spec, P816), ideal_memory=True)
    assert sparse.mac_slots == dense.mac_slots / 2
    if dataflow == "os":  # K streams through each fold: busy cycles halve
        assert sparse.breakdown["busy"] == dense.breakdown["busy"] / 2
    else:  # K maps onto the array rows: the folds halve
        assert sparse.breakdown["busy"] == pytest.approx(dense.breakdown["busy"] / 2)


def test_ideal_half_pattern_halves_tensor_core_compute_and_m_adds_latency():
    gemm = Gemm(0, "gate", "prefill", 4096, 576, 1536)
    busy = {}
    fill = {}
    for design, pattern in (("a100-dense", "dense"), ("act-2of4", "2:4"), ("act-8of16", "8:16"),
                            ("act-16of32", "16:32")):
        spec = AcceleratorSpec.from_name(design)
        result = simulate_gemm(gemm, spec, layer_use(spec, parse_pattern(pattern)), ideal_memory=True)
        busy[pattern], fill[pattern] = result.breakdown["busy"], result.breakdown["fill"]
    assert busy["2:4"] == busy["8:16"] == busy["16:32"] == busy["dense"] / 2
    assert fill["dense"] == 0 < fill["2:4"] <= fill["8:16"] < fill["16:32"]  # decode + mux stages grow with M


def test_the_selector_stalls_the_array_when_it_is_too_slow():
    spec = AcceleratorSpec.from_name("act-8of16")
    slow = dataclasses.replace(spec, sparsity=dataclasses.replace(spec.sparsity, selector_groups_per_cycle=1))
    gemm = Gemm(0, "k", "prefill", 4096, 576, 16)  # a narrow output: little compute per selected group
    fast_run = simulate_gemm(gemm, spec, layer_use(spec, P816), ideal_memory=True)
    slow_run = simulate_gemm(gemm, slow, layer_use(slow, P816), ideal_memory=True)
    assert fast_run.breakdown["stall_selector"] < 0.2 * fast_run.cycles  # its latency, once
    assert slow_run.breakdown["stall_selector"] > 0.4 * slow_run.cycles
    assert slow_run.selector_groups == fast_run.selector_groups == 4096 * 576 / 16
    assert slow_run.cycles > 1.5 * fast_run.cycles


@pytest.mark.parametrize("fmt, group_bits", [("bitmask", 8 * 16 + 16), ("index", 8 * 16 + 8 * 4),
                                             ("enumerative", 8 * 16 + 14)])
def test_activation_bytes_follow_the_metadata_hand_counts(fmt, group_bits):
    spec = AcceleratorSpec.from_name("act-8of16")
    spec = dataclasses.replace(spec, sparsity=dataclasses.replace(spec.sparsity, metadata_format=fmt))
    gemm = Gemm(0, "q", "prefill", 512, 576, 576)  # everything fits L2: HBM reads each byte once
    result = simulate_gemm(gemm, spec, layer_use(spec, P816, fallback_dense=False))
    hbm = result.level_bytes[0]
    assert hbm.activations == 512 * (576 // 16) * group_bits / 8
    assert hbm.outputs == 512 * 576 * 2


def test_weight_sparse_design_compresses_weights_with_two_bit_indices():
    spec = AcceleratorSpec.from_name("nvidia-2of4")
    gemm = Gemm(0, "up", "prefill", 512, 576, 1536)
    hbm = simulate_gemm(gemm, spec, layer_use(spec, parse_pattern("2:4"))).level_bytes[0]
    assert hbm.weights == 1536 * (576 // 4) * (2 * 16 + 4) / 8
    assert hbm.activations == 512 * 576 * 2


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_decode_weight_bytes_are_dense_times_the_union_fraction(batch):
    trace = TraceData.open(TRACE_816)
    spec = AcceleratorSpec.from_name("act-8of16")
    gemm = Gemm(5, "down", "decode", batch, 1536, 576)
    stats = trace.for_gemm(gemm)
    use = layer_use(spec, P816, stats)
    union = dict(stats.rows_needed)[batch]
    sparse = simulate_gemm(gemm, spec, use)
    dense = simulate_gemm(gemm, spec, layer_use(spec, DENSE))
    assert dense.level_bytes[0].weights == 1536 * 576 * 2
    assert sparse.level_bytes[0].weights == pytest.approx(dense.level_bytes[0].weights * union, rel=1e-12)
    assert union == pytest.approx(0.5) if batch == 1 else union > 0.75


def test_weight_rows_fraction_interpolates_between_measured_tiles():
    use = LayerUse(P816, "activation", 0.5, ((1, 0.5), (2, 0.65), (4, 0.76), (8, 0.82)))
    assert use.weight_rows_fraction(1) == 0.5 and use.weight_rows_fraction(4) == 0.76
    assert 0.65 < use.weight_rows_fraction(3) < 0.76
    assert use.weight_rows_fraction(1000) == 0.82
    assert LayerUse(DENSE, "none", 1.0).weight_rows_fraction(3) == 1.0


def test_hierarchical_design_pays_for_groups_that_keep_more_than_two_of_four():
    trace = TraceData.open(TRACE_816)
    spec = AcceleratorSpec.from_name("act-hierarchical")
    stats = trace.for_gemm(Gemm(3, "gate", "prefill", 512, 576, 1536))
    histogram = stats.group_histogram(4)
    expected = sum(fraction * math.ceil(kept / 2) for kept, fraction in histogram.items()) * 2 / 4
    real = layer_use(spec, P816, stats)
    assert real.compute_density == pytest.approx(expected)
    assert 0.55 < real.compute_density < 0.7  # the real masks put 3 or 4 of 8 kept values into many 4-groups
    assert layer_use(spec, P816, stats, ideal=True).compute_density == 0.5
    assert layer_use(AcceleratorSpec.from_name("act-flexible"), P816, stats).compute_density == 0.5
    assert layer_use(spec, parse_pattern("2:4"), stats).compute_density == 0.5  # its native pattern


def test_unsupported_patterns_fail_or_run_dense():
    spec = AcceleratorSpec.from_name("act-2of4")
    with pytest.raises(NmsimError, match="does not support 8:16; it supports 2:4"):
        layer_use(spec, P816)
    fallback = layer_use(spec, P816, fallback_dense=True)
    assert not fallback.sparse and "runs dense" in fallback.note


def test_trace_must_fit_the_model():
    trace = TraceData.open(TRACE_816)
    trace.check_model(model_shape("smollm2-135m"))
    with pytest.raises(NmsimError, match="does not fit model llama-2-7b.*K=4096"):
        trace.check_model(model_shape("llama-2-7b"))
    assert trace.for_gemm(Gemm(2, "k", "prefill", 1, 576, 192)).key == "L2.q+k+v"


def test_missing_trace_statistics_name_the_fix(tmp_path):
    with pytest.raises(NmsimError, match="nmsim traces stats"):
        TraceData.open(tmp_path)


def test_model_run_with_real_masks_differs_from_the_ideal_answer():
    spec, base = AcceleratorSpec.from_name("act-8of16"), AcceleratorSpec.from_name("a100-dense")
    shape, trace = model_shape("smollm2-135m"), TraceData.open(TRACE_816)
    common = {"phase": "decode", "batch": 4, "seq": 512, "pattern": P816, "baseline": base}
    real = totals(simulate_model(spec, shape, trace=trace, **common))
    ideal = totals(simulate_model(spec, shape, ideal=True, **common))
    assert ideal["offchip_bytes_vs_dense"] == pytest.approx(0.5, abs=0.01)
    assert real["offchip_bytes_vs_dense"] > 0.85  # four tokens' masks together need ~91% of the weight rows
    assert real["speedup_vs_dense_same_design"] < ideal["speedup_vs_dense_same_design"]
    assert 1.0 < real["speedup_vs_dense_same_design"]


def test_buffer_that_cannot_hold_a_tile_is_an_error():
    spec = AcceleratorSpec.from_name("a100-dense")
    tiny = dataclasses.replace(spec.memory[-1], capacity_bytes=108 * 1024)  # 0.5 KiB per slot on 108 cores
    spec = dataclasses.replace(spec, memory=(*spec.memory[:-1], tiny))
    with pytest.raises(NmsimError, match="'shared_memory' gives each unit 0.5 KiB per buffer slot"):
        simulate_gemm(Gemm(0, "q", "prefill", 512, 576, 576), spec, layer_use(spec, DENSE))


def test_cli_simulate_writes_deterministic_json(tmp_path, capsys):
    args = ["simulate", "--hw", "act-hierarchical", "--model", "smollm2-135m", "--traces", str(TRACE_816),
            "--ideal", "--phase", "decode", "--batch", "4"]
    assert main([*args, "--gemms", "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "ideal_cycles" in out and "totals:" in out and "without sparsity" in out and "  die " in out
    assert "TTFT" in out and "TPOT" in out and "time per op class" in out and "0-29 (x30)" in out
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "ideal_cycles" not in out  # the per-GEMM table only with --gemms
    first = (tmp_path / "a.json").read_bytes()
    assert first == (tmp_path / "b.json").read_bytes()
    payload = json.loads(first)
    assert set(payload["totals"]) == {"trace", "ideal"} and set(payload["inference"]) == {"trace", "ideal"}
    assert payload["inference"]["trace"]["decode_e2e_speedup_vs_dense_same_design"] \
        < payload["inference"]["trace"]["decode_linear_speedup_vs_dense_same_design"]
    ops = payload["ops"]["trace"]["decode"]
    assert len([op for op in ops if op["op"] == "attention"]) == 30 and ops[-1]["op"] == "lm_head"
    assert main([*args, "--per-layer"]) == 0
    assert "0-29 (x30)" not in capsys.readouterr().out
    assert len(payload["gemms"]["trace"]) == 30 * 7
    assert payload["totals"]["trace"]["cycles"] > payload["totals"]["ideal"]["cycles"]
    assert payload["area"]["overhead_pct"] > 0


@pytest.mark.parametrize("args, message", [
    (["--hw", "no-such-design", "--model", "smollm2-135m"], "no such file or preset"),
    (["--hw", "act-2of4", "--model", "smollm2-135m", "--pattern", "8:16"], "does not support 8:16"),
    (["--hw", "act-8of16", "--model", "nonexistent"], "not a registered model"),
    (["--hw", "act-8of16", "--model", "llama-2-7b", "--traces", str(TRACE_816)], "does not fit model"),
    (["--hw", "act-8of16", "--model", "smollm2-135m", "--traces", str(TRACE_816), "--pattern", "2:4"],
     "disagrees with the trace"),
])
def test_cli_simulate_bad_input(args, message, capsys):
    assert main(["simulate", *args]) == 2
    assert message in capsys.readouterr().err


def test_layers_the_trace_left_dense_run_dense():
    trace = TraceData.open(TRACE_816)
    stats = dataclasses.replace(trace.for_gemm(Gemm(0, "q", "prefill", 1, 576, 576)), density=1.0)
    use = layer_use(AcceleratorSpec.from_name("act-8of16"), P816, stats)
    assert not use.sparse and "dense in the trace" in use.note


@pytest.mark.parametrize("fmt", ["bitmask", "index", "enumerative"])
def test_trace_compression_table_equals_the_simulators_activation_bytes(fmt):
    import pandas as pd

    table = pd.read_csv(TRACE_816 / "stats" / "compression.csv")
    row = table[(table.input == "L4.down") & (table.phase == "prefill") & (table.metadata_format == fmt)
                & (table.value_dtype == "fp16")].iloc[0]
    spec = AcceleratorSpec.from_name("act-8of16")
    spec = dataclasses.replace(spec, sparsity=dataclasses.replace(spec.sparsity, metadata_format=fmt))
    result = simulate_gemm(Gemm(4, "down", "prefill", 512, 1536, 576), spec, layer_use(spec, P816))
    assert result.level_bytes[0].activations == pytest.approx(512 * row.bytes_per_token)


def test_sweep_runs_unsupported_patterns_dense_and_reads_committed_traces():
    from nmsim.sim.cases import sweep
    from nmsim.traces.reader import committed_traces

    designs = [AcceleratorSpec.from_name(name) for name in ("act-8of16", "act-hierarchical")]
    patterns = ("dense", "2:4", "8:16")
    table = sweep(designs, model_shape("smollm2-135m"), baseline=AcceleratorSpec.from_name("a100-dense"),
                  patterns=patterns, phases=("prefill",), seq=2048,
                  traces=committed_traces(patterns, "smollm2-135m"))  # long enough for MACs to matter
    assert len(table) == 6
    row = table.set_index(["design", "pattern"])
    assert not row.loc[("act-8of16", "2:4"), "runs_sparse"] and "does not support 2:4" in row.loc[
        ("act-8of16", "2:4"), "note"]
    assert row.loc[("act-8of16", "8:16"), "trace"] == "smollm2-135m_8of16_magnitude_none"
    assert row.loc[("act-8of16", "dense"), "speedup_vs_dense_same_design"] == 1.0
    native = row.loc[("act-8of16", "8:16"), "speedup_vs_dense_same_design"]
    composed = row.loc[("act-hierarchical", "8:16"), "speedup_vs_dense_same_design"]
    assert native > composed > 1.0


def test_linear_only_refuses_a_model_that_does_not_fit_off_chip_memory(tmp_path):
    from nmsim.pipeline import SimulateRequest, simulate

    text = Path(AcceleratorSpec.from_name("a100-dense").source).read_text().replace("capacity_GiB: 40",
                                                                                 "capacity_KiB: 1")
    design = tmp_path / "tiny-hbm.yaml"
    design.write_text(text)
    request = SimulateRequest(hw=str(design), model="smollm2-135m", seq=16, linear_only=True)
    with pytest.raises(NmsimError, match=r"smollm2-135m does not fit a100-dense .*: it needs 0.3 GiB per device "
                                         r"\(weights 0.3 GiB, KV cache .* MiB at batch 1 × 144 tokens\) and the "
                                         r"device's hbm2 \(memory\[0\]\) holds 1.0 KiB"):
        simulate(request)

