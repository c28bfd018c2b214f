"""Selection criteria: the score that decides which N of every M activations survive.

A criterion is one function ``score(x, layer) -> scores``: x is the (possibly shifted) linear input
[T, K] (T tokens), ``layer`` the :class:`LayerContext` of the linear layer, and the result [T, K] is ranked
within each group (larger is kept). Add your own with::

    @register_criterion("my-score")
    def my_score(x, layer):
        return x.abs() * layer.weight.abs().mean(0)

Definitions follow the seed study (``shared/reference/paper_methods.md`` §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch

from nmsim.errors import NmsimError


class LayerContext:
    """What a criterion or mitigation may know about one linear layer; weight-derived values are cached.

    weight: [O, K]. ``input_stats`` holds calibration statistics of this layer's input (see
    :mod:`nmsim.sparsify.input_stats`) when a criterion or mitigation asked for them; they move to the weight's
    device here, once.
    """

    def __init__(self, name: str, weight: torch.Tensor, input_stats: dict[str, torch.Tensor] | None = None):
        self.name = name
        self.weight = weight
        self.input_stats = None if input_stats is None else {k: v.to(weight.device) for k, v in input_stats.items()}

    @cached_property
    def column_l2(self) -> torch.Tensor:
        """‖W[:, k]‖₂ per input channel k: [K]."""
        return self.weight.detach().float().norm(dim=0)

    @cached_property
    def row_sum(self) -> torch.Tensor:
        """W·1, the sum of each output row: [O] (the median-shift correction term)."""
        return self.weight.detach().sum(dim=1)

    @cached_property
    def robust_column_factor(self) -> torch.Tensor:
        """Amber Pruner's f_k = ‖Ŵ[:, k]‖₂ / min_j ‖Ŵ[:, j]‖₂: [K].

        Ŵ standardises W with the mean and std of the weights inside the [0.5 %, 99.5 %] quantiles; the
        ⌊0.005·count⌋ smallest and as many largest weights are dropped (contribute 0). Quantiles are exact
        (kthvalue), not sampled. Columns of zero norm get factor 0; a weight with no spread gives all ones.
        """
        w = self.weight.detach().float()
        flat = w.reshape(-1)
        count = flat.numel()
        dropped = int(0.005 * count)  # the same number from each end
        low = flat.kthvalue(dropped + 1).values
        high = flat.kthvalue(count - dropped).values
        inside = (w >= low) & (w <= high)
        kept = w[inside]
        spread = kept.std(correction=0) if kept.numel() > 1 else w.new_zeros(())
        if spread == 0:
            return w.new_ones(w.shape[1])
        norms = torch.where(inside, (w - kept.mean()) / spread, 0.0).norm(dim=0)
        positive = norms[norms > 0]
        return norms / positive.min() if positive.numel() else w.new_ones(w.shape[1])

    def calibrated(self, key: str) -> torch.Tensor:
        if self.input_stats is None or key not in self.input_stats:
            raise NmsimError(f"layer {self.name}: needs calibration statistic {key!r}, but none was loaded")
        return self.input_stats[key]


ScoreFn = Callable[[torch.Tensor, LayerContext], torch.Tensor]


@dataclass(frozen=True)
class Criterion:
    """A registered selection criterion.

    uses_layer: scores depend on the layer (weights or per-layer calibration), so inputs shared by several
    projections cannot share one mask. needs_calibration: reads ``layer.input_stats``.
    looks_across_tokens: a token's scores depend on other tokens of the batch (not causal).
    """

    name: str
    score: ScoreFn
    uses_layer: bool
    needs_calibration: bool
    looks_across_tokens: bool
    description: str


CRITERIA: dict[str, Criterion] = {}


def register_criterion(
    name: str, *, uses_layer: bool = True, needs_calibration: bool = False, looks_across_tokens: bool = False
) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator that registers ``fn(x [T, K], layer) -> scores [T, K]`` under ``name``."""

    def decorate(fn: ScoreFn) -> ScoreFn:
        if name in CRITERIA:
            raise ValueError(f"criterion {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        CRITERIA[name] = Criterion(name, fn, uses_layer, needs_calibration, looks_across_tokens, doc[0] if doc else "")
        return fn

    return decorate


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise NmsimError(f"unknown criterion {name!r}; choose from {', '.join(CRITERIA)}") from None


@register_criterion("magnitude", uses_layer=False)
def magnitude(x: torch.Tensor, layer: LayerContext) -> torch.Tensor:
    """|x|: keep the largest activations."""
    return x.abs()


@register_criterion("amber")
def amber(x: torch.Tensor, layer: LayerContext) -> torch.Tensor:
    """|x|·f_k with Amber Pruner's robust, standardised weight-column norm f_k."""
    return x.abs() * layer.robust_column_factor


@register_criterion("wina")
def wina(x: torch.Tensor, layer: LayerContext) -> torch.Tensor:
    """|x|·‖W[:, k]‖₂ (WINA): weight each activation by the norm of the weights it multiplies."""
    return x.abs() * layer.column_l2


@register_criterion("clact", uses_layer=False, looks_across_tokens=True)
def clact(x: torch.Tensor, layer: LayerContext) -> torch.Tensor:
    """|x_tk|·‖X[:, k]‖₂ / ‖X[t, :]‖₂, column norms over all tokens of the current batch (not causal)."""
    return x.abs() * x.norm(dim=0, keepdim=True) / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


@register_criterion("clact-causal", needs_calibration=True)
def clact_causal(x: torch.Tensor, layer: LayerContext) -> torch.Tensor:
    """CLACT with column RMS calibrated offline: a token's mask depends on that token alone."""
    column_rms = layer.calibrated("column_rms")
    return x.abs() * column_rms / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
