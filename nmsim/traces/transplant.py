"""Mask statistics for a model without a trace: a real model's profile, transplanted.

Each target layer takes the source layer at the same relative depth (layer l of L ↔ source layer
⌊(l + ½)·L_s / L⌋), and each input the source input of the same projection role (q+k+v, o, gate+up, down) and
phase. Its statistics are the source input's fitted :class:`~nmsim.traces.mask_model.MaskModel` evaluated for the
target: the union of T tokens' masks (independent of K), the kept count per aligned group (hypergeometric within
the pattern's groups, at the target's K), density and natural zeros as measured on the source. The result says
where it came from (``provenance``: ``transplanted from smollm2-135m``).

:func:`validate_transfer` holds a transplant against a model's *measured* statistics: union fractions at
T = 4, 16, 64, 128 and the hierarchical design's MAC slots per position.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from nmsim.patterns import Pattern
from nmsim.registry import ModelShape
from nmsim.traces.mask_model import group_histogram, union_curve
from nmsim.traces.profile import ROLES, InputProfile, Profile
from nmsim.traces.reader import InputStats, TraceData

GROUP_SIZES = (4, 8, 16, 32)
VALIDATION_TILES = (4, 16, 64, 128)
INPUTS = (("q+k+v", "q"), ("o", "o"), ("gate+up", "gate"), ("down", "down"))  # (input, the projection giving K)


def source_layer(layer: int, layers: int, source_layers: int) -> int:
    """The source layer at the same relative depth as ``layer`` of ``layers``."""
    return min(source_layers - 1, int((layer + 0.5) * source_layers / layers))


def _entries(profile: Profile, layers: list[int] | None = None) -> dict[tuple[str, str, int], InputProfile]:
    return {(e.phase, e.role, e.layer): e for e in profile.inputs if layers is None or e.layer in layers}


def transplanted_input(entry: InputProfile, pattern: Pattern, key: str, k: int) -> InputStats:
    """The statistics of a target input of K ``k`` from one source input's model."""
    model = entry.model
    tiles = [t for t, _ in entry.union] or [1]
    group_nnz = tuple((g, j, f) for g in GROUP_SIZES for j, f in sorted(group_histogram(pattern, g, k).items()))
    return InputStats(key=key, k=k, tokens=entry.tokens, density=entry.density,
                      natural_zero_fraction=entry.natural_zero_fraction, rows_needed=union_curve(model, tiles),
                      group_nnz=group_nnz)


def transplant(profile: Profile, shape: ModelShape, source_layers: list[int] | None = None,
               origin: Path | None = None) -> TraceData:
    """The statistics of every layer of ``shape`` from ``profile`` (``source_layers``: only these source layers
    serve, mapped by relative depth among themselves; ``origin``: the profile's trace directory)."""
    entries = _entries(profile, source_layers)
    available = sorted({layer for _, _, layer in entries})
    inputs = {}
    for layer in range(shape.num_layers):
        source = available[source_layer(layer, shape.num_layers, len(available))]
        for phase in ("prefill", "decode"):
            for name, projection in INPUTS:
                entry = entries.get((phase, ROLES[name], source))
                if entry is None:
                    continue
                if projection not in shape.projections:  # a plain MLP: W1 (up) reads the MLP's input
                    projection = "up"
                k = shape.projection_shape(projection)[0]
                stats = transplanted_input(entry, profile.pattern, f"L{layer}.{name}", k)
                for member in name.split("+"):
                    inputs[(phase, layer, member)] = stats
    return TraceData(origin or Path(profile.source.get("trace", profile.model)), shape.name, profile.pattern,
                     profile.method, inputs, {}, provenance=f"transplanted from {profile.model}")


def mac_slots_per_position(histogram: dict[int, float], base: Pattern) -> float:
    """MAC slots per position of a hierarchical datapath built for ``base`` (n:m) on groups of m positions:
    E[⌈kept/n⌉]·n/m."""
    return sum(f * math.ceil(j / base.n) for j, f in histogram.items()) * base.n / base.m


def _hierarchical_base(pattern: Pattern) -> Pattern | None:
    """The 2:4-style base a hierarchical design composes ``pattern`` from (None for 2:4 itself and unstructured)."""
    if pattern.kind != "nm" or pattern.m <= 4:
        return None
    return Pattern.nm(pattern.n * 4 // pattern.m, 4) if (pattern.n * 4) % pattern.m == 0 else None


def validate_transfer(predicted: TraceData, measured: TraceData) -> pd.DataFrame:
    """Per layer, input and phase of ``measured``: the predicted vs measured union fraction at each of
    :data:`VALIDATION_TILES` and (N:M patterns above M = 4) the MAC slots per position of the hierarchical design
    built for the matching n:4; columns ``quantity``, ``predicted``, ``measured``, ``abs_error``."""
    rows = []
    base = _hierarchical_base(measured.pattern)
    seen = set()
    for (phase, layer, projection), stats in sorted(measured.inputs.items()):
        if (phase, stats.key) in seen:
            continue
        seen.add((phase, stats.key))
        guess = predicted.inputs.get((phase, layer, projection))
        if guess is None:
            continue
        role = stats.key.split(".", 1)[1]
        truth, estimate = dict(stats.rows_needed), dict(guess.rows_needed)
        for tiles in VALIDATION_TILES:
            if tiles in truth and tiles in estimate:
                rows.append({"phase": phase, "layer": layer, "input": role, "quantity": f"union_T{tiles}",
                             "predicted": estimate[tiles], "measured": truth[tiles]})
        if base is not None:
            rows.append({"phase": phase, "layer": layer, "input": role, "quantity": "mac_slots_per_position",
                         "predicted": mac_slots_per_position(guess.group_histogram(4), base),
                         "measured": mac_slots_per_position(stats.group_histogram(4), base)})
    table = pd.DataFrame(rows)
    table["abs_error"] = (table.predicted - table.measured).abs()
    return table



def transfer_errors(source: Profile, target: TraceData, shape: ModelShape,
                    source_layers: list[int] | None = None) -> pd.DataFrame:
    """:func:`validate_transfer` of ``source`` transplanted onto ``shape`` against ``target``'s measured
    statistics."""
    return validate_transfer(transplant(source, shape, source_layers), target)


def held_out_errors(profile: Profile, measured: TraceData, shape: ModelShape) -> pd.DataFrame:
    """Each half of a model's layers (even, odd) predicted from the other half; errors on the held-out layers."""
    layers = list(range(profile.num_layers))
    frames = []
    for kept, held in ((layers[0::2], set(layers[1::2])), (layers[1::2], set(layers[0::2]))):
        table = transfer_errors(profile, measured, shape, source_layers=kept)
        frames.append(table[table.layer.isin(held)])
    return pd.concat(frames, ignore_index=True)


def summarize(errors: pd.DataFrame) -> pd.DataFrame:
    """Mean and largest absolute error per quantity (union fractions together, MAC slots separately)."""
    kind = errors.quantity.where(errors.quantity == "mac_slots_per_position", "union_fraction")
    return errors.assign(kind=kind).groupby("kind").abs_error.agg(["mean", "max", "count"]).reset_index()


def transfer_study(models: tuple[str, ...], patterns, root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every ordered pair of ``models`` (one's profile predicting the other's measured statistics) and each model's
    held-out halves, for each pattern with committed traces of both: (summary, per-layer errors). Summary columns:
    direction, pattern, kind (union_fraction, mac_slots_per_position), mean, max, count."""
    from nmsim.registry import TRACE_ROOT, committed_trace_dir, model_shape
    from nmsim.traces.profile import read_profile

    root = Path(root or TRACE_ROOT)
    frames = []
    for pattern in patterns:
        found = {m: committed_trace_dir(m, pattern, root) for m in models}
        if any(d is None for d in found.values()):
            continue
        measured = {m: TraceData.open(d) for m, d in found.items()}
        profiles = {m: read_profile(d) for m, d in found.items()}
        for source in models:
            for target in models:
                shape = model_shape(target)
                if source == target:
                    errors, direction = held_out_errors(profiles[source], measured[target], shape), \
                        f"{source} held-out halves"
                else:
                    errors, direction = transfer_errors(profiles[source], measured[target], shape), \
                        f"{source} -> {target}"
                frames.append(errors.assign(direction=direction, pattern=str(pattern)))
    if not frames:
        from nmsim.errors import NmsimError

        raise NmsimError(f"no pattern of {', '.join(str(p) for p in patterns)} has committed traces of every model "
                         f"({', '.join(models)}) under {root}; build them with `nmsim traces build --all --model M`")
    errors = pd.concat(frames, ignore_index=True)
    kind = errors.quantity.where(errors.quantity == "mac_slots_per_position", "union_fraction")
    summary = errors.assign(kind=kind).groupby(["direction", "pattern", "kind"], sort=False).abs_error.agg(
        ["mean", "max", "count"]).reset_index()
    return summary, errors
