"""A statistical model of N:M activation masks: what the simulator needs from real masks, from a few numbers.

Scenario: each of an input's K channels has its own keep probability p_k (some channels are large in most tokens,
others rarely), drawn from a Beta distribution with the pattern's density d as its mean and a concentration κ
(large κ: every channel alike; small κ: a few channels always kept, many rarely). Tokens choose their masks
independently given the p_k, except that T consecutive tokens of one sequence behave like 1 + (T − 1)·ρ independent
ones (ρ ≤ 1: neighbours keep similar channels). Then:

- **union of T tokens' masks** (the weight rows a tile of T tokens needs):
  u(T) = E_k[1 − (1 − p_k)^T_eff] = 1 − B(a, b + T_eff) / B(a, b), a = d·κ, b = (1 − d)·κ, T_eff = 1 + (T − 1)·ρ;
  with κ → ∞ it is the independent-tokens answer 1 − (1 − d)^T_eff. The model does not depend on K, which is what
  makes a profile meaningful for a model with another K.
- **kept values per aligned group of g positions** (what a hierarchical datapath composes from smaller groups):
  within one selection group (M positions of an N:M pattern, or the whole row of an unstructured one) the kept
  positions are exchangeable, so the count in g of them is hypergeometric: C(g, j)·C(M − g, N − j) / C(M, N). A
  group of g ≥ M aligned positions holds exactly N·g/M.

Three candidates are fitted to each measured union curve: ``independent`` (κ = ∞, ρ = 1: no parameter),
``beta`` (κ; ρ = 1) and ``beta-correlated`` (κ and ρ). :func:`choose` keeps the simplest whose mean absolute
error is no worse than the best candidate's by more than a quarter (:data:`FIT_SLACK`) or :data:`FIT_TOLERANCE`:
a parameter is added only when the data need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nmsim.patterns import Pattern

CANDIDATES = ("independent", "beta", "beta-correlated")
FIT_SLACK = 1.25  # a simpler candidate may have this times the best candidate's mean absolute error
FIT_TOLERANCE = 0.0005  # ... or this much more, absolutely (union fractions)
KAPPA_RANGE = (math.exp(-4.0), math.exp(14.0))  # Beta concentrations searched (beyond: indistinguishable from ∞)
RHO_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 … 1.0


@dataclass(frozen=True)
class MaskModel:
    """The fitted model of one input: ``density`` d, Beta concentration ``kappa`` (None: every channel alike) and
    token correlation ``rho``."""

    density: float
    kappa: float | None = None
    rho: float = 1.0

    def union(self, tokens: float) -> float:
        """Fraction of the K channels kept by at least one of ``tokens`` tokens."""
        d, t = self.density, 1.0 + (tokens - 1.0) * self.rho
        if d >= 1.0:
            return 1.0
        if d <= 0.0:
            return 0.0
        if self.kappa is None:
            return 1.0 - (1.0 - d) ** t
        a, b = d * self.kappa, (1.0 - d) * self.kappa
        return 1.0 - math.exp(math.lgamma(b + t) - math.lgamma(b) + math.lgamma(a + b) - math.lgamma(a + b + t))


def union_curve(model: MaskModel, tiles) -> tuple[tuple[int, float], ...]:
    """(tile tokens, union fraction) at each tile size."""
    return tuple((int(t), model.union(t)) for t in tiles)


def group_histogram(pattern: Pattern, group_size: int, k: int) -> dict[int, float]:
    """P(kept = j) in an aligned group of ``group_size`` positions of a row of ``k`` values pruned to ``pattern``."""
    g = group_size
    if pattern.kind == "dense":
        return {g: 1.0}
    if pattern.kind == "nm":
        n, m = pattern.n, pattern.m
    else:  # unstructured: one selection group of the whole row
        n, m = max(1, int(pattern.density * k + 0.5)), k
    if g >= m:
        return {n * g // m: 1.0}
    total = math.comb(m, n)
    return {j: math.comb(g, j) * math.comb(m - g, n - j) / total for j in range(max(0, n - (m - g)), min(g, n) + 1)}


def _mae(model: MaskModel, curve) -> float:
    return sum(abs(model.union(t) - u) for t, u in curve) / len(curve)


def _golden(f, low: float, high: float, steps: int = 48) -> float:
    """The minimiser of a unimodal ``f`` on [low, high] (golden-section search)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def _fit_kappa(density: float, rho: float, curve) -> MaskModel:
    log_low, log_high = (math.log(v) for v in KAPPA_RANGE)

    def error(log_kappa: float) -> float:
        return sum((MaskModel(density, math.exp(log_kappa), rho).union(t) - u) ** 2 for t, u in curve)

    return MaskModel(density, math.exp(_golden(error, log_low, log_high)), rho)


def fit(density: float, curve) -> dict[str, tuple[MaskModel, float]]:
    """Each candidate fitted to a measured union ``curve`` ((T, fraction), ...): name → (model, mean abs. error)."""
    curve = tuple(curve)
    fits = {"independent": MaskModel(density)}
    if 0.0 < density < 1.0:
        fits["beta"] = _fit_kappa(density, 1.0, curve)
        fits["beta-correlated"] = min((_fit_kappa(density, rho, curve) for rho in RHO_GRID),
                                      key=lambda model: _mae(model, curve))
    else:
        fits["beta"] = fits["beta-correlated"] = fits["independent"]
    return {name: (model, _mae(model, curve)) for name, model in fits.items()}


def choose(errors: dict[str, float]) -> str:
    """The simplest candidate whose error is within :data:`FIT_SLACK` × (or :data:`FIT_TOLERANCE` above) the best."""
    best = min(errors[name] for name in CANDIDATES)
    return next(name for name in CANDIDATES if errors[name] <= max(best * FIT_SLACK, best + FIT_TOLERANCE))
