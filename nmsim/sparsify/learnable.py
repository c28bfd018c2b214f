"""The learnable mitigation: a per-output-channel scale and shift, y' = (P(x)Wᵀ) ⊙ (1 + d) + b, trained block by block.

Recipe (``shared/reference/paper_methods.md`` §3, the seed code's ``by_layers`` mode): d = b = 0 at the start;
decoder block i is trained so that, with its linear inputs pruned, its output matches the **dense** block's output
on the same inputs, and those inputs are the outputs of the already pruned and trained blocks < i (the pruned
model's own inputs). Loss: MSE. AdamW (lr 1e-4, betas 0.9/0.95, no weight decay), a linear schedule with 3 %
warm-up, gradient clipping at 1.0, one window (batch 1) per step. Only d and b train; the weights stay frozen.
Calibration windows come from the calibration split (WikiText-2 train if present, else validation), never from
the test split that perplexity is measured on.

The paper's recipe is 256 windows × 512 tokens, one epoch (256 steps per block): ``LearnRecipe(windows=256)``. The
parameters persist after every block (``<file>.partial``), so an interrupted calibration resumes at the next
block, and the finished file (safetensors, with the recipe and a format version in its metadata) is reloaded
instead of recalibrating.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from nmsim.errors import NmsimError
from nmsim.io import atomic_write_bytes
from nmsim.llm.data import calibration_windows, load_split
from nmsim.llm.device import dtype_name, model_device
from nmsim.llm.models import LoadedModel, cache_root
from nmsim.sparsify.linear import LearnedParams, SparsityConfig, sparsified
from nmsim.sparsify.targets import find_linear_sites

log = logging.getLogger(__name__)

FORMAT = "nmsim-learned-scale-shift"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LearnRecipe:
    """How the scale and shift are trained."""

    windows: int = 64  # calibration windows
    seqlen: int = 512
    steps: int | None = None  # optimizer steps per block; None: one epoch (one step per window)
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_fraction: float = 0.03
    clip_norm: float = 1.0
    heldout_windows: int = 4  # extra windows, not trained on, to report each block's MSE before and after
    seed: int = 42

    @property
    def steps_per_block(self) -> int:
        return self.steps if self.steps is not None else self.windows



@dataclass(frozen=True)
class BlockReport:
    block: int
    heldout_mse_pruned: float  # pruned block (d = b = 0) vs dense block, on held-out windows
    heldout_mse_learned: float  # after training


class _StopForward(Exception):
    pass


def decoder_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of each decoder block that holds prunable projections, in layer order."""
    names = sorted({site.name.split(".self_attn.")[0].split(".mlp.")[0]: site.layer
                    for site in find_linear_sites(model)}.items(), key=lambda item: item[1])
    if not names:
        raise NmsimError("no decoder blocks with q/k/v/o/gate/up/down projections found in this model")
    return [(name, model.get_submodule(name)) for name, _ in names]


def _block_inputs(model: torch.nn.Module, first_block: torch.nn.Module, windows: torch.Tensor):
    """The hidden states entering the first block for each window [W, S, H], and the block's other arguments
    (on the first block's device; ``windows`` [W, S] may be anywhere)."""
    captured: dict = {}

    def hook(module, args, kwargs):
        captured.setdefault("states", []).append(args[0].detach() if args else kwargs["hidden_states"].detach())
        captured.setdefault("kwargs", {k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    device = model_device(model)
    try:
        with torch.no_grad():
            for window in windows:
                try:
                    model(window[None].to(device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    return torch.cat(captured["states"]), captured["kwargs"]


def _run_block(block: torch.nn.Module, states: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = block(states, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _schedule(steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, math.ceil(warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return factor


def _block_params(model: torch.nn.Module, config: SparsityConfig, block_name: str) -> LearnedParams:
    """d = b = 0 for each targeted layer of the block: float32 [O] on the layer's device (whatever its dtype)."""
    params = {}
    for site in find_linear_sites(model):
        if site.name.startswith(block_name + ".") and config.targets.selects(site):
            out_features, device = site.module.weight.shape[0], site.module.weight.device
            params[site.name] = (torch.nn.Parameter(torch.zeros(out_features, device=device)),
                                 torch.nn.Parameter(torch.zeros(out_features, device=device)))
    return params


def _mse(block, states, targets, kwargs) -> float:
    """Mean squared error of the block's output against ``targets`` over the windows of ``states``."""
    with torch.no_grad():
        return float(torch.mean((_outputs(block, states, kwargs) - targets).float() ** 2)) if len(states) else math.nan


def _save(path: Path, learned: LearnedParams, meta: dict) -> None:
    tensors = {f"{name}::{part}": tensor.detach().cpu().contiguous()
               for name, pair in learned.items() for part, tensor in zip(("scale", "shift"), pair)}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(meta, sort_keys=True)}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_learned(path: str | Path) -> tuple[LearnedParams, dict]:
    """Parameters and metadata (recipe, method, per-block report) of a saved calibration."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, ValueError) as exc:
        raise NmsimError(f"{path}: not a readable learned-parameter file ({exc})") from None
    if metadata.get("format") != FORMAT or metadata.get("format_version") != str(FORMAT_VERSION):
        raise NmsimError(f"{path}: not an {FORMAT} file of version {FORMAT_VERSION} (metadata {metadata})")
    learned: dict[str, list] = {}
    for key, tensor in load_file(str(path)).items():
        name, _, part = key.partition("::")
        learned.setdefault(name, [None, None])[0 if part == "scale" else 1] = tensor
    return {name: (pair[0], pair[1]) for name, pair in learned.items()}, json.loads(metadata["meta"])


def train_scale_shift(
    model: torch.nn.Module,
    config: SparsityConfig,
    recipe: LearnRecipe,
    windows: torch.Tensor,
    path: Path,
    *,
    input_stats: dict | None = None,
    meta: dict | None = None,
    max_blocks: int | None = None,
) -> tuple[LearnedParams, list[BlockReport]]:
    """Train d and b of every targeted layer block by block on ``windows`` [recipe.windows + held-out, S].

    Persists after each block (``<path>.partial``) and resumes from it; writes ``path`` when done.
    ``max_blocks`` stops after the first blocks (quick checks); the file then covers only those.
    """
    meta = {**(meta or {}), "method": _describe(config), "recipe": asdict(recipe), "blocks": []}
    partial = path.with_name(path.name + ".partial")
    learned: LearnedParams = {}
    if partial.exists():
        learned, saved = load_learned(partial)
        if saved.get("method") != meta["method"] or saved.get("recipe") != meta["recipe"]:
            raise NmsimError(f"{partial}: an unfinished calibration of another method or recipe; delete it to "
                             "start over")
        meta["blocks"] = saved["blocks"]
        log.info("resuming %s after %d finished blocks", meta["method"], len(meta["blocks"]))
    blocks = decoder_blocks(model)[:max_blocks]
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        states, kwargs = _block_inputs(model, blocks[0][1], windows)
        train, heldout = states[: recipe.windows], states[recipe.windows:]
        for index, (name, block) in enumerate(tqdm(blocks, desc=f"learnable {meta['method']}", unit="block")):
            with torch.no_grad():
                dense_train, dense_heldout = _outputs(block, train, kwargs), _outputs(block, heldout, kwargs)
            if index >= len(meta["blocks"]):
                params = _block_params(model, config, name)
                with sparsified(model, config, input_stats, learned={}):
                    before = _mse(block, heldout, dense_heldout, kwargs)
                generator = torch.Generator().manual_seed(recipe.seed + index)  # resumable: per block
                _train_block(model, block, config, input_stats, params, train, dense_train, kwargs, recipe,
                             generator)
                learned.update({k: (d.detach(), b.detach()) for k, (d, b) in params.items()})
                with sparsified(model, config, input_stats, learned=learned):
                    after = _mse(block, heldout, dense_heldout, kwargs)
                meta["blocks"].append(asdict(BlockReport(index, before, after)))
                _save(partial, learned, meta)
                log.debug("block %d: held-out MSE %.4g -> %.4g", index, before, after)
            with torch.no_grad(), sparsified(model, config, input_stats, learned=learned):
                train, heldout = _outputs(block, train, kwargs), _outputs(block, heldout, kwargs)
    finally:
        for parameter, flag in zip(model.parameters(), frozen):
            parameter.requires_grad_(flag)
    _save(path, learned, meta)
    partial.unlink(missing_ok=True)
    return learned, [BlockReport(**b) for b in meta["blocks"]]


def _outputs(block: torch.nn.Module, states: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """The block applied to each window of ``states`` [W, S, H] (one at a time, as in training)."""
    if not len(states):
        return states
    return torch.cat([_run_block(block, s[None], kwargs) for s in states])


def _train_block(model, block, config, input_stats, params: LearnedParams, states, targets, kwargs,
                 recipe: LearnRecipe, generator: torch.Generator) -> None:
    steps = recipe.steps_per_block
    trainable = [p for pair in params.values() for p in pair]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps, recipe.warmup_fraction))
    order = torch.cat([torch.randperm(len(states), generator=generator)
                       for _ in range(math.ceil(steps / len(states)))])[:steps]
    with sparsified(model, config, input_stats, learned=params, differentiable=True):
        for window in order.tolist():
            loss = torch.mean((_run_block(block, states[window][None], kwargs) - targets[window][None]).float() ** 2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, recipe.clip_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)


def _describe(config: SparsityConfig) -> str:
    return f"{config.pattern} {config.criterion} {config.mitigation} {config.targets}"


def learned_path(lm: LoadedModel, config: SparsityConfig, recipe: LearnRecipe, split_sha: str) -> Path:
    """Where the calibration of ``config`` on ``lm`` with ``recipe`` is cached (per dtype; a float32 calibration
    keeps its key from before dtypes were chosen)."""
    precision = dtype_name(lm.model.dtype)
    key = json.dumps({"model": lm.source, "method": _describe(config), "recipe": asdict(recipe), "data": split_sha,
                      **({} if precision == "float32" else {"dtype": precision})}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = _describe(config).replace(" ", "_").replace(":", "of").replace("/", "-").replace(";", "-")
    return cache_root() / "learned" / f"{lm.name}-{safe}-{digest}.safetensors"


def load_or_train(lm: LoadedModel, config: SparsityConfig, recipe: LearnRecipe, *, data_dir: str | None = None,
                  input_stats: dict | None = None) -> LearnedParams:
    """The cached calibration of ``config``, or a new one (resuming an interrupted one)."""
    split = load_split("calibration", data_dir)
    path = learned_path(lm, config, recipe, split.sha256)
    if path.exists():
        learned, _ = load_learned(path)
        return learned
    path.parent.mkdir(parents=True, exist_ok=True)
    windows = calibration_windows(lm.token_ids(split), recipe.windows + recipe.heldout_windows, recipe.seqlen,
                                  seed=recipe.seed, bos_id=lm.window_bos)
    meta = {"model": lm.name, "model_source": lm.source, "data": f"{split.name} ({split.sha256[:12]})"}
    learned, reports = train_scale_shift(lm.model, config, recipe, windows, path, input_stats=input_stats, meta=meta)
    improved = sum(r.heldout_mse_learned < r.heldout_mse_pruned for r in reports)
    log.info("learnable %s: held-out block MSE lower in %d of %d blocks", _describe(config), improved, len(reports))
    return learned
