"""Which hardware parameter moves a pattern-pair decision (8:16 versus 16:32 by default), and where it breaks even.

16:32 keeps more accuracy than 8:16 at the same density but costs more area (wider muxes, a deeper selector,
more metadata) and more fill cycles. The figure of merit is throughput per datapath area, relative to the same
design run dense: ``efficiency = speedup / (1 + area overhead)``. The ratio of 16:32's efficiency to 8:16's is
below 1 when 16:32 buys its accuracy with area and time; where it reaches 1 (the break-even), 16:32 is the better
choice outright. One parameter at a time is scaled on both native designs of the run (:func:`run_pairs`; any
pair with ``nmsim run --sensitivity-pairs``), everything else at its preset value.
:func:`sensitivity_cases` says which simulation cases that takes; :func:`sensitivity` reads their results.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nmsim.errors import NmsimError
from nmsim.hw.die import design_area_levels
from nmsim.hw.spec import DEFAULT_VALUE_TYPE, AcceleratorSpec
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import PREFILL_SEQ_TOKENS
from nmsim.sim.cases import SimCase, SimulationResults

FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
PHASES = (("prefill", 1), ("decode", 4))  # (phase, batch): a 512-token prompt; a decode step of 4 sequences
DEFAULT_PAIR = (parse_pattern("8:16"), parse_pattern("16:32"))


def pair_label(a: Pattern, b: Pattern) -> str:
    """How the tables name a pair: ``8:16 vs 16:32``."""
    return f"{a} vs {b}"


@dataclass(frozen=True)
class Pair:
    """Two patterns on their native designs of the run: ``b``'s efficiency over ``a``'s is the ratio."""

    a: Pattern
    design_a: AcceleratorSpec
    b: Pattern
    design_b: AcceleratorSpec

    @property
    def label(self) -> str:
        return pair_label(self.a, self.b)

    @property
    def slug(self) -> str:
        return f"{self.a.slug}_vs_{self.b.slug}"

    def sides(self) -> tuple[tuple[str, Pattern, AcceleratorSpec], ...]:
        return (("a", self.a, self.design_a), ("b", self.b, self.design_b))


def run_pairs(natives: dict[Pattern, AcceleratorSpec], requested: tuple[tuple[Pattern, Pattern], ...] = ()
              ) -> tuple[Pair, ...]:
    """The pairs the analysis runs on, on the run's own native designs: those asked for (each pattern needs its
    native activation design in the run), else 8:16 vs 16:32 when the run has both natives, else none."""
    for first, second in requested:
        missing = [str(p) for p in (first, second) if p not in natives]
        if missing:
            raise NmsimError(f"sensitivity pair {first}/{second}: no native activation design for {', '.join(missing)} "
                             f"among the run's designs (natives: {', '.join(str(p) for p in natives) or 'none'})")
    pairs = requested or ((DEFAULT_PAIR,) if all(p in natives for p in DEFAULT_PAIR) else ())
    return tuple(Pair(x, natives[x], y, natives[y]) for x, y in pairs)


@dataclass(frozen=True)
class Parameter:
    key_path: str
    label: str
    unit: str = "× preset"  # of ``x``: a factor on each design's preset value, or the unit of absolute values
    values: tuple[float, ...] = ()  # absolute values; empty: factors × each design's preset value
    integer: bool = False
    factors: tuple[float, ...] = FACTORS


PARAMETERS = (
    Parameter("memory[0].bandwidth_GBps", "off-chip bandwidth"),
    Parameter("sparsity.selector_groups_per_cycle", "selector throughput", integer=True),
    Parameter("sustained_frequency_GHz", "clock frequency"),
    Parameter("memory[2].capacity_KiB", "on-chip buffer capacity", factors=(0.75, 1.0, 2.0, 4.0)),
    Parameter("compute.value_bits", "value width", unit="bits", values=(4, 8, 16), integer=True),
)


def _preset_value(spec: AcceleratorSpec, key_path: str) -> float:
    values = {"memory[0].bandwidth_GBps": spec.memory[0].bandwidth_GBps,
              "sparsity.selector_groups_per_cycle": spec.sparsity.selector_groups_per_cycle,
              "sustained_frequency_GHz": spec.clock_GHz,
              "memory[2].capacity_KiB": spec.memory[-1].capacity_bytes / 1024,
              "compute.value_bits": spec.compute.value_bits}
    return values[key_path]


def _settings(parameter: Parameter, spec: AcceleratorSpec) -> list[tuple[float, float]]:
    """(x on the plot, the value given to ``spec``) for each step of ``parameter``."""
    if parameter.values:
        return [(v, v) for v in parameter.values]
    base = _preset_value(spec, parameter.key_path)
    steps = []
    for factor in parameter.factors:
        value = base * factor
        steps.append((factor, max(1, round(value)) if parameter.integer else value))
    return steps


def _overrides(key_path: str, value: float) -> dict[str, object]:
    """The design keys one step sets: a value width also sets the operand and accumulator types it implies
    (4 and 8 bits: INT4/INT8 into INT32; 16: FP16 into FP32)."""
    if key_path != "compute.value_bits":
        return {key_path: value}
    value_type = DEFAULT_VALUE_TYPE[int(value)]
    return {key_path: value, "compute.value_type": value_type,
            "compute.accumulator": "int32" if value_type.startswith("int") else "fp32"}


@dataclass(frozen=True)
class _Step:
    parameter: Parameter
    x: float  # in parameter.unit
    x_relative: float  # x over the first design's preset value (x itself for factors)
    values: tuple[float, ...]  # the value given to each design of the pair
    specs: tuple[AcceleratorSpec, ...]  # each design of the pair with that value


def _with(spec: AcceleratorSpec, key_path: str, value: float) -> AcceleratorSpec:
    """``spec`` with one parameter set, read again from its file so every check applies."""
    return AcceleratorSpec.from_name(spec.source or spec.name, _overrides(key_path, value))


@functools.cache
def _steps(pair: Pair, parameters: tuple[Parameter, ...]) -> tuple[_Step, ...]:
    """Every step of every parameter, with both designs built once."""
    designs = (pair.design_a, pair.design_b)
    steps = []
    for parameter in parameters:
        settings = [_settings(parameter, spec) for spec in designs]
        preset = _preset_value(designs[0], parameter.key_path)
        for index, (x, _) in enumerate(settings[0]):
            values = tuple(setting[index][1] for setting in settings)
            specs = tuple(_with(spec, parameter.key_path, value) for spec, value in zip(designs, values))
            steps.append(_Step(parameter, x, x / preset if parameter.values else x, values, specs))
    return tuple(steps)


def _case(spec: AcceleratorSpec, pattern: Pattern, phase: str, batch: int) -> SimCase:
    return SimCase(spec, pattern, phase, batch, PREFILL_SEQ_TOKENS)


def sensitivity_cases(pairs: tuple[Pair, ...], parameters: tuple[Parameter, ...] = PARAMETERS) -> list[SimCase]:
    """What :func:`sensitivity` reads: both designs of each pair at every step, in each of :data:`PHASES`."""
    return [_case(spec, pattern, phase, batch) for pair in pairs for step in _steps(pair, parameters)
            for phase, batch in PHASES for spec, pattern in zip(step.specs, (pair.a, pair.b))]


def sensitivity(results: SimulationResults, pairs: tuple[Pair, ...], parameters: tuple[Parameter, ...] = PARAMETERS,
                area_level: str = "die") -> pd.DataFrame:
    """One row per pair, parameter step and phase: ``x`` (in ``unit``: the factor, or the absolute value),
    ``x_relative`` (x over the first design's preset value), each side's design, statistics, speedup, area overhead
    and efficiency (``_a``: the first pattern, ``_b``: the second), and ``efficiency_ratio`` (b over a)."""
    rows = []
    for pair in pairs:
        for step in _steps(pair, parameters):
            record = {"pair": pair.label, "pattern_a": str(pair.a), "design_a": pair.design_a.name,
                      "pattern_b": str(pair.b), "design_b": pair.design_b.name, "parameter": step.parameter.key_path,
                      "label": step.parameter.label, "unit": step.parameter.unit, "x": step.x,
                      "x_relative": step.x_relative, "value_a": step.values[0], "value_b": step.values[1]}
            for phase, batch in PHASES:
                row = dict(record, phase=phase, batch=batch)
                for (side, pattern, _), spec in zip(pair.sides(), step.specs):
                    found = results.totals_of(_case(spec, pattern, phase, batch))
                    overhead = design_area_levels(spec).overhead_pct(area_level)
                    row[f"statistics_{side}"] = found.statistics
                    row[f"speedup_{side}"] = found.speedup_vs_dense_same_design
                    row[f"area_overhead_{side}_pct"] = overhead
                    row[f"efficiency_{side}"] = found.speedup_vs_dense_same_design / (1 + overhead / 100)
                row["efficiency_ratio"] = row["efficiency_b"] / row["efficiency_a"]
                rows.append(row)
    return pd.DataFrame(rows)


def break_even(table: pd.DataFrame) -> pd.DataFrame:
    """Per pair, parameter and phase: the ratio's range over the steps and the x (in ``unit``) where it crosses 1
    (log-linear interpolation between steps; NaN when it does not cross in the range swept)."""
    rows = []
    if table.empty:
        return pd.DataFrame(columns=["pair", "parameter", "label", "unit", "phase", "ratio_min", "ratio_max",
                                     "ratio_span", "break_even_x"])
    for (pair, parameter, phase), group in table.groupby(["pair", "parameter", "phase"], sort=False):
        group = group.sort_values("x")
        x, ratio = group.x.to_numpy(float), group.efficiency_ratio.to_numpy(float)
        crossing = math.nan
        for i in range(len(x) - 1):
            if (ratio[i] - 1) * (ratio[i + 1] - 1) <= 0 and ratio[i] != ratio[i + 1]:
                t = (1 - ratio[i]) / (ratio[i + 1] - ratio[i])
                crossing = float(np.exp(np.log(x[i]) + t * (np.log(x[i + 1]) - np.log(x[i]))))
                break
        rows.append({"pair": pair, "parameter": parameter, "label": group.label.iloc[0], "unit": group.unit.iloc[0],
                     "phase": phase, "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
                     "ratio_span": float(ratio.max() - ratio.min()), "break_even_x": crossing})
    return pd.DataFrame(rows)
