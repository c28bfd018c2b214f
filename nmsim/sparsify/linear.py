"""The pruning engine: wraps a model's own linear layers so their inputs are N:M-pruned per token.

Usage::

    config = SparsityConfig(parse_pattern("8:16"), "magnitude", parse_mitigation("median-shift"))
    with sparsified(model, config):
        logits = model(ids).logits

Inside the ``with`` block each targeted ``nn.Linear`` is replaced by a :class:`PrunedLinear` that holds the
original layer and computes ``y = (v·P(x − η))Wᵀ + η·rowsum(W) + bias`` (see :mod:`mitigations`), then, with
learned parameters, ``y ⊙ (1 + d) + b`` (folded into W and the bias when asked); on exit the original layers are
put back. When several projections read the same input tensor (q/k/v, gate/up) and the
criterion and mitigation do not depend on the layer, the pruned input is computed once and shared, as one
compressed activation would feed all of them in hardware.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F

from nmsim.sparsify import selection_kernel, torch_selection
from nmsim.errors import NmsimError
from nmsim.patterns import Pattern
from nmsim.sparsify.masks import pattern_mask
from nmsim.sparsify.criteria import Criterion, LayerContext, get_criterion, magnitude
from nmsim.sparsify.mitigations import Mitigation, median_shift, variance_scale
from nmsim.sparsify.targets import LinearSite, TargetSpec, selected_sites

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparsityConfig:
    """One pruning method: pattern × criterion × mitigation × targets."""

    pattern: Pattern
    criterion: str = "magnitude"
    mitigation: Mitigation = field(default_factory=Mitigation)
    targets: TargetSpec = field(default_factory=TargetSpec)

    def __post_init__(self) -> None:
        get_criterion(self.criterion)  # fail early on an unknown name

    @property
    def needs_calibration(self) -> bool:
        if self.pattern.kind == "dense":
            return False
        return get_criterion(self.criterion).needs_calibration or self.mitigation.needs_calibration

    @property
    def needs_training(self) -> bool:
        """The learnable scale and shift must be trained (:mod:`nmsim.sparsify.learnable`) before evaluation."""
        return self.pattern.kind != "dense" and self.mitigation.learnable


class PrunedInput(NamedTuple):
    """One pruned linear input. values: v·P(x − η) [T, K]; shift: η [T, 1], a 0-dim tensor or None;
    keep: the kept mask [T, K] (only when asked for); scale: v [T, 1] or None."""

    values: torch.Tensor
    shift: torch.Tensor | None
    keep: torch.Tensor | None = None
    scale: torch.Tensor | None = None


def sparsify_input(
    x: torch.Tensor,
    pattern: Pattern,
    criterion: Criterion,
    mitigation: Mitigation,
    layer: LayerContext,
    *,
    want_mask: bool = False,
) -> PrunedInput:
    """Prune one linear input x: [T, K] (see :class:`PrunedInput`)."""
    if _fused_path_applies(x, pattern, criterion):
        return _sparsify_fused(x, pattern, mitigation, layer, want_mask)
    shift = None
    if mitigation.shift == "median":
        shift = median_shift(x)
    elif mitigation.shift == "static":
        shift = layer.calibrated("median_mean").to(x.dtype)
    centered = x - shift if shift is not None else x
    keep = pattern_mask(criterion.score(centered, layer), pattern)
    pruned = torch.where(keep, centered, 0.0)
    scale = variance_scale(centered, pruned) if mitigation.variance else None
    return PrunedInput(pruned * scale if scale is not None else pruned, shift, keep, scale)


def _fused_path_applies(x: torch.Tensor, pattern: Pattern, criterion: Criterion) -> bool:
    return (
        criterion.score is magnitude
        and pattern.kind == "nm"
        and pattern.n < pattern.m
        and x.shape[-1] % pattern.m == 0
        and x.is_floating_point()
    )


def _sparsify_fused(
    x: torch.Tensor, pattern: Pattern, mitigation: Mitigation, layer: LayerContext, want_mask: bool
) -> PrunedInput:
    """The magnitude N:M case in one pass: compiled for float32 on the CPU, else the torch path (CUDA, bf16, ...);
    same result as the general path."""
    if not torch.isfinite(x.sum()) and torch.isnan(x).any():  # the cheap sum screens out the common case
        raise ValueError(f"layer {layer.name}: NaN in the linear input cannot be ranked")
    static = layer.calibrated("median_mean").to(x.dtype) if mitigation.shift == "static" else x.new_zeros(())
    select = selection_kernel if selection_kernel.supports(x, pattern.m) else torch_selection
    pruned, shift, keep = select.prune_rows_by_magnitude(
        x, pattern.n, pattern.m, mitigation.shift, float(static), with_mask=want_mask
    )
    scale = variance_scale(x - shift[:, None], pruned) if mitigation.variance else None
    if scale is not None:
        pruned = pruned * scale
    if mitigation.shift == "median":
        return PrunedInput(pruned, shift[:, None], keep, scale)
    return PrunedInput(pruned, static if mitigation.shift == "static" else None, keep, scale)


# Called once per wrapped-layer call with (site, layer context, input [..., K], PrunedInput of its [T, K] rows,
# mask included); trace capture uses it. session.phase tells prefill from decode.
InputObserver = Callable[[LinearSite, LayerContext, torch.Tensor, PrunedInput], None]


# Learned per-output scale d and shift b of each wrapped layer, by module name: (d [O], b [O]).
LearnedParams = dict[str, tuple[torch.Tensor, torch.Tensor]]


class PruningSession:
    """State shared by the wrapped layers of one model: the config, the current phase, the shared input.

    ``differentiable``: gradients flow through the kept values to earlier layers (training the learnable
    mitigation); the mask and the mitigation scalars η, v are then constants of each step.
    """

    def __init__(self, config: SparsityConfig, observer: InputObserver | None = None, differentiable: bool = False):
        self.config = config
        self.observer = observer
        self.differentiable = differentiable
        self.criterion = get_criterion(config.criterion)
        self.phase = "prefill"
        self.shareable = not self.criterion.uses_layer and config.mitigation.shift != "static"
        self._last_input: torch.Tensor | None = None
        self._last_result: PrunedInput | None = None

    @property
    def active(self) -> bool:
        return self.config.targets.phase == "all" or self.phase == "prefill"

    def sparse_input(self, x: torch.Tensor, layer: LayerContext) -> PrunedInput:
        """x: [..., K] -> the pruned rows [T, K]; reused when x is the input the previous layer just read."""
        if self.shareable and self._last_input is x:
            return self._last_result
        rows = x.reshape(-1, x.shape[-1])
        result = sparsify_input(rows, self.config.pattern, self.criterion, self.config.mitigation, layer,
                                want_mask=self.observer is not None or self.differentiable)
        if self.shareable:
            self._last_input, self._last_result = x, result
        return result

    def release(self) -> None:
        self._last_input = self._last_result = None


class PrunedLinear(torch.nn.Module):
    """A model's own ``nn.Linear`` with its input pruned per token (weights untouched).

    ``learned`` (d, b): y ⊙ (1 + d) + b after the layer; with ``fold`` it is folded instead: W' = diag(1 + d)·W,
    bias' = (1 + d)·bias + b (so rowsum(W') scales too), while criteria keep reading the original W. d and b move to
    the weight's device; they may be float32 beside a bf16/fp16 layer (folded in float32, then rounded to the
    layer's dtype; unfolded, cast to the output's dtype).
    """

    def __init__(self, site: LinearSite, context: LayerContext, session: PruningSession,
                 learned: tuple[torch.Tensor, torch.Tensor] | None = None, fold: bool = False):
        super().__init__()
        self.linear = site.module
        self.site = site
        self.context = context
        self.session = session
        device, dtype = self.linear.weight.device, self.linear.weight.dtype
        if learned is not None:
            learned = (learned[0].to(device), learned[1].to(device))
        self.learned = None if fold else learned
        self.folded = None
        if fold and learned is not None:
            factor, shift = (1 + learned[0].detach().float())[:, None], learned[1].detach().float()
            weight = (factor * self.linear.weight.detach().float()).to(dtype)
            bias = shift if self.linear.bias is None else factor[:, 0] * self.linear.bias.detach().float() + shift
            self.folded = (weight, bias.to(dtype), weight.sum(dim=1))

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def _values(self, x: torch.Tensor) -> PrunedInput:
        if not self.session.differentiable:
            return self.session.sparse_input(x, self.context)
        result = self.session.sparse_input(x.detach(), self.context)
        rows = x.reshape(-1, x.shape[-1])
        centered = rows - result.shift if result.shift is not None else rows
        values = torch.where(result.keep, centered, 0.0)
        return result._replace(values=values * result.scale if result.scale is not None else values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.session.active:
            return self.linear(x)
        result = self._values(x)
        if self.session.observer is not None:
            self.session.observer(self.site, self.context, x, result)
        weight, bias, row_sum = self.folded or (self.linear.weight, self.linear.bias, None)
        y = F.linear(result.values.reshape(x.shape), weight, bias)
        if result.shift is not None:
            shift = result.shift if result.shift.dim() == 0 else result.shift.reshape(*x.shape[:-1], 1)
            row_sum = row_sum if row_sum is not None else self.context.row_sum  # rank-1 correction η·rowsum(W)
            y = y + shift * row_sum if self.session.differentiable else y.addcmul_(shift, row_sum)
        if self.learned is not None:
            scale, offset = self.learned
            y = y * (1 + scale.to(y.dtype)) + offset.to(y.dtype)
        return y


def cached_tokens(forward_kwargs: dict) -> int:
    """Tokens already in the KV cache of a model forward call (0 for a prefill)."""
    # transformers 5 passes the KV cache as `cache`; earlier releases as `past_key_values`.
    cache = forward_kwargs.get("cache", forward_kwargs.get("past_key_values"))
    return cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0


def _track_phase(session: PruningSession):
    """Forward pre-hook on the whole model: a call with a non-empty KV cache is a decode step."""

    def hook(module, args, kwargs):
        session.phase = "decode" if cached_tokens(kwargs) > 0 else "prefill"

    return hook


@contextmanager
def sparsified(
    model: torch.nn.Module,
    config: SparsityConfig,
    input_stats: dict[str, dict[str, torch.Tensor]] | None = None,
    observer: InputObserver | None = None,
    *,
    learned: LearnedParams | None = None,
    fold: bool = False,
    differentiable: bool = False,
) -> Iterator[PruningSession]:
    """Prune the targeted linear inputs of ``model`` inside the block; restore the original layers after.

    input_stats: per-module calibration statistics (from :func:`nmsim.sparsify.input_stats.calibrate`),
    required when the criterion or mitigation needs calibration. observer: see :data:`InputObserver`; with
    one, even a dense config wraps the targeted layers (keeping every value) so their inputs can be observed.
    learned: trained scale and shift per module (required by a learnable mitigation; layers without an entry
    run without one), folded into the weights when ``fold``. differentiable: see :class:`PruningSession`.
    """
    if config.needs_training and learned is None:
        raise NmsimError(f"{config.mitigation} needs learned parameters; train them with nmsim.sparsify.learnable")
    session = PruningSession(config, observer, differentiable)
    if config.pattern.kind == "dense" and observer is None:
        yield session
        return
    if config.needs_calibration and input_stats is None:
        raise NmsimError(f"{config.criterion} / {config.mitigation} needs calibration statistics; none given")
    sites = selected_sites(model, config.targets)
    swapped = []
    for site in sites:
        parent_name, _, attr = site.name.rpartition(".")
        parent = model.get_submodule(parent_name)
        stats = input_stats.get(site.name) if input_stats is not None else None
        wrapper = PrunedLinear(site, LayerContext(site.name, site.module.weight, stats), session,
                               learned.get(site.name) if learned else None, fold)
        setattr(parent, attr, wrapper)
        swapped.append((parent, attr, site.module))
    handle = model.register_forward_pre_hook(_track_phase(session), with_kwargs=True)
    log.debug("pruning %d linear inputs with %s", len(sites), config)
    try:
        yield session
    finally:
        handle.remove()
        for parent, attr, original in swapped:
            setattr(parent, attr, original)
        session.release()
