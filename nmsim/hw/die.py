"""Area at three levels: the MAC datapath (:mod:`nmsim.hw.area`), the core (SM) and the die.

A **core** holds its share of the tensor datapath and of the sparse front end (selector, metadata, muxes, extra
operand buffering), its vector lanes (FP32 FMA cells of ``calibration/cells.yaml``) and their control, its register
file and innermost memory (SRAM) and, on a GPU (tensor-core) design, the rest of an SM (schedulers, load/store,
FP64/INT32 units: one constant calibrated on the A100 die shot). The **die** holds every physical core
(``die.physical_cores``: disabled SMs take area too), the caches between HBM and the cores, the on-chip interconnect
(per core), HBM PHYs and controllers per stack, chip-to-chip PHYs per link and the rest (pads, PCIe, fuses).

Die-level constants live in ``calibration/die.yaml`` (value, source, date, uncertainty, and how each scales: with
logic density, with SRAM bit-cell area, or not at all), calibrated at 7 nm on the A100 die shot and checked on the
H100 at 4 nm; a design outside those nodes gets a warning in the report. Scaling between nodes uses published
densities (``nodes``), logic and SRAM separately, interpolated log-log between listed nodes.

The sparse overhead at each level is the sparse front end over the same design without it: at the datapath as
before, at the core over the dense core, at the die over the dense die.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from nmsim.errors import NmsimError
from nmsim.hw.area import (AreaReport, Calibration, DensityScaling, _number, _pair, _source, cell_um2,
                           design_area, load_calibration)
from nmsim.hw.spec import AcceleratorSpec
from nmsim.yaml_io import ConfigError, LinedDict, check_keys, load_yaml

DIE_FILE = Path(__file__).with_name("calibration") / "die.yaml"
DIE_ENTRIES = ("realized_logic_MTr_per_mm2", "sram_mm2_per_MiB", "control_MTr_per_vector_lane",
               "core_interconnect_MTr", "core_other_mm2", "hbm_phy_mm2", "memory_controller_mm2", "nvlink3_phy_mm2",
               "nvlink4_phy_mm2", "pcie4_phy_mm2", "die_other_mm2")
SCALES = ("logic", "sram", "none")
AREA_LEVELS = ("datapath", "core", "die")
MIB = 1 << 20


@dataclass(frozen=True)
class DieEntry:
    """One die-level constant at ``node_nm`` (unit in its name), how it scales and its [low, high] factors."""

    name: str
    value: float
    node_nm: float
    scales_as: str
    low: float
    high: float
    source: str


@dataclass(frozen=True)
class DieCalibration:
    """``calibration/die.yaml``: its constants, the nodes it was calibrated and checked at, and the density
    tables (from ``cells.yaml``) that scale them."""

    path: str
    validated_nodes_nm: tuple[float, float]
    logic: DensityScaling
    sram: DensityScaling
    entries: dict[str, DieEntry]

    def scale(self, kind: str, from_nm: float, to_nm: float) -> float:
        """Area factor from ``from_nm`` to ``to_nm`` for a block that scales as ``kind``."""
        if kind == "none":
            return 1.0
        return (self.logic if kind == "logic" else self.sram).factor(from_nm, to_nm)

    def at(self, name: str, node_nm: float) -> float:
        """Entry ``name`` (an area) at ``node_nm``."""
        entry = self.entries[name]
        return entry.value * self.scale(entry.scales_as, entry.node_nm, node_nm)

    def density_MTr_per_mm2(self, node_nm: float) -> float:
        """Realized logic density at ``node_nm``: it grows as areas shrink."""
        entry = self.entries["realized_logic_MTr_per_mm2"]
        return entry.value / self.scale(entry.scales_as, entry.node_nm, node_nm)


@functools.cache
def load_die_calibration(path: str | Path = DIE_FILE) -> DieCalibration:
    """Read ``calibration/die.yaml`` strictly: unknown, missing or duplicate keys name the file, line and key."""
    file = Path(path)
    data = load_yaml(file)
    top = {"version", "validated_nodes_nm", "entries"}
    if not isinstance(data, LinedDict):
        raise ConfigError(file, None, "", f"expected a mapping with keys {', '.join(sorted(top))}")
    check_keys(data, file, "", top, top)
    low, high = _pair(data, file, "", "validated_nodes_nm")
    entries_raw = data["entries"]
    check_keys(entries_raw, file, "entries", set(DIE_ENTRIES), set(DIE_ENTRIES))
    entries = {}
    for name in DIE_ENTRIES:
        raw, path_ = entries_raw[name], f"entries.{name}"
        keys = {"value", "node_nm", "scales_as", "source", "date", "uncertainty", "note"}
        check_keys(raw, file, path_, keys, keys - {"note"})
        if raw["scales_as"] not in SCALES:
            raise ConfigError(file, raw.lines.get("scales_as"), f"{path_}.scales_as",
                              f"{raw['scales_as']!r}: choose {', '.join(SCALES)}")
        factors = _pair(raw, file, path_, "uncertainty")
        entries[name] = DieEntry(name, _number(raw, file, path_, "value"), _number(raw, file, path_, "node_nm"),
                                 raw["scales_as"], *factors, _source(raw, file, path_))
    cells = load_calibration()
    return DieCalibration(str(file), (low, high), cells.logic_scaling, cells.sram_scaling, entries)


@dataclass(frozen=True)
class LevelArea:
    """One level's components (mm² nominal, low, high) and its sparse overhead."""

    components: dict[str, tuple[float, float, float]]
    sparse_mm2: float  # of the total, what N:M support adds
    sparse_low_mm2: float = 0.0
    sparse_high_mm2: float = 0.0

    @property
    def total_mm2(self) -> float:
        return sum(value for value, _, _ in self.components.values())

    @property
    def low_mm2(self) -> float:
        return sum(low for _, low, _ in self.components.values())

    @property
    def high_mm2(self) -> float:
        return sum(high for _, _, high in self.components.values())

    @property
    def overhead_pct(self) -> float:
        return 100 * self.sparse_mm2 / (self.total_mm2 - self.sparse_mm2)

    @property
    def overhead_range_pct(self) -> tuple[float, float]:
        """(low, high) overhead: the sparse extras' low over the dense part's high, and the reverse."""
        low = 100 * self.sparse_low_mm2 / (self.high_mm2 - self.sparse_high_mm2)
        high = 100 * self.sparse_high_mm2 / (self.low_mm2 - self.sparse_low_mm2)
        return low, high


@dataclass(frozen=True)
class DesignArea:
    """A design's area at three levels: the datapath report, one core, the die; warnings for the report."""

    design: str
    technology_nm: int
    datapath: AreaReport
    core: LevelArea
    die: LevelArea
    physical_cores: int
    warnings: tuple[str, ...]

    def overhead_pct(self, level: str = "die") -> float:
        """The sparse area overhead at ``level`` (datapath, core or die), in %."""
        if level == "datapath":
            return self.datapath.overhead_pct
        if level not in AREA_LEVELS:
            raise NmsimError(f"area level {level!r}: choose {', '.join(AREA_LEVELS)}")
        return getattr(self, level).overhead_pct

    def level_summary(self, level: str) -> dict[str, float]:
        """Total mm², dense mm², overhead % and its range at ``level``."""
        if level == "datapath":
            d = self.datapath
            return {"area_mm2": d.total_mm2, "dense_area_mm2": d.dense_mm2, "overhead_pct": d.overhead_pct,
                    "overhead_low_pct": d.overhead_low_pct, "overhead_high_pct": d.overhead_high_pct}
        area = getattr(self, level)
        low, high = area.overhead_range_pct
        return {"area_mm2": area.total_mm2, "dense_area_mm2": area.total_mm2 - area.sparse_mm2,
                "overhead_pct": area.overhead_pct, "overhead_low_pct": low, "overhead_high_pct": high}

    def rows(self) -> list[dict[str, object]]:
        """One row per core and die component: design, level, component, area_mm2, low_mm2, high_mm2."""
        rows = []
        for level, area in (("core", self.core), ("die", self.die)):
            for name, (value, low, high) in area.components.items():
                rows.append({"design": self.design, "level": level, "component": name, "area_mm2": value,
                             "low_mm2": low, "high_mm2": high})
        return rows


def _entry(cal: DieCalibration, name: str, node: float, count: float = 1.0) -> tuple[float, float, float]:
    entry = cal.entries[name]
    value = cal.at(name, node) * count
    return value, value * entry.low, value * entry.high


def _transistors(cal: DieCalibration, name: str, node: float, count: float) -> tuple[float, float, float]:
    """mm² of ``count`` × entry ``name`` million transistors at ``node``."""
    entry, density = cal.entries[name], cal.density_MTr_per_mm2(node)
    value = count * entry.value / density  # a transistor count does not scale; the density does
    return value, value * entry.low, value * entry.high


def _sram(cal: DieCalibration, node: float, bytes_: float) -> tuple[float, float, float]:
    return _entry(cal, "sram_mm2_per_MiB", node, bytes_ / MIB)


def design_area_levels(spec: AcceleratorSpec, calibration: Calibration | None = None,
                       die_calibration: DieCalibration | None = None) -> DesignArea:
    """``spec``'s area as a datapath, one core and the die (see the module docstring); the packaged calibration
    files unless given."""
    cells = calibration if calibration is not None else load_calibration()
    cal = die_calibration if die_calibration is not None else load_die_calibration()
    node = spec.technology_nm
    datapath = design_area(spec, cells)
    cores = spec.compute.cores or spec.compute.units
    die = spec.die
    physical = die.physical_cores if die is not None and die.physical_cores else cores
    warnings = []
    low_node, high_node = cal.validated_nodes_nm
    if not low_node <= node <= high_node:
        warnings.append(f"{spec.name}: {node} nm is outside the nodes the die-level constants were calibrated and "
                        f"checked at ({low_node:g}-{high_node:g} nm); its core and die areas are extrapolated")
    if die is None:
        warnings.append(f"{spec.name}: no `die` section, so its die area counts only its datapath, vector unit and "
                        "on-chip memories (no PHYs, controllers or interconnect)")
    sparse = (datapath.total_mm2 - datapath.dense_mm2) / cores
    mac = datapath.component("mac_array")
    sparse_low = (datapath.total_low_mm2 - mac.low_mm2) / cores
    sparse_high = (datapath.total_high_mm2 - mac.high_mm2) / cores

    def share(value: float, low: float, high: float) -> tuple[float, float, float]:
        return value / cores, low / cores, high / cores

    component = {
        "tensor_datapath": share(datapath.dense_mm2, mac.low_mm2, mac.high_mm2),
        "sparse_front_end": (sparse, sparse_low, sparse_high),
    }
    if spec.vector is not None:
        lanes = spec.vector.units * spec.vector.flops_per_cycle_per_unit / 2 / cores  # FMA lanes per core
        fma = [sum(cell_um2(cells, name, node, corner) for name in ("fp32_multiplier", "fp32_adder")) / 1e6
               for corner in ("nominal", "low", "high")]  # an FP32 FMA lane: a multiplier and an adder
        component["vector_lanes"] = tuple(lanes * value for value in fma)
        if spec.compute.kind == "tensor_core":  # a SIMT lane's share of the SM's issue and control logic
            component["vector_control"] = _transistors(cal, "control_MTr_per_vector_lane", node, lanes)
    register_file = die.register_file_KiB_per_core * 1024 if die is not None else 0.0
    if register_file:
        component["register_file"] = _sram(cal, node, register_file)
    if len(spec.memory) >= 2:
        component["core_memory"] = _sram(cal, node, spec.memory[-1].capacity_bytes / cores)
    if spec.compute.kind == "tensor_core":
        component["sm_other"] = _entry(cal, "core_other_mm2", node)
    core = LevelArea(component, sparse, sparse_low, sparse_high)

    caches = sum(level.capacity_bytes for level in spec.memory[1:-1])
    if die is not None and die.physical_cache_MiB:
        caches = die.physical_cache_MiB * MIB
    parts = {"cores": tuple(physical * v for v in (core.total_mm2, core.low_mm2, core.high_mm2))}
    if caches:
        parts["caches"] = _sram(cal, node, caches)
    if die is not None:
        parts["on_chip_interconnect"] = _transistors(cal, "core_interconnect_MTr", node, physical)
        if die.memory_stacks:
            parts["memory_phy"] = _entry(cal, "hbm_phy_mm2", node, die.memory_stacks)
            parts["memory_controllers"] = _entry(cal, "memory_controller_mm2", node, die.memory_stacks)
        if die.interconnect_links:
            parts["interconnect_phy"] = _entry(cal, f"{die.interconnect_phy}_phy_mm2", node, die.interconnect_links)
        parts["other"] = _entry(cal, "die_other_mm2", node)
    die_area = LevelArea(parts, sparse * physical, sparse_low * physical, sparse_high * physical)
    return DesignArea(spec.name, node, datapath, core, die_area, physical, tuple(warnings))


def preset_levels_markdown(names: list[str] | None = None) -> str:
    """A markdown table of the presets' area at the three levels (all of ``hw_configs/`` by default), as in
    ``docs/area_model.md``."""
    from nmsim.registry import design_names

    lines = ["| design | node (nm) | datapath mm² | over dense % | core (SM) mm² | over dense % | die mm² [low–high] "
             "| over dense % [low–high] |", "|" + " --- |" * 8]
    for name in design_names() if names is None else names:
        levels = design_area_levels(AcceleratorSpec.from_name(name))
        low, high = levels.die.overhead_range_pct
        lines.append(f"| {name} | {levels.technology_nm} | {levels.datapath.total_mm2:.3f} "
                     f"| {levels.datapath.overhead_pct:.1f} | {levels.core.total_mm2:.3f} "
                     f"| {levels.core.overhead_pct:.2f} | {levels.die.total_mm2:.1f} "
                     f"[{levels.die.low_mm2:.0f}–{levels.die.high_mm2:.0f}] | {levels.die.overhead_pct:.2f} "
                     f"[{low:.2f}–{high:.2f}] |")
    return "\n".join(lines)
