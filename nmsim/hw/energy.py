"""Energy of one GEMM from action counts, Accelergy-ERT style: Σ actions × pJ per action.

Per-action energies come from ``calibration/cells.yaml`` (the ``energy`` table), each scaled from its node to
``spec.technology_nm`` by the calibration's ``node_scaling.energy`` (first order: linear in the node) unless the
entry says ``scales_with_node: false`` (DRAM):

- ``mac``: macs × E_mac + gated_macs × E_mac × E_gated / E_mac(INT8) (Sparseloop's ratio, about 3 %), with E_mac
  built like the datapath (:func:`mac_terms`): a multiply of the operand type (Horowitz ISSCC 2014), its share of
  the dot-product tree's integer adds and 1/D of the accumulator add (FP32, FP16 or INT32);
- ``selector``: selector_groups × comparators of the ``spec.sparsity.selector`` network for groups of
  ``selector_group_size`` × E_compare(32 bit) × w / 32 (linear in width).
- one component per memory level: bytes × 8 × pJ per bit. The outermost level by its ``technology``: HBM2 3.97
  pJ/bit (O'Connor et al. MICRO 2017), HBM2e and HBM3 derived from it and from HBM3E, DRAM 8 pJ/bit
  (Sparseloop); an on-chip level reads an SRAM of its capacity per core, log-log between Horowitz's 8 KB, 32 KB
  and 1 MB read energies;
- ``wires``: every byte read from a level other than the innermost crosses the die on global wires on its way in
  (memory PHY at the die's edge → L2, L2 → a core): bits × pJ per bit and mm × half the side of the die
  (:func:`wire_mm`, the mean Manhattan distance from a point of a square die to its centre), the die from
  :func:`nmsim.hw.die.design_area_levels`. Wires inside a core (innermost level → datapath) are in the SRAM
  read energy.

Range: as for area (:mod:`nmsim.hw.area`): each entry's [low, high] factor and the exponent range's ends give
bounds on each component and the total.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from nmsim.errors import NmsimError
from nmsim.hw.area import Calibration, Terms, load_calibration, tree_adder_bits, value_range
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
    name: str  # "mac", "selector", a memory level's name or "wires"
    kind: str  # "compute", "selector", "memory" or "wire"
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


def mac_terms(spec: AcceleratorSpec, cal: Calibration) -> Terms:
    """One MAC as the datapath builds it (:func:`nmsim.hw.area._mac_array`): a multiply of the operand type, its
    share of the D−1 integer adds of the dot-product tree (product bits + ⌈log2 D⌉ wide) and 1/D of the
    accumulator add (FP32, FP16 or INT32)."""
    compute = spec.compute
    value, accumulator, d = compute.value, compute.accumulator_type, compute.dot_product_width
    add = cal.energy["int_add"]
    terms = [(cal.energy[f"{value}_multiply"], 1.0)]
    if d > 1:
        terms.append((add, (d - 1) / d * tree_adder_bits(compute) / add.width_bits))
    if accumulator == "int32":
        terms.append((add, 1 / d))
    else:
        terms.append((cal.energy[f"{accumulator}_add"], 1 / d))
    return tuple(terms)


def _mac_terms(counts: ActionCounts, spec: AcceleratorSpec, cal: Calibration) -> Terms:
    """The MACs at :func:`mac_terms` each; a gated or skipped slot at the Sparseloop ratio of a gated to a full
    INT8 MAC (about 3 %)."""
    per_mac = mac_terms(spec, cal)
    full = sum(entry.value * quantity for entry, quantity in per_mac)
    gated = cal.energy["mac_gated_8bit"]
    ratio = full / cal.energy["mac_8bit"].value
    return tuple((entry, quantity * counts.macs) for entry, quantity in per_mac) + \
        ((gated, counts.gated_macs * ratio),)


SRAM_SIZES = (("sram_8KiB_read", 8 << 10), ("sram_32KiB_read", 32 << 10), ("sram_1MiB_read", 1 << 20))


def sram_bit_terms(capacity_bytes: float, cal: Calibration) -> Terms:
    """One bit read from an SRAM of ``capacity_bytes``: log-log between the table's sizes (the nearest two beyond
    them), as a weighted pair of the neighbouring entries so each keeps its source, node and range."""
    sizes = [(cal.energy[name], size) for name, size in SRAM_SIZES]
    if capacity_bytes <= sizes[0][1]:
        low, high = sizes[0], sizes[1]
    elif capacity_bytes >= sizes[-1][1]:
        low, high = sizes[-2], sizes[-1]
    else:
        low, high = next((a, b) for a, b in zip(sizes, sizes[1:]) if a[1] <= capacity_bytes <= b[1])
    t = math.log(capacity_bytes / low[1]) / math.log(high[1] / low[1])
    per_bit = math.exp((1 - t) * math.log(low[0].value / low[0].width_bits) + t * math.log(
        high[0].value / high[0].width_bits))
    nearer = low[0] if t < 0.5 else high[0]  # counted in the nearer entry, whose source, scaling and range apply
    return ((nearer, per_bit / nearer.value),)


@functools.lru_cache(maxsize=256)
def wire_mm(spec: AcceleratorSpec) -> float:
    """Mean global-wire length in mm a byte travels between two levels of ``spec``: the mean Manhattan distance
    from a uniformly placed point of a square die to its centre, half the die's side. The die is
    :func:`nmsim.hw.die.design_area_levels`'s without the sparse front end (under 1 % of it), so a design's dense
    and sparse runs see the same wires."""
    from nmsim.hw.die import design_area_levels  # die imports area, as this module does; kept local to stay light
    from nmsim.hw.spec import NO_SPARSITY

    return math.sqrt(design_area_levels(dataclasses.replace(spec, sparsity=NO_SPARSITY)).die.total_mm2) / 2


def _wire_terms(counts: ActionCounts, spec: AcceleratorSpec, cal: Calibration) -> tuple[Terms, str]:
    innermost = spec.memory[-1].name if len(spec.memory) > 1 else None
    crossing = sum(moved for name, moved in counts.bytes_by_level if name != innermost)
    if not crossing:
        return (), "no bytes cross the die"
    entry, length = cal.energy["wire_mm"], wire_mm(spec)
    note = (f"{crossing:g} bytes over {length:.1f} mm of global wire at {entry.value:g} pJ/bit/mm "
            "(half the die's side)")
    return ((entry, crossing * BITS_PER_BYTE * length / entry.width_bits),), note


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
    cores = spec.compute.cores or spec.compute.units
    capacity = {level.name: level.capacity_bytes for level in spec.memory}
    for name, moved in counts.bytes_by_level:
        if name == levels[0]:  # off chip: HBM or DRAM, by its technology
            entry = cal.energy[f"{spec.memory[0].technology}_access"]
            terms = ((entry, moved * BITS_PER_BYTE / entry.width_bits),)
            per_bit, label = entry.value / entry.width_bits, entry.name
        else:  # on chip: an SRAM of the level's capacity per core
            bit = sram_bit_terms(capacity[name] / cores, cal)
            terms = tuple((entry, quantity * moved * BITS_PER_BYTE) for entry, quantity in bit)
            per_bit = sum(entry.value * quantity for entry, quantity in bit)
            label = f"SRAM of {capacity[name] / cores / 1024:.0f} KiB per core"
        parts.append((name, "memory", terms, f"{moved:g} bytes at {per_bit:.3g} pJ/bit at 45 nm ({label})"))
    parts.append(("wires", "wire", *_wire_terms(counts, spec, cal)))
    node, scaling = spec.technology_nm, cal.energy_scaling
    components = tuple(EnergyComponent(name, kind, *value_range(terms, node, scaling), note)
                       for name, kind, terms, note in parts)
    total = value_range(tuple(t for _, _, terms, _ in parts for t in terms), node, scaling)
    return EnergyReport(spec.name, node, components, *total)


def kernel_energy_pJ(spec: AcceleratorSpec, tensor_flops: float, vector_flops: float, offchip_bytes: float,
                     calibration: Calibration | None = None) -> float:
    """Energy of the non-GEMM work of a step (attention, norms, activations, softmax, communication): its
    tensor-core FLOPs at the design's MAC (2 FLOPs each, :func:`mac_terms`), its vector FLOPs at an FP32 FMA (a
    multiply and an add per 2 FLOPs), and its bytes through the outermost level with their wires; pJ at the
    design's node. Register files and operand delivery inside a core are not counted, as for the GEMMs."""
    cal = calibration if calibration is not None else load_calibration()
    counts = ActionCounts(macs=tensor_flops / 2, bytes_by_level=((spec.memory[0].name, offchip_bytes),))
    fma = ((cal.energy["fp32_multiply"], vector_flops / 2), (cal.energy["fp32_add"], vector_flops / 2))
    return gemm_energy(counts, spec, cal).total_pJ + value_range(fma, spec.technology_nm, cal.energy_scaling)[0]
