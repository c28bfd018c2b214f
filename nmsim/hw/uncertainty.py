"""How much of the area and energy ranges the constants nobody re-checked are responsible for.

Every constant in ``calibration/cells.yaml`` and ``calibration/die.yaml`` carries a provenance tag ([V] checked in
its source, [A] from a paper's or tool's abstract or model, [M] recalled, [D] derived here) and [low, high] factors.
:func:`unchecked_only` keeps the factors of the [M] and [D] constants and sets every other one to exactly 1, so
the ranges computed with it are the part of the uncertainty that the recalled and derived constants add to the
totals; :func:`uncertainty_rows` puts that beside the full range for a few designs (``docs/area_model.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from types import MappingProxyType

from nmsim.hw.area import _TAG, Calibration, load_calibration
from nmsim.hw.die import DieCalibration, design_area_levels, load_die_calibration
from nmsim.hw.energy import ActionCounts, gemm_energy
from nmsim.hw.spec import AcceleratorSpec

UNCHECKED_TAGS = ("M", "D")
REFERENCE_GEMM = 4096  # M = K = N of the dense GEMM whose energy per FMA the table reports
UNCERTAINTY_DESIGNS = ("a100-80gb-sxm", "act-8of16", "h100-sxm")


def provenance(source: str) -> str:
    """The provenance tag of a ``source`` text: V, A, M or D."""
    return _TAG.search(source).group(1)


def _keep(entry, tags: tuple[str, ...]):
    return entry if provenance(entry.source) in tags else dataclasses.replace(entry, low=1.0, high=1.0)


def unchecked_only(calibration: Calibration | None = None, die_calibration: DieCalibration | None = None,
                   tags: tuple[str, ...] = UNCHECKED_TAGS) -> tuple[Calibration, DieCalibration]:
    """Copies of the calibrations in which only constants tagged ``tags`` keep their [low, high] factors (the node
    scaling tables and the energy exponent range included); every other factor is 1."""
    cal = calibration if calibration is not None else load_calibration()
    die = die_calibration if die_calibration is not None else load_die_calibration()
    logic, sram = _keep(cal.logic_scaling, tags), _keep(cal.sram_scaling, tags)
    energy_scaling = cal.energy_scaling
    if provenance(energy_scaling.source) not in tags:
        energy_scaling = dataclasses.replace(energy_scaling, exponent_low=energy_scaling.exponent,
                                             exponent_high=energy_scaling.exponent)
    cells = dataclasses.replace(
        cal, area=MappingProxyType({name: _keep(e, tags) for name, e in cal.area.items()}),
        energy=MappingProxyType({name: _keep(e, tags) for name, e in cal.energy.items()}),
        logic_scaling=logic, sram_scaling=sram, energy_scaling=energy_scaling)
    die = dataclasses.replace(die, logic=logic, sram=sram,
                              entries={name: _keep(e, tags) for name, e in die.entries.items()})
    return cells, die


def reference_energy_per_fma(spec: AcceleratorSpec, calibration: Calibration | None = None
                             ) -> tuple[float, float, float]:
    """(nominal, low, high) pJ per FMA of a dense REFERENCE_GEMM³ GEMM on ``spec`` as nmsim simulates it."""
    from nmsim.sim.simulate import simulate_gemm  # the simulator's byte counts; imported here to keep hw below sim
    from nmsim.sim.usage import DENSE_USE
    from nmsim.sim.workload import Gemm

    n = REFERENCE_GEMM
    sim = simulate_gemm(Gemm(0, "q", "prefill", n, n, n), spec, DENSE_USE)
    counts = ActionCounts(macs=sim.mac_slots, bytes_by_level=tuple(
        (level.name, moved.total) for level, moved in zip(spec.memory, sim.level_bytes)))
    energy = gemm_energy(counts, spec, calibration)
    fmas = n ** 3
    return energy.total_pJ / fmas, energy.total_low_pJ / fmas, energy.total_high_pJ / fmas


def uncertainty_rows(names: Iterable[str] = UNCERTAINTY_DESIGNS) -> list[dict[str, object]]:
    """Per design and quantity (datapath, core and die mm², the die-level sparse overhead %, pJ per FMA): the
    nominal value, the range with every constant's factors and the range with the [M] and [D] ones alone."""
    full_cells, full_die = load_calibration(), load_die_calibration()
    cells, die = unchecked_only(full_cells, full_die)
    rows = []
    for name in names:
        spec = AcceleratorSpec.from_name(name)
        ranges = {}
        for label, (c, d) in (("all", (full_cells, full_die)), ("unchecked", (cells, die))):
            levels = design_area_levels(spec, c, d)
            ranges[label] = {
                "datapath_mm2": (levels.datapath.total_mm2, levels.datapath.total_low_mm2,
                                 levels.datapath.total_high_mm2),
                "core_mm2": (levels.core.total_mm2, levels.core.low_mm2, levels.core.high_mm2),
                "die_mm2": (levels.die.total_mm2, levels.die.low_mm2, levels.die.high_mm2),
                "die_overhead_pct": (levels.die.overhead_pct, *levels.die.overhead_range_pct),
                "pJ_per_fma": reference_energy_per_fma(spec, c),
            }
        for quantity, (nominal, low, high) in ranges["all"].items():
            _, unchecked_low, unchecked_high = ranges["unchecked"][quantity]
            rows.append({"design": name, "quantity": quantity, "nominal": nominal, "low_all": low,
                         "high_all": high, "low_unchecked": unchecked_low, "high_unchecked": unchecked_high})
    return rows


def uncertainty_markdown(names: Iterable[str] = UNCERTAINTY_DESIGNS) -> str:
    """:func:`uncertainty_rows` as the markdown table of ``docs/area_model.md``."""
    lines = ["| design | quantity | nominal | range, all constants | range, [M] and [D] constants only |",
             "| --- | --- | --- | --- | --- |"]
    for row in uncertainty_rows(names):
        digits = 2 if row["quantity"] in ("die_overhead_pct", "pJ_per_fma") else 1 if row["nominal"] > 100 else 3
        value = f"{{:.{digits}f}}"
        span = [value.format(row[key]) for key in ("low_all", "high_all", "low_unchecked", "high_unchecked")]
        lines.append(f"| {row['design']} | {row['quantity']} | {value.format(row['nominal'])} | {span[0]}–{span[1]} "
                     f"| {span[2]}–{span[3]} |")
    return "\n".join(lines)
