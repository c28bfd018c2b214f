"""Model families beyond Llama: every op of a decoder step in ModelShape, read from config.json, models.yaml and GGUF.

Configs are written by hand from the public config.json files (no network); the expected numbers are hand counts.
"""

import dataclasses
import json

import pytest

from nmsim import registry
from nmsim.errors import NmsimError
from nmsim.registry import ModelShape, find_model, model_shape, models, statistics_source

LLAMA_3_1_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "hidden_act": "silu",
                "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
GPT2_SMALL = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None, "vocab_size": 50257,
              "n_positions": 1024, "n_ctx": 1024, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
OPT_125M = {"model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "vocab_size": 50272, "max_position_embeddings": 2048,
            "activation_function": "relu", "word_embed_proj_dim": 768, "do_layer_norm_before": True}
MIXTRAL_8X7B = {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "num_local_experts": 8,
                "num_experts_per_tok": 2, "max_position_embeddings": 32768, "sliding_window": None,
                "hidden_act": "silu", "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
QWEN15_MOE_A27B = {"model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
                   "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts": 60,
                   "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "num_key_value_heads": 16, "vocab_size": 151936, "max_position_embeddings": 8192,
                   "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 21,
                   "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu", "tie_word_embeddings": False}
GEMMA3_270M = {"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
               "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768, "sliding_window": 512,
               "_sliding_window_pattern": 6, "rms_norm_eps": 1e-6,
               "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3}


def _shape(tmp_path, config: dict, name: str = "model") -> ModelShape:
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return model_shape(str(directory))


def _same_as_preset(shape: ModelShape, preset: str) -> bool:
    expected = model_shape(preset)
    return dataclasses.replace(shape, name=expected.name, source=expected.source) == expected


def _error(tmp_path, config: dict) -> str:
    with pytest.raises(NmsimError) as caught:
        _shape(tmp_path, config)
    return str(caught.value)


# --- ModelShape ----------------------------------------------------------------------------------------------------
def test_positional_construction_keeps_the_llama_defaults():
    shape = ModelShape("tiny", 64, 128, 2, 4, 2, 16, 100, "hand")
    assert (shape.mlp, shape.activation, shape.norm, shape.positions, shape.norms_per_layer) == (
        "gated", "silu", "rmsnorm", "rotary", 2)
    assert not shape.qk_norm and not shape.tied_embeddings and not shape.is_moe
    assert shape.projections == registry.PROJECTIONS == ("q", "k", "v", "o", "gate", "up", "down")
    assert shape.layer_windows == () and shape.window(1) == 0 and shape.max_positions == 0
    # 100·64 embedding + 2 layers × (q 64·64 + k, v 64·32 + o 64·64 + 3·64·128 MLP + 2·64 norms) + 64 + 100·64 head
    assert shape.weight_count() == 6400 + 2 * (4096 + 2048 + 2048 + 4096 + 3 * 8192 + 128) + 64 + 6400
    with pytest.raises(NmsimError, match="layer 2 out of range"):
        shape.window(2)
    with pytest.raises(NmsimError, match="mlp 'fancy': choose from gated, plain"):
        ModelShape("bad", 64, 128, 2, 4, 2, 16, 100, "hand", mlp="fancy")
    with pytest.raises(NmsimError, match="layer_windows has 1 entries for 2 layers"):
        ModelShape("bad", 64, 128, 2, 4, 2, 16, 100, "hand", layer_windows=(8,))


# --- config.json: GPT-2, GPT-3, OPT --------------------------------------------------------------------------------
def test_gpt2_small_is_plain_gelu_layernorm_learned_and_tied(tmp_path):
    shape = _shape(tmp_path, GPT2_SMALL)
    assert (shape.mlp, shape.activation, shape.norm, shape.positions, shape.tied_embeddings) == (
        "plain", "gelu", "layernorm", "learned", True)
    assert (shape.hidden_size, shape.intermediate_size, shape.num_layers, shape.num_heads, shape.num_kv_heads,
            shape.head_dim, shape.vocab_size, shape.max_positions) == (768, 3072, 12, 12, 12, 64, 50257, 1024)
    assert shape.projections == ("q", "k", "v", "o", "up", "down") and shape.family == "gpt2"
    assert {p: shape.projection_shape(p) for p in shape.projections} == {
        "q": (768, 768), "k": (768, 768), "v": (768, 768), "o": (768, 768), "up": (768, 3072), "down": (3072, 768)}
    with pytest.raises(NmsimError, match="no 'gate' projection \\(plain MLP"):
        shape.projection_shape("gate")
    # tokens 50257·768 + positions 1024·768 + 12 × (4·768² + 2·768·3072 + 2·768) + final norm 768 (biases ignored)
    assert shape.weight_count() == 38_597_376 + 786_432 + 12 * (2_359_296 + 4_718_592 + 1_536) + 768 == 124_337_664
    assert shape.weight_count() == pytest.approx(124.44e6, rel=0.01)  # GPT-2 small: 124.4 M with biases
    assert not _shape(tmp_path, {**GPT2_SMALL, "tie_word_embeddings": False}, "untied").tied_embeddings


def test_gpt3_shaped_gpt2_config_has_175_billion_weights(tmp_path):
    gpt3 = {"model_type": "gpt2", "n_embd": 12288, "n_layer": 96, "n_head": 96, "vocab_size": 50257,
            "n_positions": 2048, "activation_function": "gelu"}
    shape = _shape(tmp_path, gpt3)
    assert (shape.intermediate_size, shape.head_dim, shape.max_positions) == (4 * 12288, 128, 2048)
    # 50257·12288 + 2048·12288 + 96 × (12·12288² + 2·12288) + 12288
    assert shape.weight_count() == 617_558_016 + 25_165_824 + 96 * (1_811_939_328 + 24_576) + 12288
    assert shape.weight_count() == pytest.approx(175.0e9, rel=0.01)  # GPT-3 175B (Brown et al. 2020, table 2.1)


def test_opt_125m_is_plain_relu(tmp_path):
    shape = _shape(tmp_path, OPT_125M)
    assert (shape.mlp, shape.activation, shape.norm, shape.positions, shape.tied_embeddings, shape.family) == (
        "plain", "relu", "layernorm", "learned", True, "opt")
    assert (shape.intermediate_size, shape.head_dim, shape.vocab_size, shape.max_positions) == (3072, 64, 50272, 2048)
    assert shape.projection_shape("up") == (768, 3072) and shape.projection_shape("down") == (3072, 768)
    assert shape.weight_count() == 50272 * 768 + 2048 * 768 + 12 * (4 * 768**2 + 2 * 768 * 3072 + 2 * 768) + 768
    assert shape.weight_count() == pytest.approx(125e6, rel=0.01)


def test_opt_350m_embedding_projection_is_refused(tmp_path):
    opt_350m = {**OPT_125M, "hidden_size": 1024, "ffn_dim": 4096, "num_hidden_layers": 24,
                "num_attention_heads": 16, "word_embed_proj_dim": 512, "do_layer_norm_before": False}
    message = _error(tmp_path, opt_350m)
    assert "word_embed_proj_dim: 512 differs from hidden_size 1024" in message and "not supported" in message


# --- config.json: mixtures of experts ------------------------------------------------------------------------------
def test_mixtral_has_8_experts_top_2_and_matches_its_preset(tmp_path):
    shape = _shape(tmp_path, MIXTRAL_8X7B)
    assert shape.is_moe and (shape.num_experts, shape.experts_per_token) == (8, 2)
    assert shape.intermediate_size == 14336 and shape.projection_shape("gate") == (4096, 14336)
    assert shape.layer_windows == () and shape.max_positions == 32768 and shape.family == "mistral"
    assert _same_as_preset(shape, "mixtral-8x7b")


def test_qwen15_moe_reads_the_expert_and_shared_widths(tmp_path):
    shape = _shape(tmp_path, QWEN15_MOE_A27B)
    assert (shape.num_experts, shape.experts_per_token, shape.intermediate_size,
            shape.shared_expert_intermediate_size) == (60, 4, 1408, 5632)
    assert shape.projection_shape("down") == (1408, 2048) and shape.layer_windows == () and shape.family == "qwen"
    embedding = 151936 * 2048
    layer = 4 * 2048**2 + 60 * 3 * 2048 * 1408 + 2048 * 60 + 3 * 2048 * 5632 + 2 * 2048
    assert shape.weight_count() == 2 * embedding + 24 * layer + 2048 == 14_315_587_584
    assert shape.weight_count() == pytest.approx(14.3e9, rel=0.01)  # Qwen1.5-MoE-A2.7B: 14.3 B in all


@pytest.mark.parametrize("change", [{"decoder_sparse_step": 2}, {"mlp_only_layers": [0, 1]}])
def test_mixed_dense_and_moe_stacks_are_refused(tmp_path, change):
    message = _error(tmp_path, {**QWEN15_MOE_A27B, **change})
    assert "mixed dense and MoE layer stacks are not supported" in message


def test_qwen3_moe_has_qk_norm(tmp_path):
    qwen3_30b = {"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
                 "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
                 "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                 "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
                 "decoder_sparse_step": 1, "mlp_only_layers": []}
    shape = _shape(tmp_path, qwen3_30b)
    assert shape.qk_norm and (shape.num_experts, shape.experts_per_token, shape.intermediate_size) == (128, 8, 768)
    layer = 2048 * 4096 * 2 + 2048 * 512 * 2 + 128 * 3 * 2048 * 768 + 2048 * 128 + 2 * 2048 + 2 * 128
    assert shape.weight_count() == 2 * 151936 * 2048 + 48 * layer + 2048
    assert shape.weight_count() == pytest.approx(30.5e9, rel=0.01)  # Qwen3-30B-A3B: 30.5 B in all


# --- config.json: sliding windows ----------------------------------------------------------------------------------
def test_gemma3_layer_types_give_the_exact_windows(tmp_path):
    shape = _shape(tmp_path, GEMMA3_270M)
    assert shape.layer_windows == (512,) * 5 + (0,) + (512,) * 5 + (0,) + (512,) * 5 + (0,)
    assert [layer for layer in range(18) if shape.window(layer) == 0] == [5, 11, 17]
    assert (shape.activation, shape.norms_per_layer, shape.qk_norm, shape.tied_embeddings) == ("gelu", 4, True, True)
    assert _same_as_preset(shape, "gemma3-270m")
    pattern = {k: v for k, v in GEMMA3_270M.items() if k not in ("layer_types", "_sliding_window_pattern")}
    assert _shape(tmp_path, {**pattern, "sliding_window_pattern": 6}, "pattern").layer_windows == shape.layer_windows
    bad = {**GEMMA3_270M, "layer_types": ["linear_attention"] + GEMMA3_270M["layer_types"][1:]}
    assert "layer_types: 'linear_attention': unsupported layer type" in _error(tmp_path, bad)


def test_gemma3_4b_minimal_text_config_uses_the_class_defaults(tmp_path):
    # google/gemma-3-4b-it's text_config lists only these; heads, vocab, pattern 6 etc. are Gemma3TextConfig's
    config = {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "hidden_size": 2560,
              "intermediate_size": 10240, "num_hidden_layers": 34, "sliding_window": 1024,
              "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}, "vision_config": {"model_type": "siglip"}}
    shape = _shape(tmp_path, config)
    assert [layer for layer in range(34) if shape.window(layer) == 0] == [5, 11, 17, 23, 29]
    assert shape.window(0) == 1024 and shape.max_positions == 131072 and shape.vocab_size == 262208
    assert _same_as_preset(shape, "gemma-3-4b")


def test_gemma2_alternates_sliding_and_global(tmp_path):
    gemma2_9b = {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
                 "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
                 "sliding_window": 4096, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 8192}
    shape = _shape(tmp_path, gemma2_9b)
    assert shape.layer_windows == (4096, 0) * 21 and shape.norms_per_layer == 4 and not shape.qk_norm
    assert shape.tied_embeddings and shape.activation == "gelu"


def test_mistral_window_applies_to_every_layer(tmp_path):
    mistral = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "sliding_window": 4096,
               "max_position_embeddings": 32768, "tie_word_embeddings": False}
    v01 = _shape(tmp_path, mistral, "v0.1")
    assert v01.layer_windows == (4096,) * 32 and v01.window(31) == 4096 and v01.family == "mistral"
    v03 = _shape(tmp_path, {**mistral, "sliding_window": None, "vocab_size": 32768}, "v0.3")
    assert v03.layer_windows == () and v03.window(31) == 0


def test_qwen2_window_starts_at_max_window_layers_only_when_enabled(tmp_path):
    qwen25 = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
              "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "hidden_act": "silu",
              "max_position_embeddings": 32768, "use_sliding_window": False, "sliding_window": 131072,
              "max_window_layers": 28, "tie_word_embeddings": False}
    assert _same_as_preset(_shape(tmp_path, qwen25, "off"), "qwen2.5-7b")
    enabled = _shape(tmp_path, {**qwen25, "use_sliding_window": True, "sliding_window": 4096,
                                "max_window_layers": 20}, "on")
    assert enabled.layer_windows == (0,) * 20 + (4096,) * 8


def test_llama_config_matches_its_preset(tmp_path):
    shape = _shape(tmp_path, LLAMA_3_1_8B)
    assert _same_as_preset(shape, "llama-3.1-8b")
    assert (shape.mlp, shape.activation, shape.norm, shape.positions, shape.tied_embeddings) == (
        "gated", "silu", "rmsnorm", "rotary", False)


# --- config.json: what is refused ----------------------------------------------------------------------------------
def test_encoder_decoder_is_refused_naming_the_keys(tmp_path):
    t5 = {"model_type": "t5", "is_encoder_decoder": True, "d_model": 512, "d_ff": 2048, "d_kv": 64,
          "num_heads": 8, "num_layers": 6, "num_decoder_layers": 6, "vocab_size": 32128}
    message = _error(tmp_path, t5)
    assert "model_type 't5'" in message and "is_encoder_decoder: true" in message and "encoder-decoder" in message
    assert "num_decoder_layers: 6" in message and "supported: Llama" in message


def test_mamba_is_refused_naming_the_keys(tmp_path):
    mamba = {"model_type": "mamba", "hidden_size": 768, "intermediate_size": 1536, "num_hidden_layers": 24,
             "vocab_size": 50280, "state_size": 16, "conv_kernel": 4, "expand": 2, "time_step_rank": 48}
    message = _error(tmp_path, mamba)
    assert "state_size: 16" in message and "conv_kernel: 4" in message and "state-space (Mamba)" in message
    state_spaces = {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True}
    (tmp_path / "ssm").mkdir()
    (tmp_path / "ssm" / "config.json").write_text(json.dumps(state_spaces))
    with pytest.raises(NmsimError, match="this config is not .*ssm_cfg: \\{\\}"):
        model_shape(str(tmp_path / "ssm"))


def test_deepseek_latent_attention_and_experts_are_refused(tmp_path):
    deepseek = {**LLAMA_3_1_8B, "model_type": "deepseek_v3", "kv_lora_rank": 512, "q_lora_rank": 1536,
                "n_routed_experts": 256, "first_k_dense_replace": 3}
    message = _error(tmp_path, deepseek)
    assert all(f"{key}:" in message for key in ("kv_lora_rank", "q_lora_rank", "n_routed_experts",
                                                "first_k_dense_replace"))


def test_missing_keys_are_all_named(tmp_path):
    config = {key: value for key, value in LLAMA_3_1_8B.items() if key != "num_attention_heads"}
    assert "(missing 'num_attention_heads')" in _error(tmp_path, config)
    message = _error(tmp_path, {"model_type": "llama", "hidden_size": 8})
    assert "(missing 'num_attention_heads'); also missing 'num_hidden_layers', 'intermediate_size'" in message
    assert "(missing 'n_head'); also missing 'n_embd', 'n_layer'" in _error(tmp_path, {"model_type": "gpt2"})


def test_bad_values_name_the_key(tmp_path):
    assert "hidden_act: \"xielu\": not an activation" in _error(tmp_path, {**LLAMA_3_1_8B, "hidden_act": "xielu"})
    assert "hidden_size: \"big\": must be an integer" in _error(tmp_path, {**LLAMA_3_1_8B, "hidden_size": "big"})
    assert "num_experts_per_tok: 9 is more than the 8 experts" in _error(
        tmp_path, {**MIXTRAL_8X7B, "num_experts_per_tok": 9})
    assert "not a model config" in _error(tmp_path, [1, 2])


def test_unknown_model_types_are_read_as_llama_like_only_when_they_are(tmp_path):
    shape = _shape(tmp_path, {**LLAMA_3_1_8B, "model_type": "my_llama"}, "mine")
    assert shape.family == "my_llama" and shape.weight_count() == model_shape("llama-3.1-8b").weight_count()
    neox = {"model_type": "gpt_neox", "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6,
            "num_attention_heads": 8, "vocab_size": 50304, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
    message = _error(tmp_path, neox)
    assert "model_type 'gpt_neox'" in message and "layer_norm_eps" in message and "LayerNorm" in message
    assert "model_type 'my_llama' is none of" in _error(tmp_path, {"model_type": "my_llama", "hidden_size": 8})


# --- models.yaml ---------------------------------------------------------------------------------------------------
def test_new_presets_load():
    llama70 = model_shape("llama-3.1-70b")
    assert llama70.name == "llama-3-70b" and find_model("llama-3-70b").statistics_from == "smollm2-135m"
    assert (llama70.hidden_size, llama70.intermediate_size, llama70.num_layers, llama70.num_heads,
            llama70.num_kv_heads, llama70.head_dim, llama70.vocab_size) == (8192, 28672, 80, 64, 8, 128, 128256)
    assert llama70.projection_shape("k") == (8192, 1024) and statistics_source(llama70) == "smollm2-135m"
    mixtral = model_shape("mixtral-8x7b")
    assert (mixtral.num_experts, mixtral.experts_per_token, mixtral.max_positions) == (8, 2, 32768)
    assert mixtral.family == "mistral" and statistics_source(mixtral) == "smollm2-135m"


def test_presets_carry_their_config_fields():
    gemma = model_shape("gemma-3-4b")
    assert (gemma.activation, gemma.norms_per_layer, gemma.qk_norm, gemma.tied_embeddings, gemma.max_positions) == (
        "gelu", 4, True, True, 131072)
    assert gemma.window(0) == 1024 and gemma.window(5) == 0 and gemma.window(33) == 1024
    small = model_shape("smollm2-135m")
    assert small.tied_embeddings and small.max_positions == 8192 and small.layer_windows == ()
    assert [model_shape(m).max_positions for m in ("llama-2-7b", "llama-3.1-8b", "qwen2.5-7b")] == [4096, 131072,
                                                                                                     32768]
    assert model_shape("qwen2.5-7b").layer_windows == ()


def test_weight_counts_match_the_published_sizes():
    # Llama-3.1-8B: 128256·4096 embedding and head; 32 × (q 4096² + k, v 4096·1024 + o 4096² + 3·4096·14336 + 2·4096)
    llama = 2 * 128256 * 4096 + 32 * (2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096) + 4096
    assert model_shape("llama-3.1-8b").weight_count() == llama == 8_030_261_248
    assert llama == pytest.approx(8.03e9, rel=0.01)
    # Mixtral-8x7B: 32000·4096 embedding and head; 32 × (attention + 8 experts × 3·4096·14336 + router 4096·8 + norms)
    mixtral = 2 * 32000 * 4096 + 32 * (2 * 4096**2 + 2 * 4096 * 1024 + 8 * 3 * 4096 * 14336 + 4096 * 8
                                       + 2 * 4096) + 4096
    assert model_shape("mixtral-8x7b").weight_count() == mixtral == 46_702_792_704
    assert mixtral == pytest.approx(46.7e9, rel=0.01)
    assert model_shape("llama-3-70b").weight_count() == pytest.approx(70.6e9, rel=0.01)
    assert model_shape("smollm2-135m").weight_count() == pytest.approx(134.5e6, rel=0.01)  # tied
    assert model_shape("gemma3-270m").weight_count() == pytest.approx(268e6, rel=0.01)  # 170 M embedding + 100 M


@pytest.fixture
def models_copy(tmp_path, monkeypatch):
    """A writable copy of models.yaml that models() reads (its cache cleared before and after)."""
    copy = tmp_path / "models.yaml"
    copy.write_text(registry.MODELS_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(registry, "MODELS_FILE", copy)
    models.cache_clear()
    yield copy
    models.cache_clear()


@pytest.mark.parametrize("extra, key, message", [
    ("mlp: fancy", "mlp", "'fancy': choose from gated, plain"),
    ("norms_per_layer: 0", "norms_per_layer", "must be a positive integer"),
    ("qk_norm: 1", "qk_norm", "must be true or false"),
    ("sliding_window_pattern: 6", "sliding_window_pattern", "needs sliding_window"),
    ("experts_per_token: 2", "experts_per_token", "needs num_experts"),
    ("num_experts: 8", "num_experts", "needs experts_per_token"),
])
def test_bad_models_yaml_values_name_the_key_path(models_copy, extra, key, message):
    text = models_copy.read_text(encoding="utf-8")
    anchor = "    vocab_size: 32000\n    max_positions: 4096\n"  # llama-2-7b's shape
    assert text.count(anchor) == 1
    models_copy.write_text(text.replace(anchor, anchor + f"    {extra}\n"), encoding="utf-8")
    with pytest.raises(NmsimError, match=f"models.yaml:\\d+: llama-2-7b.shape.{key}: .*{message}"):
        models()


# --- GGUF ----------------------------------------------------------------------------------------------------------
def test_gguf_metadata_and_tensors_match_the_preset():
    """Gemma 3 270M's GGUF (~12 s to parse): window, context, q/k norms, 4 norms and the tied head all agree."""
    from nmsim.llm.models import _embedded_gguf

    try:
        path = _embedded_gguf(find_model("gemma3-270m"))
    except NmsimError as exc:
        pytest.skip(str(exc))
    assert _same_as_preset(model_shape(str(path)), "gemma3-270m")
