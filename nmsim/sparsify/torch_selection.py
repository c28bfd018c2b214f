"""Top-N-of-M selection and the fused magnitude pruning in plain torch: any device (CUDA included), any dtype.

The counterpart of the compiled CPU float32 kernel (:mod:`nmsim.sparsify.selection_kernel`) for CUDA tensors and
for every other dtype, following the same rules (:mod:`nmsim.patterns`). Per group of M along K, the N-th largest
score (``torch.topk``) is the threshold; every score above it is kept, and the free slots left go to the scores
equal to it in K order (a running count), so ties go to the lower K index. Comparisons are IEEE: -0.0 and +0.0
are equal scores (a tie), ±inf are ordinary values; callers reject NaN. For float32 input the masks are
bit-identical to the compiled kernel's (a property test compares them on the CPU), on every device, because
only the threshold's value matters, never how topk orders equal values.

**Tie rule for bfloat16 and float16 input**: nothing is upcast. The shift η, x − η and the score |x − η| are
computed and compared in the input dtype, so values that round to the same bf16 (or fp16) number are ties and the
lower K index wins, even where their float32 originals differ. The per-token median is ``torch.median`` in that
dtype (the lower median, as the compiled kernel's).
"""

from __future__ import annotations

import torch

SHIFTS = ("none", "median", "static")


def keep_top_n_of_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask keeping the top ``n`` of every ``m`` scores, lower index winning ties.

    scores: [..., K] real, K % m == 0, no NaN, 1 <= n < m; returns bool [..., K] on the same device.
    """
    groups = scores.detach().reshape(*scores.shape[:-1], scores.shape[-1] // m, m)  # [..., K/M, M]
    threshold = groups.topk(n, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)  # [..., K/M, 1]
    above = groups > threshold
    tied = groups == threshold
    free_slots = n - above.sum(dim=-1, keepdim=True, dtype=torch.int32)
    keep = above | (tied & (tied.cumsum(dim=-1, dtype=torch.int32) <= free_slots))
    return keep.reshape(scores.shape)


def prune_rows_by_magnitude(
    x: torch.Tensor, n: int, m: int, shift: str = "none", static_shift: float = 0.0, *, with_mask: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keep the n largest |x − η| of every m along K; return (x − η where kept else 0, η, keep mask or None).

    The contract of :func:`nmsim.sparsify.selection_kernel.prune_rows_by_magnitude` on x's device and in x's
    dtype. x: [T, K] floating, K % m == 0, no NaN. shift: "none" (η = 0), "median" (per-token lower median) or
    "static" (η = ``static_shift``, rounded to x's dtype). Returns ([T, K], η [T], bool [T, K] if ``with_mask``).
    """
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; choose from {', '.join(SHIFTS)}")
    rows = x.detach()
    if shift == "median":
        eta = rows.median(dim=-1).values  # [T]
    else:
        eta = torch.full(rows.shape[:1], static_shift if shift == "static" else 0.0, dtype=rows.dtype,
                         device=rows.device)
    centered = rows - eta[:, None] if shift != "none" else rows
    keep = keep_top_n_of_m(centered.abs(), n, m)
    return torch.where(keep, centered, 0.0), eta, keep if with_mask else None
