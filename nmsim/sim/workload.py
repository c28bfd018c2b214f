"""Workloads: the linear GEMMs of every decoder layer, from a model's shape alone (no weights needed).

A shape comes from the registry (:func:`nmsim.registry.model_shape`: a registered model, a Hugging Face
``config.json`` or the directory holding it, or a GGUF file's metadata).

GEMM convention: OUT[M × N] = IN[M × K] · W[K × N], with M = tokens, K = in_features (the reduction dimension that
N:M activation pruning groups along) and N = out_features. Prefill with batch B and sequence S has M = B·S;
a decode step with batch B has M = B, whatever the context length (which only changes attention, not these
GEMMs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nmsim.errors import NmsimError
from nmsim.registry import PROJECTIONS, ModelShape

Phase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class Gemm:
    """One linear layer's GEMM: OUT[m × n] = IN[m × k] · W[k × n]."""

    layer: int
    projection: str
    phase: Phase
    m: int  # tokens
    k: int  # reduction dimension (in_features)
    n: int  # out_features

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n


def linear_gemms(shape: ModelShape, phase: Phase, batch: int, seq: int = 1) -> list[Gemm]:
    """Every q/k/v/o/gate/up/down GEMM of every layer: M = batch·seq for prefill, batch for a decode step."""
    if batch < 1 or seq < 1:
        raise NmsimError(f"batch {batch} and sequence {seq} must be at least 1")
    if phase not in ("prefill", "decode"):
        raise NmsimError(f"phase {phase!r}: choose prefill or decode")
    tokens = batch * seq if phase == "prefill" else batch
    return [
        Gemm(layer, projection, phase, tokens, *shape.projection_shape(projection))
        for layer in range(shape.num_layers)
        for projection in PROJECTIONS
    ]
