"""Where and in what precision a model runs: ``--device`` and ``--dtype``.

Devices: ``cpu`` (the default), ``cuda`` (the current CUDA device), ``cuda:N``, and ``auto``: CUDA when present,
else the CPU (the choice is logged); with several GPUs visible, ``auto`` also spreads the model over all of them
(``device_map="auto"``, accelerate), for models too large for one. Asking for CUDA without it is an error, never a
quiet CPU run; so is a ``device_map`` that would put layers on the CPU or disk.

Dtypes: float32 (the default; these AVX2 CPUs run bf16 about 6x slower), bfloat16, float16.

Torch is imported only when a function needs it, so the command line stays torch-free until a model loads.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nmsim.errors import NmsimError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DTYPE_NAMES = ("float32", "bfloat16", "float16")
DEVICE_SPELLINGS = "cpu, cuda, cuda:N, auto"


def parse_dtype(name: str) -> torch.dtype:
    """'float32' | 'bfloat16' | 'float16' -> the torch dtype."""
    import torch

    if name not in DTYPE_NAMES:
        raise NmsimError(f"unknown dtype {name!r}; choose from {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16' (the spelling of :data:`DTYPE_NAMES` and of table rows)."""
    return str(dtype).removeprefix("torch.")


def _available() -> str:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
        return f"CUDA is not available ({why}; torch {torch.__version__}); use --device cpu"
    return f"{count} CUDA device(s) exist: {', '.join(f'cuda:{i}' for i in range(count))}"


def resolve_device(spec: str) -> torch.device:
    """The device ``spec`` names (see the module docstring); for ``auto``, where the input embeddings go."""
    import torch

    text = str(spec).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        chosen = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        log.info("--device auto: running on %s%s", chosen,
                 " (spread over every visible GPU)" if spreads_over_gpus(text) else "")
        return chosen
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise NmsimError(f"unknown device {spec!r}; choose from {DEVICE_SPELLINGS}")
    if not torch.cuda.is_available():
        raise NmsimError(f"device {spec!r} asked for, but {_available()}")
    if index and int(index) >= torch.cuda.device_count():
        raise NmsimError(f"device {spec!r} asked for, but only {_available()}")
    return torch.device("cuda", int(index)) if index else torch.device("cuda", torch.cuda.current_device())


def spreads_over_gpus(spec: str) -> bool:
    """Whether ``spec`` loads the model with ``device_map="auto"``: ``auto`` with more than one GPU visible."""
    import torch

    return str(spec).strip().lower() == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1


def check_dispatch(model: torch.nn.Module) -> None:
    """A model spread by ``device_map`` must hold every layer on a GPU, none offloaded to the CPU or disk."""
    device_map = getattr(model, "hf_device_map", None) or {}
    offloaded = sorted(name for name, where in device_map.items() if str(where) in ("cpu", "disk"))
    if offloaded:
        raise NmsimError(f"the model does not fit on the visible GPUs: device_map='auto' put {len(offloaded)} "
                         f"module(s) on the CPU or disk (first: {offloaded[0] or 'the whole model'}); use more GPUs, "
                         "--dtype bfloat16, or --device cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's inputs go: the device of its input embeddings (also for a ``device_map``-spread model)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None:
        return embeddings.weight.device
    first = next(model.parameters(), None)
    return first.device if first is not None else _cpu()  # a module without weights runs where its inputs are


def _cpu():
    import torch

    return torch.device("cpu")


def describe_placement(model: torch.nn.Module) -> str:
    """'cpu', 'cuda:0', or 'cuda:0, cuda:1 (device_map auto)' for a spread model."""
    device_map = getattr(model, "hf_device_map", None) or {}
    devices = sorted({str(where) if str(where) in ("cpu", "disk") else f"cuda:{where}" if isinstance(where, int)
                      else str(where) for where in device_map.values()})
    if len(devices) > 1:
        return f"{', '.join(devices)} (device_map auto)"
    return str(model_device(model))
