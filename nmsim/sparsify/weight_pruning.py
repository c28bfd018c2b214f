"""Weight-pruning baselines at matched sparsity: the same targets and patterns, applied to W instead of x.

W is [O, K]; an N:M pattern keeps N of every M consecutive weights of each output row along K, the reduction
dimension, as NVIDIA's 2:4 weight sparsity and the seed code do.

- ``magnitude``: score |W_ok|. Unstructured: the fraction D of the whole matrix with the largest |W| (per layer,
  as the seed code's kthvalue threshold).
- ``wanda`` (Sun et al., ICLR 2024): score |W_ok|·‖X_k‖₂, ‖X_k‖₂ the input column norm on the calibration
  windows (the ``column_rms`` statistic of :mod:`nmsim.sparsify.input_stats`, the same ranking). Unstructured:
  per output row, as Wanda compares weights.

:func:`weight_pruned` masks the weights of the targeted layers in place for the duration of a ``with`` block and
restores them afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern
from nmsim.sparsify.masks import pattern_mask, unstructured_mask
from nmsim.sparsify.targets import TargetSpec, selected_sites

log = logging.getLogger(__name__)

WEIGHT_METHODS = ("magnitude", "wanda")


@dataclass(frozen=True)
class WeightPruningConfig:
    """One weight-pruning baseline: pattern × method × targets."""

    pattern: Pattern
    method: str = "magnitude"
    targets: TargetSpec = field(default_factory=TargetSpec)

    def __post_init__(self) -> None:
        if self.method not in WEIGHT_METHODS:
            raise NmsimError(f"unknown weight-pruning method {self.method!r}; choose from {', '.join(WEIGHT_METHODS)}")
        if self.pattern.kind == "dense":
            raise NmsimError("a weight-pruning baseline needs an N:M or unstructured pattern, not dense")

    @property
    def needs_calibration(self) -> bool:
        return self.method == "wanda"


def weight_mask(weight: torch.Tensor, pattern: Pattern, method: str, column_rms: torch.Tensor | None = None):
    """The keep-mask of ``weight`` [O, K] (bool [O, K], on the weight's device; scores in float32)."""
    score = weight.detach().abs().float()
    if method == "wanda":
        if column_rms is None:
            raise NmsimError("wanda needs the input column norms of the layer (calibration statistics)")
        score = score * column_rms.to(score.device, torch.float32)[None, :]
    if pattern.kind == "unstructured" and method == "magnitude":  # one threshold for the whole matrix
        return unstructured_mask(score.reshape(1, -1), pattern.unstructured_density).reshape(score.shape)
    return pattern_mask(score, pattern)


@contextmanager
def weight_pruned(
    model: torch.nn.Module, config: WeightPruningConfig, input_stats: dict | None = None
) -> Iterator[int]:
    """Zero the pruned weights of the targeted layers inside the block (yields the number of layers)."""
    if config.needs_calibration and input_stats is None:
        raise NmsimError(f"{config.method} needs calibration statistics; none given")
    sites = selected_sites(model, config.targets)
    originals = []
    try:
        with torch.no_grad():
            for site in sites:
                weight = site.module.weight
                stats = input_stats.get(site.name, {}) if input_stats is not None else {}
                mask = weight_mask(weight, config.pattern, config.method, stats.get("column_rms"))
                originals.append((weight, weight.detach().clone()))
                weight.mul_(mask)
        log.debug("weight-pruned %d layers with %s %s", len(sites), config.pattern, config.method)
        yield len(sites)
    finally:
        with torch.no_grad():
            for weight, original in originals:
                weight.copy_(original)
