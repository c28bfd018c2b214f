"""Perplexity over non-overlapping windows: PPL = exp(mean NLL over every predicted token)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nmsim.llm.device import model_device


@dataclass(frozen=True)
class PerplexityResult:
    nll_sum: float  # nats, summed over all predicted tokens
    tokens: int  # predicted (scored) tokens
    window_nll: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [W] float64 nats, summed per window

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / self.tokens)


def logits_nll(logits: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of each window from its logits. logits: [B, S, V], windows: [B, S] (any device) -> [B]
    float64 (nats), on the device of the logits."""
    targets = windows[:, 1:].reshape(-1).to(logits.device)  # a device_map-spread model's head may sit elsewhere
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets, reduction="none")
    return nll.view(windows.shape[0], -1).double().sum(dim=1)


def window_nll(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of each window. windows: [B, S] (any device: moved to the model's) -> [B] float64
    (nats), on the device of the logits."""
    return logits_nll(model(windows.to(model_device(model))).logits, windows)


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    on_batch: Callable[[int], None] | None = None,
    on_logits: Callable[[int, torch.Tensor], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``windows`` [W, S] (any device: each batch moves to the model's);
    ``on_batch(n_windows)`` reports progress and
    ``on_logits(first_window, logits [B, S, V])`` sees every batch's logits (the fidelity metrics use them, so one
    forward pass serves both)."""
    total = 0.0
    per_window = []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        logits = model(batch.to(model_device(model))).logits  # [B, S, V]
        nll = logits_nll(logits, batch)
        total += float(nll.sum())
        per_window.append(nll.cpu().numpy())
        if on_logits is not None:
            on_logits(start, logits)
        if on_batch is not None:
            on_batch(batch.shape[0])
    return PerplexityResult(total, windows.shape[0] * (windows.shape[1] - 1), np.concatenate(per_window))
