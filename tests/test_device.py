"""Devices and dtypes: --device/--dtype parsing, model placement, and every stage (perplexity, pruning, calibration,
learnable training, weight pruning, trace capture) on the model's device in its dtype. CUDA runs join when present."""

import logging

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.llm.device import model_device, parse_dtype, resolve_device
from nmsim.llm.models import LoadedModel, load_model
from nmsim.llm.perplexity import perplexity
from nmsim.patterns import parse_pattern
from nmsim.sparsify.input_stats import calibrate
from nmsim.sparsify.learnable import LearnRecipe, train_scale_shift
from nmsim.sparsify.linear import SparsityConfig, sparsified
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.weight_pruning import WeightPruningConfig, weight_pruned
from nmsim.traces.capture import CaptureSettings, capture_trace
from nmsim.traces.format import read_manifest

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
VOCAB = 256


def _tiny(family: str) -> torch.nn.Module:
    """A random 2-layer model, hidden 64, built from its config (nothing downloads)."""
    torch.manual_seed(0)
    if family == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        return LlamaForCausalLM(config).eval()
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=64,
                              sliding_window=8)
    return Gemma3ForCausalLM(config).eval()


def _windows(count: int, length: int = 32) -> torch.Tensor:
    return torch.randint(3, VOCAB, (count, length), generator=torch.Generator().manual_seed(1))  # on the CPU


def test_device_spellings_and_their_errors(caplog):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(NmsimError, match=r"unknown device 'gpu'; choose from cpu, cuda, cuda:N, auto"):
        resolve_device("gpu")
    with pytest.raises(NmsimError, match="unknown device 'cuda:x'"):
        resolve_device("cuda:x")
    with caplog.at_level(logging.INFO, logger="nmsim.llm.device"):
        chosen = resolve_device("auto")
    assert chosen.type == ("cuda" if CUDA else "cpu")
    assert f"--device auto: running on {chosen}" in caplog.text
    with pytest.raises(NmsimError, match=r"device 'cuda:99' asked for, but .*(CUDA is not available|CUDA device)"):
        resolve_device("cuda:99")
    if not CUDA:
        with pytest.raises(NmsimError, match=r"device 'cuda' asked for, but CUDA is not available .*--device cpu"):
            resolve_device("cuda")


def test_dtype_names_and_their_error():
    assert [parse_dtype(n) for n in ("float32", "bfloat16", "float16")] == [torch.float32, torch.bfloat16,
                                                                           torch.float16]
    with pytest.raises(NmsimError, match=r"unknown dtype 'fp16'; choose from float32, bfloat16, float16"):
        parse_dtype("fp16")


@pytest.mark.parametrize("device", DEVICES)
def test_the_compiled_selection_kernel_takes_only_cpu_float32(device):
    from nmsim.sparsify import selection_kernel

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.zeros(2, 16, dtype=dtype, device=device)
        assert selection_kernel.supports(x, 16) == (device == "cpu" and dtype == torch.float32)


def _tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="t0", bos_token="t1", eos_token="t2")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_load_model_places_a_model_directory(tmp_path, device, dtype):
    _tiny("llama").save_pretrained(tmp_path / "tiny")
    _tokenizer().save_pretrained(tmp_path / "tiny")
    lm = load_model(str(tmp_path / "tiny"), dtype=parse_dtype(dtype), device=device)
    assert lm.model.dtype == parse_dtype(dtype)
    assert model_device(lm.model).type == device
    assert {p.device.type for p in lm.model.parameters()} == {device}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_every_stage_runs_on_the_models_device_in_its_dtype(tmp_path, family, device, dtype):
    model = _tiny(family).to(resolve_device(device), parse_dtype(dtype))
    where, precision = model_device(model), parse_dtype(dtype)
    windows = _windows(4)  # CPU token ids: each stage moves them

    result = perplexity(model, windows, batch_size=2)
    assert torch.isfinite(torch.tensor(result.perplexity)) and result.tokens == 4 * 31

    stats = calibrate(model, windows[:2])  # on the CPU, as a cached file reloads
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for entry in stats.values() for t in entry.values())

    with torch.no_grad():
        for mitigation in ("median-shift+variance", "static-shift+variance"):
            config = SparsityConfig(parse_pattern("8:16"), "magnitude", parse_mitigation(mitigation))
            with sparsified(model, config, stats):
                logits = model(windows[:2].to(where)).logits
            assert logits.device == where and logits.dtype == precision and torch.isfinite(logits).all()
        with weight_pruned(model, WeightPruningConfig(parse_pattern("2:4"), "wanda"), stats):
            logits = model(windows[:2].to(where)).logits
        assert logits.device == where and torch.isfinite(logits).all()

    config = SparsityConfig(parse_pattern("8:16"), "magnitude", parse_mitigation("median-shift+variance+learnable"))
    recipe = LearnRecipe(windows=2, seqlen=32, steps=3, heldout_windows=1)
    learned, reports = train_scale_shift(model, config, recipe, windows[:3], tmp_path / "learned.safetensors")
    assert len(reports) == 2 and all(torch.isfinite(torch.tensor(r.heldout_mse_learned)) for r in reports)
    assert all(t.device == where and t.dtype == torch.float32 and torch.isfinite(t).all()
               for pair in learned.values() for t in pair)
    with torch.no_grad(), sparsified(model, config, learned=learned, fold=True):
        logits = model(windows[:2].to(where)).logits
    assert logits.device == where and logits.dtype == precision and torch.isfinite(logits).all()


@pytest.mark.skipif(CUDA, reason="needs a machine without GPUs, where every module would be offloaded")
def test_a_device_map_that_offloads_to_the_cpu_is_an_error():
    from nmsim.llm.device import check_dispatch
    from nmsim.llm.models import _place

    with pytest.raises(NmsimError, match="does not fit on the visible GPUs: device_map='auto' put"):
        check_dispatch(_place(_tiny("llama"), {"device_map": "auto"}))


class _Tokenizer:
    eos_token_id = 0


@pytest.mark.parametrize("device", DEVICES)
def test_capture_moves_its_records_to_the_cpu_and_names_a_non_default_dtype(tmp_path, device):
    settings = CaptureSettings(prefill_windows=1, seqlen=16, decode_prompts=2, decode_batch=2, prompt_tokens=4,
                               decode_steps=2, values_tokens=2)
    config = SparsityConfig(parse_pattern("8:16"), mitigation=parse_mitigation("median-shift+variance"))
    for dtype in (torch.bfloat16, torch.float32):
        model = _tiny("llama").to(resolve_device(device), dtype)
        out = capture_trace(LoadedModel("tiny", "random", model, _Tokenizer(), False), config, tmp_path / str(dtype),
                            prefill_windows=_windows(1, 16), decode_prompts=_windows(2, 4), settings=settings,
                            data={"name": "random", "sha256": "0"})
        manifest = read_manifest(out)
        assert manifest["complete"] and manifest["token_counts"] == {"prefill": 16, "decode": 2 * 2}
        # float32 (the default) stays unnamed, as in every trace captured before dtypes were chosen
        assert manifest["model"].get("dtype") == (None if dtype == torch.float32 else "bfloat16")


def test_cli_refuses_cuda_without_it_and_unknown_dtypes(capsys, tmp_path):
    if not CUDA:
        for command in (["eval"], ["capture", "--decode-prompts", "0"]):
            assert main([*command, "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
            err = capsys.readouterr().err
            assert "nmsim: error: device 'cuda' asked for, but CUDA is not available" in err
            assert "Traceback" not in err
    assert main(["eval", "--device", "tpu", "--out", str(tmp_path / "x")]) == 2
    assert "unknown device 'tpu'; choose from cpu, cuda, cuda:N, auto" in capsys.readouterr().err
    assert main(["eval", "--dtype", "fp16", "--out", str(tmp_path / "x")]) == 2
    assert "nmsim: error: unknown dtype 'fp16'; choose from float32, bfloat16, float16" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
