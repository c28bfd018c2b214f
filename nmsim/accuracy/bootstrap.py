"""Paired bootstrap over evaluation windows: the 95 % confidence interval of Δ perplexity between two rows evaluated
on the same windows (torch-free).

Each resample draws W window indices with replacement (a seeded numpy Generator) and recomputes both rows'
perplexity exp(Σ NLL / Σ tokens) on the same draw, so what the two rows share (the text's hard windows) cancels. The
interval is the percentile interval of the resampled Δ. Few windows give an interval that is too narrow; with fewer
than two there is none (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class DeltaInterval:
    """Δ = PPL(other) − PPL(base) on the same windows, with its bootstrap interval; ``*_pct`` relative to base."""

    delta_ppl: float
    low: float
    high: float
    delta_pct: float
    pct_low: float
    pct_high: float
    windows: int

    @property
    def beyond_noise(self) -> bool:
        """The interval excludes 0 (False when there is no interval)."""
        return self.low > 0 or self.high < 0


def perplexity_of(nll: np.ndarray, tokens: np.ndarray) -> float:
    """exp(Σ NLL / Σ tokens) of per-window sums [W] nats and token counts [W]."""
    return math.exp(float(np.sum(nll)) / float(np.sum(tokens)))


def paired_delta(base_nll: np.ndarray, other_nll: np.ndarray, tokens: np.ndarray, *, resamples: int = RESAMPLES,
                 seed: int = SEED, level: float = LEVEL) -> DeltaInterval:
    """Δ perplexity of ``other`` over ``base`` and its paired bootstrap interval.

    base_nll, other_nll: [W] float64 NLL summed per window (nats), the same windows in the same order;
    tokens: [W] scored tokens per window.
    """
    base_nll, other_nll, tokens = (np.asarray(a, dtype=np.float64) for a in (base_nll, other_nll, tokens))
    if not base_nll.shape == other_nll.shape == tokens.shape or base_nll.ndim != 1:
        raise ValueError(f"paired_delta: per-window arrays of one shape [W] needed, got {base_nll.shape}, "
                         f"{other_nll.shape}, {tokens.shape}")
    base, other = perplexity_of(base_nll, tokens), perplexity_of(other_nll, tokens)
    windows = base_nll.shape[0]
    if windows < 2:
        return DeltaInterval(other - base, math.nan, math.nan, 100 * (other / base - 1), math.nan, math.nan, windows)
    draw = np.random.default_rng(seed).integers(0, windows, size=(resamples, windows))  # [B, W]
    scored = tokens[draw].sum(axis=1)
    base_star = np.exp(base_nll[draw].sum(axis=1) / scored)
    other_star = np.exp(other_nll[draw].sum(axis=1) / scored)
    tails = [(1 - level) / 2, (1 + level) / 2]
    low, high = np.quantile(other_star - base_star, tails)
    pct_low, pct_high = np.quantile(100 * (other_star / base_star - 1), tails)
    return DeltaInterval(other - base, float(low), float(high), 100 * (other / base - 1), float(pct_low),
                         float(pct_high), windows)
