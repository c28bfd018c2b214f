"""The keep-masks a :class:`~nmsim.patterns.Pattern` implies for a tensor of scores (torch).

Rules (see :mod:`nmsim.patterns`): exactly N kept per group of M along the last dimension K; ties go to the lower
K index; K is padded to a multiple of M with scores below every real one; NaN scores are rejected. Scores are
compared in their own dtype: bf16 or fp16 scores that are equal in that dtype are ties (lower index wins).

:func:`nm_mask` takes the compiled kernel (:mod:`nmsim.sparsify.selection_kernel`) for float32 scores on the CPU
and :mod:`nmsim.sparsify.torch_selection` for every other device and dtype; :func:`keep_top_n` is the plain
reference both are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nmsim.patterns import Pattern
from nmsim.sparsify import selection_kernel, torch_selection


def _reject_nan(scores: torch.Tensor) -> None:
    if scores.is_floating_point() and torch.isnan(scores).any():
        count = int(torch.isnan(scores).sum())
        raise ValueError(f"{count} NaN score(s): NaN cannot be ranked; fix the input or the criterion")


def keep_top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean mask keeping exactly ``n`` largest of the last dimension, lower index winning ties.

    scores: [..., G] real tensor; returns bool [..., G]. n >= G keeps everything.
    """
    _reject_nan(scores)
    size = scores.shape[-1]
    if n >= size:
        return torch.ones_like(scores, dtype=torch.bool)
    if n <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    # The n-th largest value is the threshold; values above it are kept, and the first few ties fill the rest.
    threshold = scores.kthvalue(size - n + 1, dim=-1, keepdim=True).values
    above = scores > threshold
    tied = scores == threshold
    free_slots = n - above.sum(dim=-1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=-1) <= free_slots))


def nm_mask(scores: torch.Tensor, n: int, m: int, *, use_kernel: bool = True) -> torch.Tensor:
    """Keep the top ``n`` of every ``m`` consecutive scores along the last dimension (K).

    scores: [..., K]; returns bool [..., K]. K is padded to a multiple of m (see module rules).
    float32 CPU scores take the compiled kernel, all others the torch path (see the module docstring); with
    ``use_kernel`` False, both take the reference :func:`keep_top_n`. Every path gives the same mask.
    """
    k = scores.shape[-1]
    pad = (-k) % m
    if pad:
        scores = F.pad(scores, (0, pad), value=float("-inf"))
    if use_kernel and n < m:
        _reject_nan(scores)
        select = selection_kernel if selection_kernel.supports(scores, m) else torch_selection
        keep = select.keep_top_n_of_m(scores, n, m)
    else:
        keep = keep_top_n(scores.reshape(*scores.shape[:-1], (k + pad) // m, m), n).reshape(scores.shape)
    return keep[..., :k]


def nm_mask_reference(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """:func:`nm_mask` through the reference :func:`keep_top_n` only (for tests and cross-checks)."""
    return nm_mask(scores, n, m, use_kernel=False)


def unstructured_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the round(density·K) (at least one) largest scores of each row. scores: [..., K] -> bool [..., K]."""
    k = scores.shape[-1]
    return keep_top_n(scores, max(1, int(density * k + 0.5)))


def pattern_mask(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """The keep-mask ``pattern`` implies for ``scores`` [..., K]; bool [..., K]."""
    if pattern.kind == "nm":
        return nm_mask(scores, pattern.n, pattern.m)
    if pattern.kind == "unstructured":
        return unstructured_mask(scores, pattern.unstructured_density)
    _reject_nan(scores)
    return torch.ones_like(scores, dtype=torch.bool)
