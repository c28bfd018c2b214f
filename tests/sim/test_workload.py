"""Workloads from shape presets, HF configs and GGUF metadata."""

import json

import pytest

from nmsim.errors import NmsimError
from nmsim.llm.models import _embedded_gguf
from nmsim.registry import find_model, models
from nmsim.registry import model_shape
from nmsim.sim.workload import linear_gemms


def test_presets_give_the_published_projection_shapes():
    assert set(models()) == {"smollm2-135m", "gemma3-270m", "llama-2-7b", "llama-3.1-8b", "qwen2.5-7b", "gemma-3-4b",
                             "llama-3-70b", "mixtral-8x7b"}
    qwen = model_shape("qwen2.5-7b")
    assert qwen.projection_shape("k") == (3584, 512) and qwen.projection_shape("down") == (18944, 3584)
    gemma = model_shape("Gemma-3-4B")
    assert gemma.projection_shape("q") == (2560, 2048) and gemma.projection_shape("o") == (2048, 2560)
    llama3 = model_shape("llama-3.1-8b")
    assert llama3.projection_shape("v") == (4096, 1024) and llama3.projection_shape("gate") == (4096, 14336)


def test_gemms_of_prefill_and_decode():
    shape = model_shape("smollm2-135m")
    prefill = linear_gemms(shape, "prefill", batch=2, seq=512)
    assert len(prefill) == 30 * 7 and {g.m for g in prefill} == {1024}
    assert [(g.projection, g.k, g.n) for g in prefill[:7]] == [
        ("q", 576, 576), ("k", 576, 192), ("v", 576, 192), ("o", 576, 576),
        ("gate", 576, 1536), ("up", 576, 1536), ("down", 1536, 576)]
    decode = linear_gemms(shape, "decode", batch=8, seq=4096)
    assert {g.m for g in decode} == {8}  # context length does not change the linear GEMMs
    assert sum(g.macs for g in decode) == 8 * 30 * (576 * (576 + 192 + 192 + 576 + 1536 + 1536) + 1536 * 576)
    with pytest.raises(NmsimError, match="at least 1"):
        linear_gemms(shape, "decode", batch=0)


def test_hf_config_including_a_multimodal_wrapper(tmp_path):
    config = {"model_type": "gemma3", "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
              "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
              "vocab_size": 262208}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = model_shape(str(tmp_path))
    preset = model_shape("gemma-3-4b")
    assert (shape.hidden_size, shape.num_layers, shape.head_dim, shape.num_kv_heads) == (
        preset.hidden_size, preset.num_layers, preset.head_dim, preset.num_kv_heads)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(NmsimError, match="not a decoder-only transformer config \\(missing 'num_attention_heads'\\)"):
        model_shape(str(tmp_path / "config.json"))


def test_gguf_metadata_matches_the_preset():
    from_gguf = model_shape(str(_embedded_gguf(find_model("smollm2-135m"))))
    preset = model_shape("smollm2-135m")
    fields = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size")
    assert [getattr(from_gguf, f) for f in fields] == [getattr(preset, f) for f in fields]


def test_unknown_models_list_the_presets():
    with pytest.raises(NmsimError, match="not a registered model .*llama-2-7b"):
        model_shape("gpt-5")
