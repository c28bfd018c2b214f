"""Energy of one GEMM from action counts, Accelergy-ERT style: Σ actions × pJ per action.

Per-action energies come from ``calibration/cells.yaml`` (the ``energy`` table), each scaled from its node to
``spec.technology_nm`` by the calibration's ``node_scaling.energy`` (first order: linear in the node) unless the
entry says ``scales_with_node: false`` (DRAM):

- ``mac``: macs × E_mac(w) + gated_macs × E_mac(w) × E_gated(8 bit) / E_mac(8 bit), with w =
  ``compute.value_bits`` and E_mac looked up by width (``mac_<w>bit``); a gated or skipped slot keeps the
  INT8 ratio of the Sparseloop ERT (about 3% of a MAC).
- ``selector``: selector_groups × comparators of the ``spec.sparsity.selector`` network for groups of
  ``selector_group_size`` × E_compare(32 bit) × w / 32 (linear in width).
- one component per memory level: bytes × 8 × pJ per bit. Simplification: the outermost level of the design
  (``spec.memory[0]``, DRAM or HBM) uses the DRAM per-bit energy, every other level the on-chip SRAM per-bit
  energy (one 256-bit shared-memory read), whatever its size or port width.

Range: as for area (:mod:`nmsim.hw.area`): each entry's [low, high] factor and the exponent range's ends give
bounds on each component and the total.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmsim.errors import NmsimError
from nmsim.hw.area import Calibration, Terms, load_calibration, value_range
from nmsim.hw.complexity import selection_network
from nmsim.hw.spec import AcceleratorSpec

BITS_PER_BYTE = 8


@dataclass(frozen=True)
class ActionCounts:
    """What one GEMM (or any piece of work) did on a design."""

    macs: float  # MACs performed on non-skipped slots
    gated_macs: float = 0.0  # MAC slots issued but gated or skipped (e.g. zero operands)
    selector_groups: float = 0.0  # groups processed by the online top-N-of-M selector
    selector_group_size: int = 0  # M of those groups
    bytes_by_level: tuple[tuple[str, float], ...] = ()  # (memory level name, bytes moved there), outermost first

    def __post_init__(self):
        for name in ("macs", "gated_macs", "selector_groups"):
            if getattr(self, name) < 0:
                raise NmsimError(f"action counts: {name} is negative ({getattr(self, name)})")
        if self.selector_groups and self.selector_group_size < 2:
            raise NmsimError(f"action counts: {self.selector_groups} selector groups need a group size of at "
                             f"least 2, got {self.selector_group_size}")
        names = [name for name, _ in self.bytes_by_level]
        if len(set(names)) != len(names):
            raise NmsimError(f"action counts: memory levels repeat in {names}")
        for name, moved in self.bytes_by_level:
            if moved < 0:
                raise NmsimError(f"action counts: {moved} bytes at {name!r} is negative")


@dataclass(frozen=True)
class EnergyComponent:
    name: str  # "mac", "selector" or a memory level's name
    kind: str  # "compute", "selector" or "memory"
    nominal_pJ: float
    low_pJ: float
    high_pJ: float
    note: str = ""


@dataclass(frozen=True)
class EnergyReport:
    """Energy of one piece of work on one design at ``technology_nm``, per component and in total."""

    design: str
    technology_nm: int
    components: tuple[EnergyComponent, ...]
    total_pJ: float
    total_low_pJ: float
    total_high_pJ: float

    def component(self, name: str) -> EnergyComponent:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"{self.design} has no energy component {name!r} "
                       f"(it has {', '.join(c.name for c in self.components)})")

    def rows(self) -> list[dict[str, object]]:
        """One row per component plus a total: design, component, kind, energy_pJ, low_pJ, high_pJ, note."""
        rows = [{"design": self.design, "component": c.name, "kind": c.kind, "energy_pJ": c.nominal_pJ,
                 "low_pJ": c.low_pJ, "high_pJ": c.high_pJ, "note": c.note} for c in self.components]
        rows.append({"design": self.design, "component": "total", "kind": "total", "energy_pJ": self.total_pJ,
                     "low_pJ": self.total_low_pJ, "high_pJ": self.total_high_pJ, "note": ""})
        return rows


def _mac_terms(counts: ActionCounts, spec: AcceleratorSpec, cal: Calibration) -> Terms:
    w = spec.compute.value_bits
    mac, mac_8 = cal.by_width("energy", "mac", w), cal.by_width("energy", "mac", 8)
    gated = cal.energy["mac_gated_8bit"]
    return (mac, counts.macs), (gated, counts.gated_macs * mac.value / mac_8.value)


def _selector_terms(counts: ActionCounts, spec: AcceleratorSpec, cal: Calibration) -> tuple[Terms, str]:
    if not counts.selector_groups:
        return (), "no selector groups"
    if spec.sparsity.operand != "activation":
        raise NmsimError(f"design {spec.name!r} has no online selector (sparse operand: {spec.sparsity.operand}), "
                         f"but the counts have {counts.selector_groups:g} selector groups")
    net = selection_network(counts.selector_group_size, spec.sparsity.selector)
    comparator = cal.energy["comparator"]
    compares = counts.selector_groups * net.comparators
    note = f"{net.comparators} compares per group of {counts.selector_group_size} ({spec.sparsity.selector})"
    return ((comparator, compares * spec.compute.value_bits / comparator.width_bits),), note


def gemm_energy(counts: ActionCounts, spec: AcceleratorSpec, calibration: Calibration | None = None) -> EnergyReport:
    """Energy in pJ of the actions in ``counts`` on ``spec`` at ``spec.technology_nm`` (see the module docstring)."""
    cal = calibration if calibration is not None else load_calibration()
    levels = [level.name for level in spec.memory]
    unknown = [name for name, _ in counts.bytes_by_level if name not in levels]
    if unknown:
        raise NmsimError(f"action counts name memory level(s) {unknown} that design {spec.name!r} does not have "
                         f"(its levels, outermost first: {levels})")
    parts: list[tuple[str, str, Terms, str]] = [
        ("mac", "compute", _mac_terms(counts, spec, cal), f"{counts.macs:g} MACs, {counts.gated_macs:g} gated"),
        ("selector", "selector", *_selector_terms(counts, spec, cal)),
    ]
    for name, moved in counts.bytes_by_level:
        entry = cal.energy["dram_access" if name == levels[0] else "sram_read"]
        parts.append((name, "memory", ((entry, moved * BITS_PER_BYTE / entry.width_bits),),
                      f"{moved:g} bytes at {entry.value / entry.width_bits:.3g} pJ/bit ({entry.name})"))
    node, scaling = spec.technology_nm, cal.energy_scaling
    components = tuple(EnergyComponent(name, kind, *value_range(terms, node, scaling), note)
                       for name, kind, terms, note in parts)
    total = value_range(tuple(t for _, _, terms, _ in parts for t in terms), node, scaling)
    return EnergyReport(spec.name, node, components, *total)
