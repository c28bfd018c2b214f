"""Workloads: the linear GEMMs of every decoder layer, from a model's shape alone (no weights needed).

A shape comes from the registry (:func:`nmsim.registry.model_shape`: a registered model, a Hugging Face
``config.json`` or the directory holding it, or a GGUF file's metadata).

GEMM convention: OUT[M × N] = IN[M × K] · W[K × N], with M = tokens, K = in_features (the reduction dimension that
N:M activation pruning groups along) and N = out_features. Prefill with batch B and sequence S has M = B·S;
a decode step with batch B has M = B, whatever the context length (which only changes attention, not these
GEMMs).

Tensor parallelism over ``devices`` splits each layer Megatron-style: q, k, v and gate, up (W1) are
column-parallel (N ÷ devices, heads divided), o and down (W2) row-parallel (K ÷ devices); the GEMMs here are one
device's. A mixture-of-experts layer runs a dense router GEMM and each token's top-k experts: with uniform routing
of T tokens, E·(1 − (1 − k/E)^T) experts are active on average, each with T·k ÷ active tokens (rounded up), so the
expert GEMMs carry ``count`` = the expected active experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from nmsim.errors import NmsimError
from nmsim.registry import ModelShape

Phase = Literal["prefill", "decode"]
ROW_PARALLEL = ("o", "down", "shared_down")  # K split over devices; the rest split N


@dataclass(frozen=True)
class Gemm:
    """One linear layer's GEMM: OUT[m × n] = IN[m × k] · W[k × n]; ``count`` identical ones run (MoE experts)."""

    layer: int
    projection: str
    phase: Phase
    m: int  # tokens
    k: int  # reduction dimension (in_features)
    n: int  # out_features
    count: float = 1.0  # identical GEMMs of the layer (the expected active experts of a MoE layer)
    prunable: bool = True  # N:M may apply; the router and the LM head stay dense

    @property
    def macs(self) -> float:
        return self.m * self.k * self.n * self.count

    @property
    def role(self) -> str:
        """The projection whose mask statistics this GEMM's input has (a shared expert reads the MLP's input)."""
        return self.projection.removeprefix("shared_")


def check_divides(shape: ModelShape, devices: int) -> None:
    """Raise unless heads, KV heads and MLP widths divide over ``devices``, naming what does not."""
    if devices < 1:
        raise NmsimError(f"--devices {devices}: must be at least 1")
    sizes = {"num_heads": shape.num_heads, "num_kv_heads": shape.num_kv_heads,
             "intermediate_size": shape.intermediate_size}
    if shape.shared_expert_intermediate_size:
        sizes["shared_expert_intermediate_size"] = shape.shared_expert_intermediate_size
    bad = [f"{name} {value}" for name, value in sizes.items() if value % devices]
    if bad:
        fitting = [d for d in range(1, 65) if all(v % d == 0 for v in sizes.values())]
        raise NmsimError(f"tensor parallelism over {devices} devices needs every head count and MLP width of "
                         f"{shape.name} to divide by {devices}; {', '.join(bad)} do not (degrees that divide: "
                         f"{', '.join(map(str, fitting))})")


def active_experts(tokens: int, experts: int, top_k: int) -> tuple[float, int]:
    """(expected experts that receive a token, tokens per active expert rounded up) for uniform top-k routing."""
    active = experts * (1 - (1 - top_k / experts) ** tokens)
    return active, max(1, math.ceil(tokens * top_k / active - 1e-9))


def layer_gemms(shape: ModelShape, layer: int, phase: Phase, tokens: int, devices: int = 1) -> list[Gemm]:
    """The linear GEMMs of one decoder layer on one of ``devices`` (tensor parallel), in execution order."""
    def split(projection: str, k: int, n: int) -> tuple[int, int]:
        return (k // devices, n) if projection in ROW_PARALLEL else (k, n // devices)

    gemms = [Gemm(layer, p, phase, tokens, *split(p, *shape.projection_shape(p))) for p in ("q", "k", "v", "o")]
    mlp = [p for p in shape.projections if p not in ("q", "k", "v", "o")]
    if not shape.is_moe:
        return gemms + [Gemm(layer, p, phase, tokens, *split(p, *shape.projection_shape(p))) for p in mlp]
    gemms.append(Gemm(layer, "router", phase, tokens, shape.hidden_size, shape.num_experts, prunable=False))
    active, per_expert = active_experts(tokens, shape.num_experts, shape.experts_per_token)
    gemms += [Gemm(layer, p, phase, per_expert, *split(p, *shape.projection_shape(p)), count=active) for p in mlp]
    width = shape.shared_expert_intermediate_size
    if width:
        for p, (k, n) in (("shared_gate", (shape.hidden_size, width)), ("shared_up", (shape.hidden_size, width)),
                          ("shared_down", (width, shape.hidden_size))):
            gemms.append(Gemm(layer, p, phase, tokens, *split(p, k, n)))
    return gemms


def linear_gemms(shape: ModelShape, phase: Phase, batch: int, seq: int = 1, devices: int = 1) -> list[Gemm]:
    """Every linear GEMM of every layer (one device's share under tensor parallelism over ``devices``): M =
    batch·seq for prefill, batch for a decode step."""
    if batch < 1 or seq < 1:
        raise NmsimError(f"batch {batch} and sequence {seq} must be at least 1")
    if phase not in ("prefill", "decode"):
        raise NmsimError(f"phase {phase!r}: choose prefill or decode")
    check_divides(shape, devices)
    tokens = batch * seq if phase == "prefill" else batch
    return [gemm for layer in range(shape.num_layers) for gemm in layer_gemms(shape, layer, phase, tokens, devices)]
