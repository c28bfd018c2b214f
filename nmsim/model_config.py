"""Model shapes from files: a Hugging Face ``config.json`` (:func:`from_hf_config`) or a GGUF file's metadata
(:func:`from_gguf`).

Read: Llama, Mistral, Mixtral, Qwen2/Qwen3 (dense and MoE), Gemma 1-3 (sliding-window layers from
``sliding_window_pattern`` or ``layer_types``), GPT-2 (and GPT-3-shaped GPT-2 configs) and OPT. Anything else is
refused with one message naming the keys or values nmsim cannot describe (encoder-decoders, state-space layers,
latent attention, mixed dense/MoE stacks), never read as something it is not.

Every dimension is checked where it enters: a JSON integer (576.0 and "576" are refused like 576.5), at least 1
(0 where it means none), at most :data:`nmsim.model_shape.DIMENSION_LIMITS` (beyond any real model), and the
divisibility the attention needs; errors read ``FILE: KEY: VALUE: what is allowed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nmsim.errors import NmsimError
from nmsim.model_shape import DIMENSION_LIMITS, ModelShape, dimension_problem, pattern_windows


def family_of(model_type: str) -> str:
    """An architecture family from a config's model_type or a GGUF architecture (gemma3_text → gemma, mixtral →
    mistral)."""
    model_type = model_type.lower()
    if model_type.startswith("mixtral"):
        return "mistral"
    for family in ("gemma", "llama", "qwen", "mistral", "phi"):
        if model_type.startswith(family):
            return family
    return model_type


SUPPORTED_CONFIGS = "Llama, Mistral, Mixtral, Qwen2/Qwen3 (dense and MoE), Gemma 1-3, GPT-2 (GPT-3-shaped) and OPT"
_LLAMA_LIKE = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
               "gemma3_text"}
_HF_ACTIVATIONS = {"silu": "silu", "swish": "silu", "relu": "relu", "gelu": "gelu", "gelu_new": "gelu",
                   "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu", "gelu_accurate": "gelu", "gelu_python": "gelu",
                   "gelu_python_tanh": "gelu"}
_GEMMA3_DEFAULTS = {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
                    "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131072,
                    "sliding_window": 4096, "sliding_window_pattern": 6, "tie_word_embeddings": True}
_HF_DEFAULTS = {  # transformers' class defaults that a config.json may leave out (Gemma 3 4B's text_config does)
    "gemma": {"hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True},
    "gemma2": {"hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True, "sliding_window": 4096,
               "sliding_window_pattern": 2},
    "gemma3": _GEMMA3_DEFAULTS, "gemma3_text": _GEMMA3_DEFAULTS,
    "qwen2": {"max_window_layers": 28}, "qwen2_moe": {"max_window_layers": 28}, "qwen3": {"max_window_layers": 28},
    "gpt2": {"vocab_size": 50257, "n_positions": 1024, "activation_function": "gelu_new", "tie_word_embeddings": True},
    "opt": {"vocab_size": 50272, "max_position_embeddings": 2048, "activation_function": "relu",
            "tie_word_embeddings": True},
}
_UNSUPPORTED = {  # config keys of architectures a ModelShape cannot describe → what they mean
    "is_encoder_decoder": "an encoder-decoder model", "add_cross_attention": "cross-attention",
    "num_decoder_layers": "an encoder-decoder model", "encoder_layers": "an encoder-decoder model",
    "decoder_layers": "an encoder-decoder model",
    "state_size": "state-space (Mamba) layers", "ssm_cfg": "state-space (Mamba) layers",
    "d_state": "state-space (Mamba) layers", "ssm_state_size": "state-space (Mamba) layers",
    "mamba_d_state": "state-space (Mamba) layers", "time_step_rank": "state-space (Mamba) layers",
    "conv_kernel": "state-space (Mamba) layers", "d_conv": "state-space (Mamba) layers",
    "lru_width": "recurrent (Griffin) layers",
    "kv_lora_rank": "multi-head latent attention (DeepSeek)", "q_lora_rank": "multi-head latent attention (DeepSeek)",
    "n_routed_experts": "DeepSeek-style experts", "n_shared_experts": "DeepSeek-style experts",
    "first_k_dense_replace": "mixed dense and MoE layers", "moe_layer_freq": "mixed dense and MoE layers",
}
_UNSUPPORTED_FLAGS = {"is_encoder_decoder", "add_cross_attention"}  # unsupported only when true
_CONFIG_MAX_BYTES = 2**24  # real config.json files are a few KB; a larger one is not a model config
_KEY_DIMENSIONS = {  # config.json (and GGUF metadata) keys → the ModelShape dimension whose bound applies
    "hidden_size": "hidden_size", "n_embd": "hidden_size", "intermediate_size": "intermediate_size",
    "moe_intermediate_size": "intermediate_size", "ffn_dim": "intermediate_size", "n_inner": "intermediate_size",
    "num_hidden_layers": "num_layers", "n_layer": "num_layers", "num_attention_heads": "num_heads",
    "n_head": "num_heads", "num_key_value_heads": "num_kv_heads", "head_dim": "head_dim", "vocab_size": "vocab_size",
    "num_local_experts": "num_experts", "num_experts": "num_experts", "num_experts_per_tok": "experts_per_token",
    "shared_expert_intermediate_size": "shared_expert_intermediate_size",
    "max_position_embeddings": "max_positions", "n_positions": "max_positions", "sliding_window": "layer_windows",
    "sliding_window_pattern": "num_layers", "_sliding_window_pattern": "num_layers", "max_window_layers": "num_layers",
    "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
    "expert_feed_forward_length": "intermediate_size", "block_count": "num_layers", "head_count": "num_heads",
    "head_count_kv": "num_kv_heads", "key_length": "head_dim", "expert_count": "num_experts",
    "expert_used_count": "experts_per_token", "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
    "context_length": "max_positions",
}


def _limit(key: str) -> int:
    """The upper bound of a config or GGUF key (``llama.block_count`` → num_layers' bound)."""
    return DIMENSION_LIMITS.get(_KEY_DIMENSIONS.get(key.rsplit(".", 1)[-1], ""), 2**31)


def _json_kind(value) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _show_any(value) -> str:
    """_show for values that may not be JSON (GGUF arrays and numpy scalars)."""
    try:
        return _show(value)
    except (TypeError, ValueError):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _HFConfig:
    """A config.json's decoder section with its class defaults; every error names the file and the key."""

    def __init__(self, path: Path, config: dict, text: dict, model_type: str):
        self.path, self.config, self.text, self.model_type = path, config, text, model_type
        self.prefix = "text_config." if text is not config else ""
        self.defaults = _HF_DEFAULTS.get(model_type, {})

    def fail(self, key: str, message: str):
        raise NmsimError(f"{self.path}: {self.prefix}{key}: {message}")

    def get(self, key: str, default=None):
        """The config's value (an explicit null counts), else the class default, else ``default``."""
        value = self.text[key] if key in self.text else self.defaults.get(key)
        return default if value is None else value

    def count(self, key: str, default=None, minimum: int = 1) -> int:
        value = self.get(key, default)
        problem = dimension_problem(value, minimum, _limit(key))
        if problem:
            self.fail(key, f"{_show(value)}: {problem}" if key in self.text else f"missing: {problem}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, self.config.get(key, default))  # a multimodal wrapper may hold it at the top
        if not isinstance(value, bool):
            self.fail(key, f"{_show(value)}: must be true or false")
        return value

    def require(self, keys: list[str]) -> None:
        """Raise one error listing every missing key (the first in the form ``(missing 'key')``)."""
        missing = [self.prefix + key for key in keys if self.get(key) is None]
        if not missing:
            return
        also = f"; also missing {', '.join(map(repr, missing[1:]))}" if len(missing) > 1 else ""
        known = _LLAMA_LIKE | {"gpt2", "opt"}
        reading = "" if self.model_type in known else (
            f" (model_type {self.model_type!r} is none of {SUPPORTED_CONFIGS}; it was read as llama-like)"
            if self.model_type else " (no model_type; it was read as llama-like)")
        raise NmsimError(f"{self.path}: not a decoder-only transformer config (missing {missing[0]!r}){also}{reading}")

    def activation(self, keys: tuple[str, ...], default: str) -> str:
        key = next((k for k in keys if self.get(k) is not None), None)
        name = self.get(key) if key is not None else default
        if not isinstance(name, str) or name not in _HF_ACTIVATIONS:
            self.fail(key, f"{_show(name)}: not an activation nmsim knows ({', '.join(_HF_ACTIVATIONS)})")
        return _HF_ACTIVATIONS[name]

    def vocab(self) -> int:
        """vocab_size of the decoder section, else of a multimodal wrapper's top level (the LM head's width)."""
        outer = self.config.get("vocab_size")
        if "vocab_size" not in self.text and outer is not None:
            problem = dimension_problem(outer, 1, DIMENSION_LIMITS["vocab_size"])
            if problem:
                raise NmsimError(f"{self.path}: vocab_size: {_show(outer)}: {problem}")
            return outer
        return self.count("vocab_size")


def _check_supported(path: Path, config: dict, text: dict, model_type: str) -> None:
    """Refuse, in one message, configs whose keys mark an architecture a ModelShape cannot describe."""
    sections = [(text, "text_config.")] if text is not config else []
    found, reasons = [], []
    for section, prefix in [*sections, (config, "")]:
        for key, value in section.items():
            if key in _UNSUPPORTED and (value is True if key in _UNSUPPORTED_FLAGS else value is not None):
                found.append(f"{prefix}{key}: {_show(value)}")
                if _UNSUPPORTED[key] not in reasons:
                    reasons.append(_UNSUPPORTED[key])
    if not found and model_type not in _LLAMA_LIKE | {"gpt2", "opt"}:
        norm_key = next((k for k in ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon") if k in text), None)
        if norm_key is not None and "rms_norm_eps" not in text:
            found.append(f"{sections[0][1] if sections else ''}{norm_key}: {_show(text[norm_key])}")
            reasons.append("LayerNorm in a model of unknown type, which nmsim does not read as llama-like")
    if found:
        kind = f"model_type {model_type!r}" if model_type else "this config"
        raise NmsimError(f"{path}: {kind} is not a decoder-only transformer nmsim can describe: {', '.join(found)} "
                         f"({'; '.join(reasons)}); supported: {SUPPORTED_CONFIGS}")


def _hf_windows(cfg: _HFConfig, layers: int) -> tuple[int, ...]:
    """Per-layer sliding windows from ``layer_types``, Gemma 2/3's pattern, Qwen's max_window_layers or Mistral's
    every-layer ``sliding_window``."""
    types = cfg.text.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            cfg.fail("layer_types", f"must list one attention type per layer ({layers} layers)")
        bad = sorted({str(t) for t in types} - {"sliding_attention", "full_attention"})
        if bad:
            cfg.fail("layer_types", f"{', '.join(map(repr, bad))}: unsupported layer type(s) (nmsim reads "
                                    "'sliding_attention' and 'full_attention')")
        window = cfg.count("sliding_window") if "sliding_attention" in types else 0
        return tuple(window if t == "sliding_attention" else 0 for t in types) if window else ()
    if cfg.model_type in ("gemma2", "gemma3", "gemma3_text"):
        if cfg.get("sliding_window") is None:
            return ()
        key = "_sliding_window_pattern" if "_sliding_window_pattern" in cfg.text else "sliding_window_pattern"
        return pattern_windows(layers, cfg.count("sliding_window"),
                               cfg.count(key, cfg.defaults.get("sliding_window_pattern")))
    if "use_sliding_window" in cfg.text or cfg.model_type.startswith("qwen"):
        enabled = cfg.get("use_sliding_window", False)
        if not isinstance(enabled, bool):
            cfg.fail("use_sliding_window", f"{_show(enabled)}: must be true or false")
        if not enabled or not cfg.get("sliding_window"):
            return ()
        window, start = cfg.count("sliding_window"), cfg.count("max_window_layers", 0, minimum=0)
        windows = tuple(window if i >= start else 0 for i in range(layers))
        return windows if any(windows) else ()
    if not cfg.get("sliding_window"):  # Mistral: null (or absent) = no window
        return ()
    return pattern_windows(layers, cfg.count("sliding_window"))


def _llama_like(cfg: _HFConfig, name: str, source: str) -> ModelShape:
    """Llama, Mistral, Mixtral, Qwen2/3 (MoE), Gemma 1-3, and llama-like configs of other types. Experts come from
    num_local_experts (Mixtral; transformers 5 also writes Qwen3-MoE's so) or num_experts (Qwen-MoE); an expert's
    width is moe_intermediate_size where given, else intermediate_size."""
    experts_key = next((k for k in ("num_local_experts", "num_experts") if cfg.get(k)), None)
    width_key = "intermediate_size"
    if experts_key is not None and (cfg.get("moe_intermediate_size") is not None or cfg.model_type.endswith("_moe")):
        width_key = "moe_intermediate_size"
    required = ["num_attention_heads", "hidden_size", "num_hidden_layers", width_key]
    cfg.require(required + (["num_experts_per_tok"] if experts_key else []))
    hidden, layers, heads = cfg.count("hidden_size"), cfg.count("num_hidden_layers"), cfg.count("num_attention_heads")
    kv_heads = cfg.count("num_key_value_heads", heads)
    if heads % kv_heads:
        cfg.fail("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads {heads}")
    if cfg.get("head_dim") is None and hidden % heads:
        cfg.fail("num_attention_heads", f"{heads} does not divide hidden_size {hidden} (and there is no head_dim)")
    experts = top_k = shared = 0
    if experts_key is not None:
        experts, top_k = cfg.count(experts_key), cfg.count("num_experts_per_tok")
        shared = cfg.count("shared_expert_intermediate_size", 0, minimum=0)
        step, dense = cfg.get("decoder_sparse_step", 1), cfg.get("mlp_only_layers", [])
        if step != 1 or dense:
            raise NmsimError(f"{cfg.path}: {cfg.prefix}decoder_sparse_step {_show(step)}, mlp_only_layers "
                             f"{_show(dense)}: mixed dense and MoE layer stacks are not supported (every layer "
                             "must be MoE: decoder_sparse_step 1, mlp_only_layers [])")
        if top_k > experts:
            cfg.fail("num_experts_per_tok", f"{top_k} is more than the {experts} experts")
    gemma = cfg.model_type.startswith("gemma")
    return ModelShape(
        name=name,
        hidden_size=hidden,
        intermediate_size=cfg.count(width_key),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=cfg.count("head_dim", hidden // heads),
        vocab_size=cfg.vocab(),
        source=source,
        family=family_of(cfg.model_type),
        activation=cfg.activation(("hidden_activation", "hidden_act"), "gelu" if gemma else "silu"),
        norms_per_layer=4 if cfg.model_type in ("gemma2", "gemma3", "gemma3_text") else 2,
        qk_norm=cfg.model_type in ("gemma3", "gemma3_text", "qwen3", "qwen3_moe"),
        tied_embeddings=cfg.flag("tie_word_embeddings", False),
        num_experts=experts,
        experts_per_token=top_k,
        shared_expert_intermediate_size=shared,
        layer_windows=_hf_windows(cfg, layers),
        max_positions=cfg.count("max_position_embeddings", 0, minimum=0),
    )


def _gpt2(cfg: _HFConfig, name: str, source: str) -> ModelShape:
    """GPT-2 (and GPT-3-shaped configs written as gpt2): LayerNorm, learned positions, a plain GELU MLP."""
    cfg.require(["n_head", "n_embd", "n_layer"])
    hidden, heads = cfg.count("n_embd"), cfg.count("n_head")
    if hidden % heads:
        cfg.fail("n_head", f"{heads} does not divide n_embd {hidden}")
    return ModelShape(name=name, hidden_size=hidden, intermediate_size=cfg.count("n_inner", 4 * hidden),
                      num_layers=cfg.count("n_layer"), num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
                      vocab_size=cfg.count("vocab_size"), source=source, family="gpt2", mlp="plain",
                      activation=cfg.activation(("activation_function",), "gelu_new"), norm="layernorm",
                      positions="learned", tied_embeddings=cfg.flag("tie_word_embeddings", True),
                      max_positions=cfg.count("n_positions"))


def _opt(cfg: _HFConfig, name: str, source: str) -> ModelShape:
    """OPT: LayerNorm, learned positions, a plain ReLU MLP; no embedding projection (word_embed_proj_dim)."""
    cfg.require(["num_attention_heads", "hidden_size", "num_hidden_layers", "ffn_dim"])
    hidden, heads = cfg.count("hidden_size"), cfg.count("num_attention_heads")
    if hidden % heads:
        cfg.fail("num_attention_heads", f"{heads} does not divide hidden_size {hidden}")
    projection = cfg.get("word_embed_proj_dim", hidden)
    if projection != hidden:
        cfg.fail("word_embed_proj_dim", f"{_show(projection)} differs from hidden_size {hidden}: OPT's embedding "
                                        "projection (project_in/project_out, as in OPT-350m) is not supported")
    return ModelShape(name=name, hidden_size=hidden, intermediate_size=cfg.count("ffn_dim"),
                      num_layers=cfg.count("num_hidden_layers"), num_heads=heads, num_kv_heads=heads,
                      head_dim=hidden // heads, vocab_size=cfg.count("vocab_size"), source=source, family="opt",
                      mlp="plain", activation=cfg.activation(("activation_function",), "relu"), norm="layernorm",
                      positions="learned", tied_embeddings=cfg.flag("tie_word_embeddings", True),
                      max_positions=cfg.count("max_position_embeddings"))


def from_hf_config(path: Path) -> ModelShape:
    """A Hugging Face config.json: Llama-like (Llama, Mistral, Mixtral, Qwen2/3 and their MoE, Gemma 1-3), GPT-2
    or OPT; anything else is refused with one error naming the keys or values it cannot describe."""
    try:
        if path.stat().st_size > _CONFIG_MAX_BYTES:
            raise NmsimError(f"{path}: {path.stat().st_size:,} bytes: larger than any model config (at most "
                             f"{_CONFIG_MAX_BYTES:,} bytes; a config.json is a few KB)")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, huge numbers
        raise NmsimError(f"{path}: cannot read the model config ({exc}); expected a config.json (UTF-8 JSON "
                         "object)") from None
    if not isinstance(config, dict):
        raise NmsimError(f"{path}: not a model config: the top level is a JSON {_json_kind(config)}, a config.json "
                         "is a JSON object")
    text = config.get("text_config")  # multimodal wrappers (Gemma 3) nest the language model
    text = config if text is None or text == {} else text
    if not isinstance(text, dict):
        raise NmsimError(f"{path}: text_config: must be a JSON object")
    model_type = str(text.get("model_type") or config.get("model_type") or "").lower()
    _check_supported(path, config, text, model_type)
    cfg = _HFConfig(path, config, text, model_type)
    reader = {"gpt2": _gpt2, "opt": _opt}.get(model_type, _llama_like)
    return reader(cfg, path.parent.name, str(path))


_GGUF_SWA_PATTERN = {"gemma2": 2, "gemma3": 6}  # llama.cpp's fixed patterns where the GGUF carries none
_GGUF_PLAIN_MLP = {"gpt2", "gptneox", "phi2", "starcoder", "bloom"}  # architectures with a plain (W1, W2) GELU MLP


def from_gguf(path: Path) -> ModelShape:
    """A GGUF file's metadata; the norms, qk-norm, tied head and learned positions come from its tensor names, the
    MLP kind and activation from its architecture (Gemma and plain-MLP models: GELU). A file that is not GGUF, or
    whose metadata lacks a dimension or holds a wrong one, is one error naming the file and the key."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        fields, tensors = reader.fields, {str(tensor.name) for tensor in reader.tensors}
    except Exception as exc:  # noqa: BLE001 - the reader of an untrusted file fails in many ways (struct, numpy)
        raise NmsimError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc}); expected a GGUF v2/v3 "
                         "model file") from None

    def field(key: str, default=None):
        found = fields.get(key)
        if found is None:
            if default is None:
                raise NmsimError(f"{path}: GGUF metadata has no {key!r}")
            return default
        try:
            return found.contents()
        except Exception as exc:  # noqa: BLE001 - a field whose bytes do not decode
            raise NmsimError(f"{path}: GGUF metadata {key!r} cannot be read ({type(exc).__name__}: {exc})") from None

    def count(key: str, default=None, minimum: int = 1) -> int:
        value = field(key, default)
        if isinstance(value, np.integer):
            value = int(value)
        problem = dimension_problem(value, minimum, _limit(key))
        if problem:
            raise NmsimError(f"{path}: GGUF metadata {key}: {_show_any(value)}: {problem}")
        return value

    arch = field("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise NmsimError(f"{path}: GGUF metadata general.architecture: {_show_any(arch)}: must be a non-empty string "
                         "(llama, gemma3, qwen2, ...)")
    hidden = count(f"{arch}.embedding_length")
    heads = count(f"{arch}.attention.head_count")
    layers = count(f"{arch}.block_count")
    tokens = fields.get("tokenizer.ggml.tokens")
    experts = count(f"{arch}.expert_count", 0, minimum=0)
    gated = arch not in _GGUF_PLAIN_MLP
    window = count(f"{arch}.attention.sliding_window", 0, minimum=0)
    pattern = field(f"{arch}.attention.sliding_window_pattern", _GGUF_SWA_PATTERN.get(arch, 0))
    if isinstance(pattern, list):  # per layer: true = sliding window
        windows = tuple(window if sliding else 0 for sliding in pattern) if window and any(pattern) else ()
    else:
        windows = pattern_windows(layers, window, count(f"{arch}.attention.sliding_window_pattern",
                                                        _GGUF_SWA_PATTERN.get(arch, 0), minimum=0))
    if f"{arch}.vocab_size" not in fields and tokens is None:
        raise NmsimError(f"{path}: GGUF metadata has neither {arch}.vocab_size nor tokenizer.ggml.tokens (the "
                         "vocabulary the LM head needs)")
    vocab = count(f"{arch}.vocab_size", len(tokens.data) if tokens is not None else 0)
    if f"{arch}.attention.key_length" not in fields and hidden % heads:
        raise NmsimError(f"{path}: GGUF metadata {arch}.attention.head_count: {heads} does not divide "
                         f"{arch}.embedding_length {hidden} (and there is no {arch}.attention.key_length)")
    norms = sum(f"blk.0.{name}.weight" in tensors
                for name in ("attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"))
    return ModelShape(
        name=path.stem,
        hidden_size=hidden,
        intermediate_size=(count(f"{arch}.expert_feed_forward_length", 0, minimum=0) if experts else 0)
        or count(f"{arch}.feed_forward_length"),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=count(f"{arch}.attention.head_count_kv", heads),
        head_dim=count(f"{arch}.attention.key_length", hidden // heads),
        vocab_size=vocab,
        source=str(path),
        family=family_of(arch),
        mlp="gated" if gated else "plain",
        activation="gelu" if arch.startswith("gemma") or not gated else "silu",
        norm="layernorm" if "blk.0.attn_norm.bias" in tensors else "rmsnorm",
        positions="learned" if "position_embd.weight" in tensors else "rotary",
        norms_per_layer=norms or 2,
        qk_norm="blk.0.attn_q_norm.weight" in tensors,
        tied_embeddings=bool(tensors) and "output.weight" not in tensors,
        num_experts=experts,
        experts_per_token=count(f"{arch}.expert_used_count") if experts else 0,
        shared_expert_intermediate_size=count(f"{arch}.expert_shared_feed_forward_length", 0, minimum=0)
        if experts else 0,
        layer_windows=windows if len(windows) in (0, layers) else (),
        max_positions=count(f"{arch}.context_length", 0, minimum=0),
    )
