"""End-to-end inference: the op graph's FLOPs and bytes against hand counts, decode growing with context, capacity,
tensor parallelism, all-reduce, MoE experts."""

import dataclasses
import json
import math

import pytest

from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import ModelShape, model_shape
from nmsim.sim.inference import _Ctx, _visible_pairs, attention_works, capacity_message, simulate_inference
from nmsim.sim.kernels import KernelWork, allgather_cycles, allreduce_cycles, kernel_time, softmax_work
from nmsim.sim.workload import active_experts, linear_gemms

A100 = AcceleratorSpec.from_name("a100-80gb-sxm")
BASE = AcceleratorSpec.from_name("a100-dense")
DENSE = Pattern.dense()
SMALL = ModelShape("small", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=16, vocab_size=100, source="test")


def _ctx(shape=SMALL, *, batch=2, queries=8, context=8, attention="fused", devices=1):
    return _Ctx(shape=shape, batch=batch, queries=queries, context=context, devices=devices, value_bytes=2,
                kv_bytes=2, attention=attention, single_pass_max=1024, block_queries=128)


def test_visible_pairs_halve_causally_and_saturate_at_the_window():
    assert _visible_pairs(0, 7, 0) == 8 * 9 // 2  # causal: S(S+1)/2
    assert _visible_pairs(0, 7, 4) == 1 + 2 + 3 + 4 + 4 + 4 + 4 + 4
    assert _visible_pairs(9, 9, 0) == 10 and _visible_pairs(9, 9, 4) == 4  # one decode query at context 10


def test_fused_attention_flops_and_bytes_by_hand():
    [(name, work, kv)] = attention_works(_ctx(), 0, 4 * 16 * 2)
    pairs = 2 * 4 * 36  # batch × heads × causal pairs of 8 queries
    assert name == "attention" and work.tensor_flops == 4 * 16 * pairs and work.special_ops == pairs
    assert kv == 2 * 2 * 2 * 16 * 8 * 2  # batch × kv heads (GQA: 2, not 4) × K and V × d × keys × bytes
    assert work.bytes_read == 2 * 8 * 4 * 16 * 2 + kv and work.bytes_written == 2 * 8 * 4 * 16 * 2
    [(_, windowed, _)] = attention_works(_ctx(), 4, 128)
    assert windowed.tensor_flops == 4 * 16 * 2 * 4 * 26


def test_decode_reads_the_whole_kv_cache_or_the_window():
    [(_, work, kv)] = attention_works(_ctx(queries=1, context=10), 0, 128)
    assert kv == 2 * 10 * 2 * 2 * 16 * 2  # B × C × 2 × kv_heads × head_dim × bytes
    assert work.tensor_flops == 4 * 16 * 2 * 4 * 10
    [(_, _, windowed)] = attention_works(_ctx(queries=1, context=10), 4, 128)
    assert windowed == 2 * 4 * 2 * 2 * 16 * 2


def test_unfused_attention_computes_the_rectangle_and_moves_the_scores():
    scores, softmax, weighted = attention_works(_ctx(attention="unfused"), 0, 128)
    rect = 2 * 4 * 8 * 8
    assert scores[1].tensor_flops + weighted[1].tensor_flops == 4 * 16 * rect  # not causally halved
    assert scores[1].bytes_written == rect * 2 and softmax[1].bytes_read == rect * 2  # the score matrix round trip
    assert weighted[1].bytes_read == rect * 2 + 2 * 4 * 8 * 16 * 2  # P and V repeated to every query head


def test_softmax_reads_long_rows_once_per_pass():
    assert softmax_work(10, 1024, 2, 1024).bytes_read == 10 * 1024 * 2
    assert softmax_work(10, 1025, 2, 1024).bytes_read == 3 * 10 * 1025 * 2


def test_kernel_time_is_fixed_cost_plus_the_slower_of_compute_and_memory():
    work = KernelWork(vector_flops=1e9, bytes_read=1e6)
    timed = kernel_time(work, A100)
    clock = A100.clock_GHz
    assert timed.compute_cycles == pytest.approx(1e9 / (108 * 128))
    assert timed.memory_cycles == pytest.approx(1e6 / (2039 * 0.88 / clock) + 480 * clock)
    assert timed.cycles == pytest.approx(2.2e3 * clock + max(timed.compute_cycles, timed.memory_cycles))


def test_ring_allreduce_by_hand():
    cycles = allreduce_cycles(8e6, 4, A100)
    seconds = 2 * 3 / 4 * 8e6 / 300e9 + 2 * 3 * 1e-6
    assert cycles == pytest.approx(seconds * A100.clock_GHz * 1e9)
    assert allreduce_cycles(8e6, 1, A100) == 0
    gather = allgather_cycles(1e6, 4, A100)  # each device's 1 MB share to the 3 others: 3 shares, 3 steps
    assert gather == pytest.approx((3 * 1e6 / 300e9 + 3 * 1e-6) * A100.clock_GHz * 1e9)
    systolic = AcceleratorSpec.from_name("systolic-32x32-os")
    with pytest.raises(NmsimError, match="no interconnect"):
        allreduce_cycles(1, 2, systolic)


def test_decode_time_grows_with_context():
    shape = model_shape("llama-3.1-8b")
    runs = [simulate_inference(A100, shape, pattern=DENSE, baseline=BASE, batch=1, prompt=seq, generate=4,
                               phases=("decode",)) for seq in (512, 8192, 65536)]
    tpots = [run.decode.time_us for run in runs]
    assert tpots[0] < tpots[1] < tpots[2]
    kv = [run.decode.by_class()["kv_cache"] for run in runs]
    assert kv[2] > 50 * kv[0] / 2  # the KV reads scale with the context
    linear = {round(run.decode.linear_time_us(), 6) for run in runs}
    assert len(linear) == 1  # the linear GEMMs do not depend on it


def test_cli_decode_seq_changes_the_answer(tmp_path):
    times = {}
    for seq in (128, 131072):
        out = tmp_path / f"{seq}.json"
        assert main(["simulate", "--hw", "a100-80gb-sxm", "--model", "llama-3.1-8b", "--phase", "decode", "--seq",
                     str(seq), "--generate", "2", "--json", str(out)]) == 0
        payload = json.loads(out.read_text())
        assert payload["run"]["seq"] == seq
        times[seq] = next(iter(payload["inference"].values()))["tpot_ms"]
    assert times[131072] > 1.5 * times[128]


def test_seventy_b_is_refused_on_one_80gb_device_and_fits_at_the_named_degree():
    shape = model_shape("llama-3-70b")
    run = simulate_inference(A100, shape, pattern=DENSE, baseline=BASE, batch=1, prompt=128, generate=1,
                             phases=("prefill",))
    assert not run.memory.fits and run.memory.weights > 130e9
    message = capacity_message(run)
    degree = int(message.rsplit("--devices ", 1)[1])
    assert degree == 2 and "GiB" in message
    split = simulate_inference(A100, shape, pattern=DENSE, baseline=BASE, batch=1, prompt=128, generate=1,
                               phases=("prefill",), devices=degree)
    assert split.memory.fits
    assert split.memory.weights == pytest.approx(run.memory.weights / degree)


def test_tensor_parallel_one_is_the_single_device_result_and_two_splits_heads():
    shape = model_shape("smollm2-135m")
    one = simulate_inference(A100, shape, pattern=DENSE, baseline=BASE, batch=1, prompt=64, generate=2)
    plain = simulate_inference(A100, shape, pattern=DENSE, baseline=BASE, batch=1, prompt=64, generate=2, devices=1)
    assert one.prefill.time_us == plain.prefill.time_us and one.decode.time_us == plain.decode.time_us
    assert one.prefill.by_class()["communication"] == 0
    with pytest.raises(NmsimError, match="divide"):
        simulate_inference(A100, shape, pattern=DENSE, baseline=BASE, batch=1, prompt=64, devices=2)  # 9 heads
    llama = model_shape("llama-3.1-8b")
    gemms = {g.projection: g for g in linear_gemms(llama, "prefill", 1, 16, devices=2)[:7]}
    assert (gemms["q"].k, gemms["q"].n) == (4096, 2048) and (gemms["o"].k, gemms["o"].n) == (2048, 4096)
    assert (gemms["down"].k, gemms["down"].n) == (7168, 4096) and gemms["k"].n == 512
    two = simulate_inference(A100, llama, pattern=DENSE, baseline=BASE, batch=1, prompt=16, generate=1, devices=2,
                             phases=("prefill",))
    allreduces = [op for op in two.prefill.ops if op.op_class == "communication" and op.name.endswith("allreduce")]
    assert len(allreduces) == 2 * 32 + 1  # two per layer, and the vocabulary-parallel embedding's


def test_moe_experts_at_the_expected_per_expert_batch():
    assert active_experts(1, 8, 2) == (2.0, 1)
    active, per_expert = active_experts(512, 8, 2)
    assert active == pytest.approx(8) and per_expert == 128
    shape = model_shape("mixtral-8x7b")
    gemms = [g for g in linear_gemms(shape, "prefill", 1, 512) if g.layer == 0]
    names = [g.projection for g in gemms]
    assert names == ["q", "k", "v", "o", "router", "gate", "up", "down"]
    router, gate = gemms[4], gemms[5]
    assert not router.prunable and (router.k, router.n) == (4096, 8)
    assert gate.m == 128 and gate.count == pytest.approx(8) and (gate.k, gate.n) == (4096, 14336)
    decode = [g for g in linear_gemms(shape, "decode", 1) if g.layer == 0 and g.projection == "down"][0]
    assert decode.m == 1 and decode.count == pytest.approx(2)  # two experts' weights read for one token


def test_sparse_linear_speedup_is_diluted_end_to_end():
    spec = AcceleratorSpec.from_name("act-8of16")
    run = simulate_inference(spec, model_shape("llama-3.1-8b"), pattern=parse_pattern("8:16"), baseline=BASE,
                             batch=1, prompt=4096, generate=4, ideal=True)
    summary = run.summary()
    for phase in ("prefill", "decode"):
        linear = summary[f"{phase}_linear_speedup_vs_dense_same_design"]
        e2e = summary[f"{phase}_e2e_speedup_vs_dense_same_design"]
        assert 1 < e2e < linear  # attention, KV and vector work dilute it
    classes = run.prefill.by_class()
    assert classes["sparse_linear"] > 0 and classes["attention"] > 0 and classes["vector"] > 0
    assert sum(classes.values()) == pytest.approx(run.prefill.time_us)
    assert summary["prefill_selector_bytes"] > 0  # the selector writes compressed activations


def test_separate_kv_width_halves_the_kv_traffic():
    shape = model_shape("llama-3.1-8b")
    kv8 = dataclasses.replace(A100, kv_cache_bits=8)
    runs = [simulate_inference(spec, shape, pattern=DENSE, baseline=BASE, batch=4, prompt=4096, generate=2,
                               phases=("decode",)) for spec in (A100, kv8)]
    assert runs[1].summary()["decode_kv_bytes"] == pytest.approx(runs[0].summary()["decode_kv_bytes"] / 2)
    assert runs[1].memory.kv_cache == pytest.approx(runs[0].memory.kv_cache / 2)


def test_gpt_style_block_runs_without_gate_and_with_layernorm(tmp_path):
    config = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
              "vocab_size": 50257, "n_positions": 1024, "activation_function": "gelu_new"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = model_shape(str(tmp_path))
    run = simulate_inference(A100, shape, pattern=DENSE, baseline=BASE, batch=1, prompt=128, generate=2)
    names = [op.name for op in run.prefill.ops if op.layer == 0]
    assert "gate" not in names and "rotary" not in names and names.count("up") == 1
    assert math.isfinite(run.prefill.time_us) and run.decode.time_us > 0
