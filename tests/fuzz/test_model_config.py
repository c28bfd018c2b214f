"""Fuzzing the model inputs: mutated config.json files, garbage and mis-typed GGUF files, and simulate's size
arguments, through ``nmsim simulate --hw a100-dense --model FILE --linear-only`` (the cheapest full path: a dense
design needs no mask statistics of its own).

Every case ends in a clean refusal (exit 2, one error line naming the file) or is accepted with finite numbers and
integer GEMM shapes that are the config's own: a size is never read as something else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmsim.errors import NmsimError
from nmsim.model_config import from_gguf
from nmsim.model_shape import DIMENSION_LIMITS, ModelShape
from nmsim.pipeline import SIMULATE_LIMITS

# Real configs, written by hand from the public config.json files (see tests/test_model_families.py).
SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "hidden_act": "silu",
           "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
GEMMA3_270M = {"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
               "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768, "sliding_window": 512,
               "_sliding_window_pattern": 6, "rms_norm_eps": 1e-6,
               "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3}
QWEN15_MOE = {"model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
              "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts": 60,
              "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
              "vocab_size": 151936, "max_position_embeddings": 8192, "use_sliding_window": False,
              "sliding_window": 32768, "max_window_layers": 21, "decoder_sparse_step": 1, "mlp_only_layers": [],
              "hidden_act": "silu", "tie_word_embeddings": False}
GPT2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None, "vocab_size": 50257,
        "n_positions": 1024, "n_ctx": 1024, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
GEMMA3_4B_WRAPPED = {"model_type": "gemma3", "text_config": {
    "model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
    "sliding_window": 1024, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}}
CONFIGS = {"smollm2": SMOLLM2, "gemma3": GEMMA3_270M, "qwen-moe": QWEN15_MOE, "gpt2": GPT2,
           "gemma3-4b": GEMMA3_4B_WRAPPED}
HIDDEN_KEY = {"smollm2": "hidden_size", "gemma3": "hidden_size", "qwen-moe": "hidden_size", "gpt2": "n_embd",
              "gemma3-4b": "hidden_size"}

BAD_VALUES = [0, -1, -576, 576.5, 64.0, "576", "", None, [64], {"v": 1}, True, False, 2**40, 10**30, 1e308,
              float("nan"), float("inf")]
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _strict_json(text: str):
    """JSON that must hold no NaN or infinity."""
    def refuse(token):
        raise AssertionError(f"the JSON output holds {token}")
    return json.loads(text, parse_constant=refuse)


def _leaves(config, prefix=()):
    """(key path, value) of every leaf of a config."""
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        if isinstance(value, (dict, list)) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _set(config, path, value=None, delete=False):
    config = json.loads(json.dumps(config))
    target = config
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return config


def _simulate(cli, tmp_path: Path, model: Path, *extra):
    out = tmp_path / "out.json"
    out.unlink(missing_ok=True)
    outcome = cli("simulate", "--hw", "a100-dense", "--model", model, "--linear-only", "--seq", "16",
                  "--json", out, *extra)
    return outcome, out


def _check_accepted(outcome, out: Path, config) -> None:
    """Accepted: exit 0, finite numbers, positive integer GEMM shapes, the q projection reading the config's hidden
    size."""
    outcome.accepted()
    payload = _strict_json(out.read_text())
    rows = [row for table in payload["gemms"].values() for row in table]
    assert rows
    for row in rows:
        for key in ("m_tokens", "k", "n"):
            assert isinstance(row[key], int) and not isinstance(row[key], bool) and row[key] >= 1, row
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    text = config.get("text_config", config) if isinstance(config, dict) else {}
    hidden = text.get("hidden_size", text.get("n_embd"))
    if isinstance(hidden, int):
        assert {row["k"] for row in rows if row["projection"] == "q"} == {hidden}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_real_configs_are_accepted(cli, tmp_path, name):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS[name]))
    outcome, out = _simulate(cli, tmp_path, path)
    _check_accepted(outcome, out, CONFIGS[name])


@FUZZ
@given(data=st.data())
def test_mutated_configs_are_refused_or_read_exactly(cli, tmp_path, data):
    name = data.draw(st.sampled_from(sorted(CONFIGS)), "config")
    config = CONFIGS[name]
    leaves = list(_leaves(config))
    path, _ = data.draw(st.sampled_from(leaves), "leaf")
    kind = data.draw(st.sampled_from(["replace", "replace", "replace", "delete"]), "kind")
    if kind == "delete":
        mutated = _set(config, path, delete=True)
    else:
        mutated = _set(config, path, data.draw(st.sampled_from(BAD_VALUES), "value"))
    file = tmp_path / "config.json"
    file.write_text(json.dumps(mutated))
    outcome, out = _simulate(cli, tmp_path, file)
    if outcome.code == 0:
        _check_accepted(outcome, out, mutated)
    else:
        outcome.refused(str(file))


@FUZZ
@given(data=st.data())
def test_broken_config_files_are_one_error(cli, tmp_path, data):
    config = CONFIGS[data.draw(st.sampled_from(sorted(CONFIGS)), "config")]
    text = json.dumps(config).encode()
    kind = data.draw(st.sampled_from(["truncate", "non-utf8", "wrap", "scalar", "nest", "digits"]), "kind")
    if kind == "truncate":
        raw = text[:data.draw(st.integers(0, len(text) - 1), "cut")]
    elif kind == "non-utf8":
        at = data.draw(st.integers(0, len(text)), "at")
        raw = text[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\x80\x80", b"\xfe\xff"]), "bytes") + text[at:]
    elif kind == "wrap":
        raw = json.dumps([config]).encode()
    elif kind == "scalar":
        raw = data.draw(st.sampled_from([b"null", b"3", b'"config"', b"true", b"[]", b"   "]), "scalar")
    elif kind == "nest":
        raw = b"[" * 100_000 + b"]" * 100_000
    else:  # an integer longer than Python's 4300-digit conversion limit
        raw = text[:-1] + b', "vocab_size": ' + b"9" * 5000 + b"}"
    file = tmp_path / "config.json"
    file.write_bytes(raw)
    outcome, _ = _simulate(cli, tmp_path, file)
    outcome.refused(str(file))


@pytest.mark.parametrize("key, value, needles", [
    ("hidden_size", 576.5, ["hidden_size: 576.5", "must be an integer"]),
    ("hidden_size", 576.0, ["hidden_size: 576.0", "must be an integer"]),
    ("hidden_size", "576", ['hidden_size: "576"', "must be an integer"]),
    ("hidden_size", -576, ["hidden_size: -576", "at least 1"]),
    ("num_attention_heads", 0, ["num_attention_heads: 0", "at least 1"]),
    ("num_hidden_layers", 0, ["num_hidden_layers: 0", "at least 1"]),
    ("num_hidden_layers", 10**5, ["num_hidden_layers: 100000", "above 10,000", "beyond any real model"]),
    ("hidden_size", 2**21 * 9, ["hidden_size: 18874368", "above 1,048,576"]),
    ("vocab_size", 2**30, ["vocab_size: 1073741824", "above 16,777,216"]),
    ("num_key_value_heads", 2, ["num_key_value_heads", "does not divide num_attention_heads 9"]),
    ("num_attention_heads", 15, ["num_attention_heads", "15 does not divide hidden_size 576"]),
    ("vocab_size", None, ["vocab_size: null", "at least 1"]),
    ("tie_word_embeddings", 1, ["tie_word_embeddings: 1", "true or false"]),
    ("hidden_act", ["silu"], ["hidden_act", "not an activation"]),
])
def test_each_bad_dimension_names_the_file_key_value_and_the_rule(cli, tmp_path, key, value, needles):
    file = tmp_path / "config.json"
    file.write_text(json.dumps({**SMOLLM2, key: value}))
    outcome, _ = _simulate(cli, tmp_path, file)
    outcome.refused(str(file), *needles)


def test_top_level_list_and_missing_vocab_are_refused(cli, tmp_path):
    file = tmp_path / "config.json"
    file.write_text(json.dumps([SMOLLM2]))
    _simulate(cli, tmp_path, file)[0].refused(str(file), "top level is a JSON array", "JSON object")
    file.write_text(json.dumps({k: v for k, v in SMOLLM2.items() if k != "vocab_size"}))
    _simulate(cli, tmp_path, file)[0].refused(str(file), "vocab_size: missing")


def test_a_huge_config_file_is_refused_unread(cli, tmp_path):
    file = tmp_path / "config.json"
    with open(file, "wb") as f:
        f.truncate(2**24 + 1)  # sparse: nothing is written
    _simulate(cli, tmp_path, file)[0].refused(str(file), "16,777,217 bytes", "larger than any model config")


def test_model_shape_checks_presets_and_hand_made_shapes_alike():
    def shape(**change):
        values = dict(name="hand", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=16, vocab_size=100, source="hand")
        return ModelShape(**{**values, **change})

    assert shape().hidden_size == 64
    for change, message in [({"hidden_size": 0}, "hidden_size: 0: must be at least 1"),
                            ({"hidden_size": 64.0}, "hidden_size: 64.0: must be an integer"),
                            ({"num_layers": True}, "num_layers: True: must be an integer"),
                            ({"vocab_size": np.int64(100)}, "vocab_size"),
                            ({"head_dim": 2**15}, "head_dim: 32768: above 16,384"),
                            ({"num_kv_heads": 3}, "num_kv_heads 3 does not divide num_heads 4"),
                            ({"experts_per_token": 2}, "experts_per_token 2 needs num_experts"),
                            ({"layer_windows": (8, -1)}, "layer_windows: -1: must be at least 0"),
                            ({"max_positions": -5}, "max_positions: -5"),
                            ({"tied_embeddings": 1}, "tied_embeddings: 1: must be true or false"),
                            ({"source": "/x/config.json", "num_heads": 0}, "/x/config.json: num_heads: 0")]:
        with pytest.raises(NmsimError, match=message.replace("(", r"\(").replace(".", r"\.")):
            shape(**change)
    assert DIMENSION_LIMITS["num_layers"] == 10_000 and DIMENSION_LIMITS["hidden_size"] == 2**20


# --- GGUF ----------------------------------------------------------------------------------------------------------
TINY_GGUF = {"llama.embedding_length": 64, "llama.block_count": 2, "llama.feed_forward_length": 128,
             "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2, "llama.context_length": 256,
             "llama.vocab_size": 100}


def _write_gguf(path: Path, metadata: dict, arch: str = "llama") -> Path:
    """A small GGUF file: ``metadata`` (ints as uint32, negative ones int32; floats, strings, lists as given) and
    one norm tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            if value < 0:
                writer.add_int32(key, value)
            elif value < 2**32:
                writer.add_uint32(key, value)
            else:
                writer.add_uint64(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_small_gguf_is_read_exactly(cli, tmp_path):
    path = _write_gguf(tmp_path / "tiny.gguf", TINY_GGUF)
    shape = from_gguf(path)
    assert (shape.hidden_size, shape.intermediate_size, shape.num_layers, shape.num_heads, shape.num_kv_heads,
            shape.head_dim, shape.vocab_size, shape.max_positions) == (64, 128, 2, 4, 2, 16, 100, 256)
    outcome, out = _simulate(cli, tmp_path, path)
    _check_accepted(outcome, out, {"hidden_size": 64})


@FUZZ
@given(data=st.data())
def test_mistyped_gguf_metadata_is_refused_or_read_exactly(cli, tmp_path, data):
    key = data.draw(st.sampled_from(sorted(TINY_GGUF)), "key")
    kind = data.draw(st.sampled_from(["value", "delete"]), "kind")
    metadata = dict(TINY_GGUF)
    if kind == "delete":
        del metadata[key]
    else:
        metadata[key] = data.draw(st.sampled_from([0, -1, 7, 64.0, "64", True, 2**40, [1, 2]]), "value")
    path = _write_gguf(tmp_path / "mutated.gguf", metadata)
    outcome, out = _simulate(cli, tmp_path, path)
    if outcome.code == 0:
        _check_accepted(outcome, out, {"hidden_size": metadata.get("llama.embedding_length")})
    else:
        outcome.refused(str(path))


@FUZZ
@given(data=st.data())
def test_garbage_gguf_files_are_one_error(cli, tmp_path, data):
    valid = _write_gguf(tmp_path / "valid.gguf", TINY_GGUF).read_bytes()
    kind = data.draw(st.sampled_from(["random", "magic", "truncate", "flip"]), "kind")
    if kind == "random":
        raw = data.draw(st.binary(max_size=200), "bytes")
    elif kind == "magic":
        raw = b"GGUF" + data.draw(st.binary(max_size=200), "bytes")
    elif kind == "truncate":
        raw = valid[:data.draw(st.integers(0, len(valid) - 1), "cut")]
    else:  # one byte of the header or metadata changed
        at = data.draw(st.integers(4, min(len(valid), 400) - 1), "at")
        raw = valid[:at] + bytes([valid[at] ^ data.draw(st.integers(1, 255), "xor")]) + valid[at + 1:]
    path = tmp_path / "garbage.gguf"
    path.write_bytes(raw)
    outcome, out = _simulate(cli, tmp_path, path)
    if outcome.code == 0:  # a flipped byte may leave a readable file: then it must be read consistently
        _check_accepted(outcome, out, {"hidden_size": from_gguf(path).hidden_size})
    else:
        outcome.refused(str(path))


def test_eval_refuses_a_garbage_gguf_before_any_work(cli, tmp_path, monkeypatch):
    from nmsim.llm import models

    def never(*_):
        raise AssertionError("a garbage GGUF must be refused before it is hashed or converted")

    monkeypatch.setattr(models, "_file_sha256", never)
    monkeypatch.setattr(models, "_from_pretrained", never)
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model at all" * 10)
    with pytest.raises(NmsimError, match="fake.gguf: not a GGUF model file transformers can load .*expected a GGUF"):
        models.load_model(str(fake))
    _write_gguf(tmp_path / "odd.gguf", TINY_GGUF, arch="nosucharch")
    with pytest.raises(NmsimError, match="odd.gguf: GGUF architecture 'nosucharch' cannot be loaded .*supported: "):
        models.load_model(str(tmp_path / "odd.gguf"))
    outcome = cli("eval", "--model", fake, "--out", tmp_path / "study", "--patterns", "8:16")
    outcome.refused(str(fake), "not a GGUF model file")


# --- simulate's sizes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needles", [
    (["--batch", "1000000000000"], ["--batch 1000000000000 × --seq 512", "16,777,216 tokens", "--no-limits"]),
    (["--seq", "1000000000000"], ["--seq 1000000000000", "16,777,216", "--no-limits"]),
    (["--batch", "4096", "--seq", "8192"], ["33,554,432 prompt tokens", "--no-limits"]),
    (["--seq", "9000"], ["--seq 9,000", "context of model smollm2-135m, 8,192 tokens", "--no-limits"]),
    (["--generate", "1000000000000"], ["--generate 1,000,000,000,000", "131,072 decode steps", "--no-limits"]),
    (["--devices", "1000000000000"], ["--devices 1,000,000,000,000", "1,024", "--no-limits"]),
    (["--batch", "0"], ["--batch"]),
    (["--seq", "-3"], ["--seq"]),
])
def test_simulate_sizes_beyond_any_real_model_are_refused_at_once(cli, args, needles):
    outcome = cli("simulate", "--hw", "a100-dense", "--model", "smollm2-135m", *args)
    outcome.refused(*needles)


def test_no_limits_lifts_the_bounds(cli, tmp_path):
    out = tmp_path / "o.json"
    cli("simulate", "--hw", "a100-dense", "--model", "smollm2-135m", "--linear-only", "--seq", "9000",
        "--no-limits", "--json", out).accepted()
    assert _strict_json(out.read_text())["run"]["seq"] == 9000
    tokens = SIMULATE_LIMITS["tokens"]
    outcome = cli("simulate", "--hw", "a100-dense", "--model", "smollm2-135m", "--linear-only", "--seq", "8192",
                  "--batch", str(tokens // 8192), "--json", out)  # exactly at the bound: past the size check ...
    line = outcome.refused("does not fit a100-dense", "KV cache")  # ... then its 2^24 tokens' KV cache is too big
    assert "--no-limits" not in line


def test_json_to_a_directory_or_under_a_file_is_refused_before_any_work(cli, tmp_path):
    outcome = cli("simulate", "--hw", "a100-dense", "--model", "smollm2-135m", "--linear-only", "--json", tmp_path)
    outcome.refused(f"--json {tmp_path}", "is a directory; give a file path")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    outcome = cli("simulate", "--hw", "a100-dense", "--model", "smollm2-135m", "--linear-only", "--json",
                  blocker / "out.json")
    outcome.refused(str(blocker), "is a file, not a directory")
    assert blocker.read_text() == "x"
