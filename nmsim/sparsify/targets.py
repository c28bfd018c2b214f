"""Where pruning applies: which projections of which decoder layers, and in which phase.

Projections are named q, k, v, o (attention) and gate, up, down (MLP); they are found in any model whose
decoder layers follow the Llama/Gemma/Qwen/Mistral naming (``layers.<i>.self_attn.q_proj``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from nmsim.errors import NmsimError
from nmsim.registry import PROJECTIONS

if TYPE_CHECKING:  # target specs parse without torch (the report reads them)
    import torch

TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "all": PROJECTIONS,
    # The seed study's Qwen setting: attention inputs q/k/v stay dense.
    "no-qkv": ("o", "gate", "up", "down"),
    # Amber Pruner's skip list: k/v (cheap under GQA) and o/up (sensitive) stay dense.
    "amber": ("q", "gate", "down"),
}

Phase = Literal["all", "prefill"]

_LINEAR_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj$")


@dataclass(frozen=True)
class LinearSite:
    """One prunable linear layer of a model."""

    name: str  # module path, e.g. model.layers.3.mlp.down_proj
    layer: int
    projection: str
    module: torch.nn.Linear


def find_linear_sites(model: torch.nn.Module) -> list[LinearSite]:
    """All q/k/v/o/gate/up/down linear layers of the decoder, in module order."""
    import torch

    sites = []
    for name, module in model.named_modules():
        match = _LINEAR_NAME.search(name)
        if match and isinstance(module, torch.nn.Linear):
            sites.append(LinearSite(name, int(match[1]), match[2], module))
    if not sites:
        raise NmsimError(
            f"{type(model).__name__}: found no decoder linear layers named layers.<i>.self_attn.(q|k|v|o)_proj or "
            "layers.<i>.mlp.(gate|up|down)_proj; this architecture is not supported yet"
        )
    return sites


def selected_sites(model: torch.nn.Module, targets: TargetSpec) -> list[LinearSite]:
    """The linear layers of ``model`` that ``targets`` selects; an error if there are none."""
    sites = [site for site in find_linear_sites(model) if targets.selects(site)]
    if not sites:
        raise NmsimError(f"targets {targets} select no linear layer of this model")
    return sites


def parse_layer_list(text: str) -> frozenset[int]:
    """'0-3,7,10-11' -> {0, 1, 2, 3, 7, 10, 11}."""
    layers: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise NmsimError(f"layer list {text!r}: {part!r} is not a layer index or range like 0-3")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise NmsimError(f"layer list {text!r}: range {part!r} runs backwards")
        layers.update(range(first, last + 1))
    return frozenset(layers)


@dataclass(frozen=True)
class TargetSpec:
    """Which linear inputs get pruned.

    projections: subset of :data:`PROJECTIONS`; layers: only these decoder layers (None = all);
    exclude_layers: never these; phase: "all" prunes every token, "prefill" leaves decode tokens dense.
    """

    preset: str = "all"
    projections: tuple[str, ...] = PROJECTIONS
    layers: frozenset[int] | None = None
    exclude_layers: frozenset[int] = frozenset()
    phase: Phase = "all"

    def selects(self, site: LinearSite) -> bool:
        in_layers = self.layers is None or site.layer in self.layers
        return site.projection in self.projections and in_layers and site.layer not in self.exclude_layers

    def __str__(self) -> str:
        label = self.preset
        if self.layers is not None:
            label += f"[layers={_format_layers(self.layers)}]"
        if self.exclude_layers:
            label += f"[exclude={_format_layers(self.exclude_layers)}]"
        if self.phase == "prefill":
            label += "[prefill-only]"
        return label


def _format_layers(layers: frozenset[int]) -> str:
    """{0, 1, 2, 3, 7} -> '0-3,7'."""
    runs: list[list[int]] = []
    for index in sorted(layers):
        if runs and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def make_targets(
    preset: str = "all",
    *,
    layers: str | None = None,
    exclude_layers: str | None = None,
    phase: Phase = "all",
) -> TargetSpec:
    """Build a :class:`TargetSpec` from a preset name or a comma list of projections (e.g. 'o,down')."""
    if preset in TARGET_PRESETS:
        projections = TARGET_PRESETS[preset]
    else:
        names = tuple(p.strip() for p in preset.split(",") if p.strip())
        unknown = [p for p in names if p not in PROJECTIONS]
        if unknown or not names:
            raise NmsimError(
                f"targets {preset!r}: use a preset ({', '.join(TARGET_PRESETS)}) or a comma list of "
                f"projections from {', '.join(PROJECTIONS)}"
            )
        projections = tuple(p for p in PROJECTIONS if p in names)
        preset = ",".join(projections)
    if phase not in ("all", "prefill"):
        raise NmsimError(f"phase {phase!r}: choose 'all' (every token) or 'prefill' (decode tokens stay dense)")
    return TargetSpec(
        preset,
        projections,
        parse_layer_list(layers) if layers else None,
        parse_layer_list(exclude_layers) if exclude_layers else frozenset(),
        phase,
    )
