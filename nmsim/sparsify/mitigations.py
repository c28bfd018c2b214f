"""Training-free error mitigations for a pruned linear input (``shared/reference/paper_methods.md`` §3).

With P the N:M pruner, x a token's input [K] and W [O, K]:

- **median shift (dynamic)**: η_t = median_k x_tk (the lower median for even K, as ``torch.median``);
  y = P(x − η)Wᵀ + η·rowsum(W). The GEMM input P(x − η) stays N:M-sparse; η·rowsum(W) is a rank-1 term.
- **static shift**: the same with one calibrated scalar η per layer (the mean per-token median of that layer's
  input on calibration data); η·rowsum(W) is then a constant bias.
- **variance correction**: v_t = sqrt(Var_k(x_t) / Var_k(P(x)_t)); y = (v_t·P(x))Wᵀ. A token whose pruned
  variance is 0 keeps v_t = 1.
- Combinations: a shift and variance correction compose as y = (v·P(x − η))Wᵀ + η·rowsum(W), with v computed
  on the shifted input.
- **learnable diagonal scale + shift**: y' = y ⊙ (1 + d) + b on top of any of the above, d, b ∈ ℝ^O trained block by
  block (:mod:`nmsim.sparsify.learnable`); it folds into W and the bias, so inference pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from nmsim.errors import NmsimError

if TYPE_CHECKING:  # the mitigation names parse without torch (the report reads them)
    import torch

ShiftKind = Literal["none", "median", "static"]


@dataclass(frozen=True)
class Mitigation:
    shift: ShiftKind = "none"
    variance: bool = False
    learnable: bool = False  # a trained per-output scale and shift on top

    @property
    def needs_calibration(self) -> bool:
        return self.shift == "static"

    def __str__(self) -> str:
        parts = [f"{self.shift}-shift"] if self.shift != "none" else []
        parts += ["variance"] if self.variance else []
        parts += ["learnable"] if self.learnable else []
        return "+".join(parts) or "none"


MITIGATION_NAMES = (
    "none", "median-shift", "static-shift", "variance", "median-shift+variance", "static-shift+variance",
    "learnable", "median-shift+learnable", "variance+learnable",
)


def parse_mitigation(text: str) -> Mitigation:
    """Parse 'none', 'median-shift', 'static-shift', 'variance', 'learnable' or a '+'-joined combination."""
    parts = [p.strip().lower() for p in str(text).split("+") if p.strip()]
    shift: ShiftKind = "none"
    variance = learnable = False
    for part in parts:
        if part == "none" and len(parts) == 1:
            continue
        if part in ("median-shift", "static-shift") and shift == "none":
            shift = "median" if part == "median-shift" else "static"
        elif part == "variance" and not variance:
            variance = True
        elif part == "learnable" and not learnable:
            learnable = True
        else:
            raise NmsimError(f"unknown mitigation {text!r}; choose from {', '.join(MITIGATION_NAMES)}")
    if not parts:
        raise NmsimError(f"empty mitigation; choose from {', '.join(MITIGATION_NAMES)}")
    return Mitigation(shift, variance, learnable)


def median_shift(x: torch.Tensor) -> torch.Tensor:
    """Per-token lower median over K. x: [T, K] -> [T, 1]."""
    return x.median(dim=-1, keepdim=True).values


def variance_scale(x: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """v_t = sqrt(Var_k(x_t) / Var_k(pruned_t)), 1 where the pruned variance is 0. [T, K] x2 -> [T, 1]."""
    dense_var = x.var(dim=-1, correction=0, keepdim=True)
    pruned_var = pruned.var(dim=-1, correction=0, keepdim=True)
    safe = pruned_var > 0
    import torch

    return torch.where(safe, (dense_var / torch.where(safe, pruned_var, 1.0)).sqrt(), 1.0)
