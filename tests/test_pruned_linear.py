"""The pruning engine on tiny random Llama and Gemma 3 models (fast, no weights needed)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.sparsify.masks import nm_mask
from nmsim.sparsify.input_stats import calibrate, load_stats, save_stats
from nmsim.sparsify.linear import PrunedLinear, SparsityConfig, sparsified
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.targets import PROJECTIONS, find_linear_sites, make_targets, parse_layer_list


def tiny_llama(layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma() -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, sliding_window=8,
    )
    return Gemma3ForCausalLM(config).eval()


IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))


def capture_wrapped(model):
    """Record (input, output) of every PrunedLinear call."""
    calls = []
    handles = [
        m.register_forward_hook(lambda mod, args, out: calls.append((mod, args[0], out)))
        for m in model.modules()
        if isinstance(m, PrunedLinear)
    ]
    return calls, handles


def wrapped_sites(model) -> set[tuple[int, str]]:
    return {(m.site.layer, m.site.projection) for m in model.modules() if isinstance(m, PrunedLinear)}


def test_finds_all_seven_projections_in_every_layer():
    sites = find_linear_sites(tiny_llama(layers=3))
    assert len(sites) == 21
    assert [s.projection for s in sites if s.layer == 1] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert sorted({s.layer for s in sites}) == [0, 1, 2]


def test_gemma_family_is_found_and_pruned():
    model = tiny_gemma()
    assert {s.projection for s in find_linear_sites(model)} == set(PROJECTIONS)
    with torch.no_grad():
        dense = model(IDS).logits
        with sparsified(model, SparsityConfig(parse_pattern("2:4"))):
            pruned = model(IDS).logits
    assert not torch.allclose(dense, pruned)


def test_architecture_without_decoder_projections_is_rejected():
    with pytest.raises(NmsimError, match="not supported"):
        find_linear_sites(torch.nn.Sequential(torch.nn.Linear(4, 4)))


@pytest.mark.parametrize("pattern", ["2:4", "8:16", "3:8"])
def test_every_wrapped_layer_computes_the_pruned_gemm(pattern):
    model = tiny_llama()
    n, m = parse_pattern(pattern).n, parse_pattern(pattern).m
    with torch.no_grad(), sparsified(model, SparsityConfig(parse_pattern(pattern))):
        calls, handles = capture_wrapped(model)
        model(IDS)
    assert len(calls) == 14
    for module, x, y in calls:
        expected = F.linear(torch.where(nm_mask(x.abs(), n, m), x, 0.0), module.weight, module.bias)
        torch.testing.assert_close(y, expected)


def test_median_shift_adds_the_rank_one_term():
    model = tiny_llama()
    config = SparsityConfig(parse_pattern("2:4"), mitigation=parse_mitigation("median-shift"))
    with torch.no_grad(), sparsified(model, config):
        calls, _ = capture_wrapped(model)
        model(IDS)
    module, x, y = calls[0]
    eta = x.median(dim=-1, keepdim=True).values
    centered = x - eta
    kept = torch.where(nm_mask(centered.abs(), 2, 4), centered, 0.0)
    dense_form = F.linear(kept + eta, module.weight)  # (P(x − η) + η)Wᵀ, the definition
    torch.testing.assert_close(y, dense_form, rtol=1e-5, atol=1e-5)


def test_layers_are_restored_and_dense_output_returns():
    model = tiny_llama()
    originals = [site.module for site in find_linear_sites(model)]
    with torch.no_grad():
        before = model(IDS).logits
        with sparsified(model, SparsityConfig(parse_pattern("2:4"))):
            assert sum(isinstance(m, PrunedLinear) for m in model.modules()) == 14
        after = model(IDS).logits
    assert [site.module for site in find_linear_sites(model)] == originals
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_dense_config_wraps_nothing():
    model = tiny_llama()
    with sparsified(model, SparsityConfig(Pattern.dense())):
        assert not any(isinstance(m, PrunedLinear) for m in model.modules())


def test_target_presets_and_layer_filters():
    model = tiny_llama(layers=4)
    no_qkv = SparsityConfig(parse_pattern("2:4"), targets=make_targets("no-qkv", exclude_layers="0"))
    with sparsified(model, no_qkv):
        wrapped = wrapped_sites(model)
    assert wrapped == {(layer, p) for layer in (1, 2, 3) for p in ("o", "gate", "up", "down")}
    amber = SparsityConfig(parse_pattern("2:4"), targets=make_targets("amber", layers="1-2"))
    with sparsified(model, amber):
        wrapped = wrapped_sites(model)
    assert wrapped == {(layer, p) for layer in (1, 2) for p in ("q", "gate", "down")}
    assert str(make_targets("all", layers="0-3,7", phase="prefill")) == "all[layers=0-3,7][prefill-only]"
    assert str(make_targets("o, down")) == "o,down"


def test_target_errors_are_clear():
    with pytest.raises(NmsimError, match="preset"):
        make_targets("qkv")
    with pytest.raises(NmsimError, match="runs backwards"):
        parse_layer_list("5-2")
    assert parse_layer_list("0-2,7") == {0, 1, 2, 7}
    with pytest.raises(NmsimError, match="select no linear layer"):
        with sparsified(tiny_llama(), SparsityConfig(parse_pattern("2:4"), targets=make_targets("all", layers="9"))):
            pass


def _phases_seen(config: SparsityConfig) -> list[tuple[str, bool]]:
    model = tiny_llama()
    seen = []
    with torch.no_grad(), sparsified(model, config) as session:
        original = session.sparse_input
        session.sparse_input = lambda x, layer: (seen.append(session.phase), original(x, layer))[1]
        model.generate(IDS[:1, :5], max_new_tokens=3, do_sample=False, pad_token_id=0)
    return seen


def test_prefill_only_leaves_decode_tokens_dense():
    every_token = _phases_seen(SparsityConfig(parse_pattern("2:4")))
    assert every_token.count("prefill") == 14 and every_token.count("decode") == 2 * 14
    prefill_only = _phases_seen(SparsityConfig(parse_pattern("2:4"), targets=make_targets("all", phase="prefill")))
    assert prefill_only == ["prefill"] * 14


def test_shared_inputs_are_pruned_once():
    model = tiny_llama()
    computed = []
    import nmsim.sparsify.linear as engine

    original = engine.sparsify_input

    def counting(*args, **kwargs):
        computed.append(1)
        return original(*args, **kwargs)

    engine.sparsify_input = counting
    try:
        with torch.no_grad(), sparsified(model, SparsityConfig(parse_pattern("2:4"))):
            model(IDS)
        per_layer_magnitude = len(computed) / 2
        computed.clear()
        with torch.no_grad(), sparsified(model, SparsityConfig(parse_pattern("2:4"), "wina")):
            model(IDS)
        per_layer_wina = len(computed) / 2
    finally:
        engine.sparsify_input = original
    assert per_layer_magnitude == 4  # q/k/v share one input, gate/up another, then o and down
    assert per_layer_wina == 7  # weight-dependent scores: one mask per projection


def test_calibration_statistics_feed_causal_clact_and_static_shift(tmp_path):
    model = tiny_llama()
    windows = torch.randint(0, 96, (3, 10), generator=torch.Generator().manual_seed(2))
    stats = calibrate(model, windows)
    assert len(stats) == 14
    down = stats["model.layers.0.mlp.down_proj"]
    assert down["column_rms"].shape == (48,) and down["median_mean"].shape == ()
    save_stats(tmp_path / "s.safetensors", stats)
    reloaded = load_stats(tmp_path / "s.safetensors")
    torch.testing.assert_close(reloaded["model.layers.1.self_attn.q_proj"]["column_rms"],
                               stats["model.layers.1.self_attn.q_proj"]["column_rms"])
    for criterion, mitigation in (("clact-causal", "none"), ("magnitude", "static-shift")):
        config = SparsityConfig(parse_pattern("2:4"), criterion, parse_mitigation(mitigation))
        with pytest.raises(NmsimError, match="calibration"):
            with sparsified(model, config):
                pass
        with torch.no_grad(), sparsified(model, config, reloaded):
            logits = model(IDS).logits
        assert torch.isfinite(logits).all()
