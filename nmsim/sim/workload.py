"""Workloads: the linear GEMMs of every decoder layer, from a model's shape alone (no weights needed).

A shape comes from a preset (``model_shapes.yaml``: smollm2-135m, llama-2-7b, llama-3.1-8b, qwen2.5-7b,
gemma-3-4b), a Hugging Face ``config.json`` (or the directory holding it) or a GGUF file's metadata.

GEMM convention: OUT[M × N] = IN[M × K] · W[K × N], with M = tokens, K = in_features (the reduction dimension that
N:M activation pruning groups along) and N = out_features. Prefill with batch B and sequence S has M = B·S;
a decode step with batch B has M = B, whatever the context length (which only changes attention, not these
GEMMs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nmsim.errors import NmsimError
from nmsim.hw.yaml_io import check_keys, load_yaml
from nmsim.sparsify.targets import PROJECTIONS

SHAPES_FILE = Path(__file__).with_name("model_shapes.yaml")
_SHAPE_KEYS = {"hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
               "vocab_size", "source"}

Phase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class ModelShape:
    """The dimensions that fix every linear GEMM of a decoder-only transformer."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    source: str

    def projection_shape(self, projection: str) -> tuple[int, int]:
        """(K, N) = (in_features, out_features) of a projection."""
        q_width, kv_width = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "q": (self.hidden_size, q_width),
            "k": (self.hidden_size, kv_width),
            "v": (self.hidden_size, kv_width),
            "o": (q_width, self.hidden_size),
            "gate": (self.hidden_size, self.intermediate_size),
            "up": (self.hidden_size, self.intermediate_size),
            "down": (self.intermediate_size, self.hidden_size),
        }[projection]


@dataclass(frozen=True)
class Gemm:
    """One linear layer's GEMM: OUT[m × n] = IN[m × k] · W[k × n]."""

    layer: int
    projection: str
    phase: Phase
    m: int  # tokens
    k: int  # reduction dimension (in_features)
    n: int  # out_features

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n


def preset_shapes() -> dict[str, ModelShape]:
    """Every preset of ``model_shapes.yaml``, validated."""
    data = load_yaml(SHAPES_FILE)
    shapes = {}
    for name, entry in data.items():
        check_keys(entry, SHAPES_FILE, name, _SHAPE_KEYS, _SHAPE_KEYS)
        shapes[name] = ModelShape(name=name, **entry)
    return shapes


def _from_hf_config(path: Path) -> ModelShape:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NmsimError(f"{path}: cannot read the model config ({exc})") from None
    text = config.get("text_config", config)  # multimodal wrappers (Gemma 3) nest the language model
    try:
        heads = text["num_attention_heads"]
        return ModelShape(
            name=path.parent.name,
            hidden_size=text["hidden_size"],
            intermediate_size=text["intermediate_size"],
            num_layers=text["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=text.get("num_key_value_heads") or heads,
            head_dim=text.get("head_dim") or text["hidden_size"] // heads,
            vocab_size=text.get("vocab_size", config.get("vocab_size", 0)),
            source=str(path),
        )
    except KeyError as exc:
        raise NmsimError(f"{path}: not a decoder-only transformer config (missing {exc.args[0]!r})") from None


def _from_gguf(path: Path) -> ModelShape:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise NmsimError(f"{path}: not a readable GGUF file ({exc})") from None

    def field(key: str, default=None):
        found = reader.fields.get(key)
        if found is None:
            if default is None:
                raise NmsimError(f"{path}: GGUF metadata has no {key!r}")
            return default
        return found.contents()

    arch = field("general.architecture")
    hidden = int(field(f"{arch}.embedding_length"))
    heads = int(field(f"{arch}.attention.head_count"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return ModelShape(
        name=path.stem,
        hidden_size=hidden,
        intermediate_size=int(field(f"{arch}.feed_forward_length")),
        num_layers=int(field(f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(field(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(field(f"{arch}.attention.key_length", hidden // heads)),
        vocab_size=int(field(f"{arch}.vocab_size", len(tokens.data) if tokens is not None else 0)),
        source=str(path),
    )


def model_shape(spec: str) -> ModelShape:
    """A preset name, a config.json (or a directory holding one), or a .gguf file."""
    presets = preset_shapes()
    if spec.lower() in presets:
        return presets[spec.lower()]
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".gguf" and path.is_file():
        return _from_gguf(path)
    if path.name.endswith(".json") and path.is_file():
        return _from_hf_config(path)
    raise NmsimError(
        f"model {spec!r}: not a shape preset ({', '.join(presets)}), nor an existing config.json, model directory "
        "or .gguf file"
    )


def linear_gemms(shape: ModelShape, phase: Phase, batch: int, seq: int = 1) -> list[Gemm]:
    """Every q/k/v/o/gate/up/down GEMM of every layer: M = batch·seq for prefill, batch for a decode step."""
    if batch < 1 or seq < 1:
        raise NmsimError(f"batch {batch} and sequence {seq} must be at least 1")
    if phase not in ("prefill", "decode"):
        raise NmsimError(f"phase {phase!r}: choose prefill or decode")
    tokens = batch * seq if phase == "prefill" else batch
    return [
        Gemm(layer, projection, phase, tokens, *shape.projection_shape(projection))
        for layer in range(shape.num_layers)
        for projection in PROJECTIONS
    ]
