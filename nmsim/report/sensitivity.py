"""Which hardware parameter moves the 8:16-versus-16:32 decision, and where it breaks even.

16:32 keeps more accuracy than 8:16 at the same density but costs more area (wider muxes, a deeper selector,
more metadata) and more fill cycles. The figure of merit is throughput per datapath area, relative to the same
design run dense: ``efficiency = speedup / (1 + area overhead)``. The ratio of 16:32's efficiency to 8:16's is
below 1 when 16:32 buys its accuracy with area and time; where it reaches 1 (the break-even), 16:32 is the better
choice outright. One parameter at a time is scaled on both native designs, everything else at its preset value.
:func:`sensitivity_cases` says which simulation cases that takes; :func:`sensitivity` reads their results.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nmsim.hw.die import design_area_levels
from nmsim.hw.spec import DEFAULT_VALUE_TYPE, AcceleratorSpec
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import PREFILL_SEQ_TOKENS
from nmsim.sim.cases import SimCase, SimulationResults

PAIR = ((parse_pattern("8:16"), "act-8of16"), (parse_pattern("16:32"), "act-16of32"))
FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
PHASES = (("prefill", 1), ("decode", 4))  # (phase, batch): a 512-token prompt; a decode step of 4 sequences


@dataclass(frozen=True)
class Parameter:
    key_path: str
    label: str
    values: tuple[float, ...] = ()  # absolute values; empty: factors × each design's preset value
    integer: bool = False
    factors: tuple[float, ...] = FACTORS


PARAMETERS = (
    Parameter("memory[0].bandwidth_GBps", "off-chip bandwidth (× preset)"),
    Parameter("sparsity.selector_groups_per_cycle", "selector throughput (× preset)", integer=True),
    Parameter("sustained_frequency_GHz", "clock frequency (× preset)"),
    Parameter("memory[2].capacity_KiB", "on-chip buffer capacity (× preset)", factors=(0.75, 1.0, 2.0, 4.0)),
    Parameter("compute.value_bits", "value width (4, 8, 16 bits; × preset)", values=(4, 8, 16), integer=True),
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
    x: float
    x_relative: float
    values: tuple[float, ...]  # the value given to each design of PAIR
    specs: tuple[AcceleratorSpec, ...]  # each design of PAIR with that value


@functools.cache
def _steps(parameters: tuple[Parameter, ...]) -> tuple[_Step, ...]:
    """Every step of every parameter, with both designs built once."""
    presets = {pattern: AcceleratorSpec.from_name(name) for pattern, name in PAIR}
    steps = []
    for parameter in parameters:
        settings = {pattern: _settings(parameter, spec) for pattern, spec in presets.items()}
        preset = _preset_value(presets[PAIR[0][0]], parameter.key_path)
        for index, (x, _) in enumerate(settings[PAIR[0][0]]):
            values = tuple(settings[pattern][index][1] for pattern, _ in PAIR)
            specs = tuple(AcceleratorSpec.from_name(name, _overrides(parameter.key_path, value))
                          for (_, name), value in zip(PAIR, values))
            steps.append(_Step(parameter, x, x / preset if parameter.values else x, values, specs))
    return tuple(steps)


def _case(spec: AcceleratorSpec, pattern: Pattern, phase: str, batch: int) -> SimCase:
    return SimCase(spec, pattern, phase, batch, PREFILL_SEQ_TOKENS)


def sensitivity_cases(parameters: tuple[Parameter, ...] = PARAMETERS) -> list[SimCase]:
    """What :func:`sensitivity` reads: both designs of :data:`PAIR` at every step, in each of :data:`PHASES`."""
    return [_case(spec, pattern, phase, batch) for step in _steps(parameters) for phase, batch in PHASES
            for (pattern, _), spec in zip(PAIR, step.specs)]


def sensitivity(results: SimulationResults, parameters: tuple[Parameter, ...] = PARAMETERS,
                area_level: str = "die") -> pd.DataFrame:
    """One row per parameter step and phase: ``x`` (the factor, or the absolute value of a parameter given by
    values), ``x_relative`` (x over 8:16's preset value), both designs' speedup, area overhead and efficiency, and
    ``efficiency_ratio`` (16:32 over 8:16)."""
    rows = []
    for step in _steps(parameters):
        record = {"parameter": step.parameter.key_path, "label": step.parameter.label, "x": step.x,
                  "x_relative": step.x_relative}
        for (_, name), value in zip(PAIR, step.values):
            record[f"value_{name}"] = value
        for phase, batch in PHASES:
            row = dict(record, phase=phase, batch=batch)
            for (pattern, name), spec in zip(PAIR, step.specs):
                found = results.totals_of(_case(spec, pattern, phase, batch))
                speedup = found.speedup_vs_dense_same_design
                row[f"statistics_{name}"] = found.statistics
                overhead = design_area_levels(spec).overhead_pct(area_level)
                row[f"speedup_{name}"] = speedup
                row[f"area_overhead_{name}_pct"] = overhead
                row[f"efficiency_{name}"] = speedup / (1 + overhead / 100)
            row["efficiency_ratio"] = row[f"efficiency_{PAIR[1][1]}"] / row[f"efficiency_{PAIR[0][1]}"]
            rows.append(row)
    return pd.DataFrame(rows)


def break_even(table: pd.DataFrame) -> pd.DataFrame:
    """Per parameter and phase: the ratio's range over the steps and the x where it crosses 1 (log-linear
    interpolation between steps; NaN when it does not cross in the range swept)."""
    rows = []
    for (parameter, phase), group in table.groupby(["parameter", "phase"], sort=False):
        group = group.sort_values("x")
        x, ratio = group.x.to_numpy(float), group.efficiency_ratio.to_numpy(float)
        crossing = math.nan
        for i in range(len(x) - 1):
            if (ratio[i] - 1) * (ratio[i + 1] - 1) <= 0 and ratio[i] != ratio[i + 1]:
                t = (1 - ratio[i]) / (ratio[i + 1] - ratio[i])
                crossing = float(np.exp(np.log(x[i]) + t * (np.log(x[i + 1]) - np.log(x[i]))))
                break
        rows.append({"parameter": parameter, "label": group.label.iloc[0], "phase": phase,
                     "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
                     "ratio_span": float(ratio.max() - ratio.min()), "break_even_x": crossing})
    return pd.DataFrame(rows)
