"""Perplexity over non-overlapping windows: PPL = exp(mean NLL over every predicted token)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from nmsim.llm.device import model_device


@dataclass(frozen=True)
class PerplexityResult:
    nll_sum: float  # nats, summed over all predicted tokens
    tokens: int  # predicted (scored) tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / self.tokens)


def window_nll(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of each window. windows: [B, S] (any device) -> [B] float64 (nats), on the device of
    the logits."""
    logits = model(windows.to(model_device(model))).logits  # [B, S, V]
    targets = windows[:, 1:].reshape(-1).to(logits.device)  # a device_map-spread model's head may sit elsewhere
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets, reduction="none")
    return nll.view(windows.shape[0], -1).double().sum(dim=1)


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``windows`` [W, S] (any device: each batch moves to the model's);
    ``on_batch(n_windows)`` reports progress."""
    total = 0.0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        total += float(window_nll(model, batch).sum())
        if on_batch is not None:
            on_batch(batch.shape[0])
    return PerplexityResult(total, windows.shape[0] * (windows.shape[1] - 1))
