"""Datapath area of an accelerator design, per component, at the design's node, with a low/nominal/high range.

Accelergy-ART style: each component is a list of (cell, quantity) terms. Cell areas come from
``calibration/cells.yaml`` (value, source, node, date, uncertainty), each scaled from its own node to
``spec.technology_nm`` by the ratio of published logic densities (:class:`DensityScaling`)::

    area [µm²] = Σ quantity × area_um2 × density(node_nm) / density(technology_nm)        (reported in mm²)

Components, with w = ``compute.value_bits``, MACs = ``compute.dense_macs_per_cycle`` (the physical multipliers);
formulas from ``shared/reference/hw_reference.md`` §5–7:

- ``mac_array``: dot-product units of ``compute.dot_product_width`` products, as :func:`_mac_array` describes
  (multipliers of the operand type, float alignment, an adder tree, one accumulator of the accumulator type,
  registers). Multipliers are looked up by type and width; adders, comparators and MUX2 scale linearly in width.
- ``operand_select_muxes``: the dense operand is routed from M candidates to each kept slot. With ordered
  indices slot j of a group reaches positions j … M−N+j, an (M−N+1):1 mux, i.e. (M−N)·w MUX2 per MAC. A design
  supporting several patterns needs, per slot, the union of what each pattern reaches (:func:`slot_fan_in`);
  MUX2 per slot and bit = fan-in − 1. A hierarchical design builds the datapath for its smallest pattern only:
  larger patterns are run by splitting each group into groups of the small pattern, and the cycle model charges
  extra cycles for split groups that overflow.
- ``metadata``: metadata_bits(M, N, format) register bits per group of the largest supported pattern, times
  ``metadata_pipeline_stages``, one group per N MACs; plus the decoder [D]: bitmask M·⌈log2 M⌉ half adders
  (prefix popcount) per group, index none (selects directly), enumerative the bitmask decoder plus M adders of
  ⌈log2 C(M, N)⌉ bits (unranking chain).
- ``selection_network`` (activation operand only; a weight-sparse design prunes offline): the top-N-of-M network
  of the largest supported M (a hierarchical design too: its large-M masks are still chosen online), per
  instance CE·(comparator(w) + 2·w MUX2) + max_stages·(comparator(w) + w MUX2), ``selector_groups_per_cycle ×
  units`` instances (0 groups per cycle: not modelled, zero area).
- ``extra_buffering``: each group of N MACs holds M values of the dense operand instead of N, (M−N)·w register
  bits per group (§7.5); for several patterns, (window − slots)·w per window of :func:`slot_fan_in`.

A dense design (operand none) has only ``mac_array``. Not counted: SRAM macros and buffers outside the
datapath, wiring and routing, control, clock tree.

Range: every cell carries [low, high] factors and the density ratio one too. A component's low (high) is every
cell and the ratio at its low (high) factor: bounds, not a confidence interval. The overhead range divides the
extras' low by the dense array's high (and the reverse) without the ratio's factor, which cancels.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from nmsim.errors import NmsimError
from nmsim.hw.complexity import selection_network
from nmsim.hw.spec import AcceleratorSpec, SparsitySpec
from nmsim.registry import design_names
from nmsim.yaml_io import ConfigError, LinedDict, check_keys, load_yaml
from nmsim.patterns import Pattern, metadata_bits

CALIBRATION_FILE = Path(__file__).with_name("calibration") / "cells.yaml"
UM2_PER_MM2 = 1e6

AREA_CELLS = ("mux2", "multiplier_4bit", "multiplier_8bit", "multiplier_16bit", "multiplier_32bit", "fp32_multiplier",
              "bf16_multiplier", "fp8_multiplier", "fp16_adder", "fp32_adder", "adder", "comparator", "register_bit",
              "half_adder")
ENERGY_ACTIONS = ("mac_8bit", "int4_multiply", "int8_multiply", "fp8_multiply", "bf16_multiply", "fp16_multiply",
                  "fp32_multiply", "int_add", "fp16_add", "fp32_add", "mac_gated_8bit", "comparator",
                  "sram_8KiB_read", "sram_32KiB_read", "sram_1MiB_read", "hbm2_access", "hbm2e_access", "hbm3_access",
                  "dram_access", "wire_mm")
SPARSE_COMPONENTS = ("operand_select_muxes", "metadata", "selection_network", "extra_buffering")

_ENTRY_COMMON = {"width_bits", "source", "node_nm", "date", "uncertainty", "note", "scales_with_node"}
_ENTRY_REQUIRED = {"width_bits", "source", "node_nm", "date", "uncertainty"}
_SCALING_KEYS = {"exponent", "exponent_range", "source", "date", "note"}
_DATAPATH = {"accumulator_min_bits": "bits", "metadata_pipeline_stages": "stages"}
_TAG = re.compile(r"\[(V|A|M|D)\]")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class CalibrationEntry:
    """One calibrated cell area (µm²) or action energy (pJ), for operands of ``width_bits``."""

    name: str
    value: float  # in ``unit``
    unit: str  # "um2" or "pJ"
    width_bits: int
    source: str
    node_nm: float
    date: str
    low: float  # multiplicative uncertainty factors on ``value``
    high: float
    scales_with_node: bool = True
    note: str = ""

    def at(self, node_nm: float, exponent: float, corner: str = "nominal") -> float:
        """The value at ``node_nm``: value × (node_nm / self.node_nm) ** exponent, times the corner's factor."""
        factor = {"low": self.low, "nominal": 1.0, "high": self.high}[corner]
        scale = (node_nm / self.node_nm) ** exponent if self.scales_with_node else 1.0
        return self.value * factor * scale


@dataclass(frozen=True)
class NodeScaling:
    """value(node) = value(node_nm) × (node / node_nm) ** exponent, exponent in [low, high]."""

    exponent: float
    exponent_low: float
    exponent_high: float
    source: str

    @property
    def exponents(self) -> tuple[float, float, float]:
        return self.exponent_low, self.exponent, self.exponent_high


@dataclass(frozen=True)
class DensityScaling:
    """Area between nodes from published densities: a block's area at node b is its area at node a times
    density(a) / density(b) (logic: MTr/mm²) or cell(b) / cell(a) (SRAM: bit-cell µm²), log-log between listed
    nodes; ``low``, ``high``: uncertainty factors on that ratio."""

    kind: str  # logic | sram
    table: tuple[tuple[float, float], ...]  # (node nm, density or cell area), sorted by node
    low: float
    high: float
    source: str

    @property
    def nodes(self) -> tuple[float, float]:
        """The range the table covers (nm)."""
        return self.table[0][0], self.table[-1][0]

    def factor(self, from_nm: float, to_nm: float) -> float:
        """The area factor from ``from_nm`` to ``to_nm``."""
        if from_nm == to_nm:
            return 1.0
        if self.kind == "logic":
            return _interpolate(self.table, from_nm) / _interpolate(self.table, to_nm)
        return _interpolate(self.table, to_nm) / _interpolate(self.table, from_nm)


def _interpolate(table: tuple[tuple[float, float], ...], node_nm: float) -> float:
    """The table's value at ``node_nm``, log-log between the listed nodes (beyond them, from the nearest two)."""
    for node, value in table:
        if node == node_nm:
            return value
    below = [pair for pair in table if pair[0] < node_nm]
    above = [pair for pair in table if pair[0] > node_nm]
    a, b = (below[-1], above[0]) if below and above else (table[0], table[1]) if not below else (table[-2], table[-1])
    t = (math.log(node_nm) - math.log(a[0])) / (math.log(b[0]) - math.log(a[0]))
    return math.exp(math.log(a[1]) + t * (math.log(b[1]) - math.log(a[1])))


@dataclass(frozen=True)
class Calibration:
    """The contents of a calibration file (see ``calibration/cells.yaml`` for the schema)."""

    path: str
    area: Mapping[str, CalibrationEntry]  # cell -> µm²
    energy: Mapping[str, CalibrationEntry]  # action -> pJ
    logic_scaling: DensityScaling  # area of logic cells between nodes
    sram_scaling: DensityScaling  # area of SRAM between nodes
    energy_scaling: NodeScaling
    accumulator_min_bits: int
    metadata_pipeline_stages: int

    def by_width(self, table: str, kind: str, bits: int) -> CalibrationEntry:
        """The ``<kind>_<bits>bit`` entry of the ``area`` or ``energy`` table."""
        entries = self.area if table == "area" else self.energy
        entry = entries.get(f"{kind}_{bits}bit")
        if entry is None:
            widths = sorted(e.width_bits for name, e in entries.items() if re.fullmatch(rf"{kind}_\d+bit", name))
            raise NmsimError(f"{self.path}: no {table} entry {kind}_{bits}bit (widths present: {widths})")
        return entry


def _number(data: LinedDict, file: Path, path: str, key: str, *, positive: bool = True) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or (positive and value <= 0):
        raise ConfigError(file, data.lines.get(key), f"{path}.{key}", f"expected a positive number, got {value!r}")
    return float(value)


def _text(data: LinedDict, file: Path, path: str, key: str) -> str:
    value = data[key]
    if isinstance(value, datetime.date):
        value = value.isoformat()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(file, data.lines.get(key), f"{path}.{key}", f"expected text, got {value!r}")
    return value


def _source(data: LinedDict, file: Path, path: str) -> str:
    source = _text(data, file, path, "source")
    if not _TAG.search(source):
        raise ConfigError(file, data.lines.get("source"), f"{path}.source",
                          "needs a provenance tag: [V] checked, [A] abstract, [M] recalled or [D] derived")
    date = _text(data, file, path, "date")
    if not _DATE.match(date):
        raise ConfigError(file, data.lines.get("date"), f"{path}.date", f"expected YYYY-MM-DD, got {date!r}")
    return source


def _pair(data: LinedDict, file: Path, path: str, key: str) -> tuple[float, float]:
    value = data[key]
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value) or value[0] > value[1]):
        raise ConfigError(file, data.lines.get(key), f"{path}.{key}", f"expected [low, high] with low <= high, "
                                                                      f"got {value!r}")
    return float(value[0]), float(value[1])


def _section(data, file: Path, key: str, names: Iterable[str]) -> LinedDict:
    section = data.get(key) if isinstance(data, LinedDict) else None
    if not isinstance(section, LinedDict):
        line = data.lines.get(key) if isinstance(data, LinedDict) else None
        raise ConfigError(file, line, key, f"expected a mapping with keys {', '.join(names)}")
    check_keys(section, file, key, set(names), set(names))
    return section


def _entries(data: LinedDict, file: Path, table: str, names: tuple[str, ...], unit_key: str) -> dict:
    section = _section(data, file, table, names)
    entries = {}
    for name in names:
        path = f"{table}.{name}"
        raw = section[name]
        if not isinstance(raw, LinedDict):
            raise ConfigError(file, section.lines.get(name), path, "expected a mapping")
        check_keys(raw, file, path, _ENTRY_COMMON | {unit_key}, _ENTRY_REQUIRED | {unit_key})
        low, high = _pair(raw, file, path, "uncertainty")
        if not 0 < low <= 1 <= high:
            raise ConfigError(file, raw.lines.get("uncertainty"), f"{path}.uncertainty",
                              f"need 0 < low <= 1 <= high, got [{low:g}, {high:g}]")
        width = raw["width_bits"]
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(file, raw.lines.get("width_bits"), f"{path}.width_bits",
                              f"expected a positive integer, got {width!r}")
        scales = raw.get("scales_with_node", True)
        if not isinstance(scales, bool):
            raise ConfigError(file, raw.lines.get("scales_with_node"), f"{path}.scales_with_node",
                              f"expected true or false, got {scales!r}")
        entries[name] = CalibrationEntry(
            name=name,
            value=_number(raw, file, path, unit_key),
            unit=unit_key.split("_", 1)[1],
            width_bits=width,
            source=_source(raw, file, path),
            node_nm=_number(raw, file, path, "node_nm"),
            date=_text(raw, file, path, "date"),
            low=low,
            high=high,
            scales_with_node=scales,
            note=_text(raw, file, path, "note") if "note" in raw else "",
        )
    return entries


def _density(section: LinedDict, file: Path, kind: str) -> DensityScaling:
    path = f"node_scaling.{kind}"
    raw = section[kind]
    if not isinstance(raw, LinedDict):
        raise ConfigError(file, section.lines.get(kind), path, "expected a mapping")
    keys = {"table", "uncertainty", "source", "date", "note"}
    check_keys(raw, file, path, keys, keys - {"note"})
    table = raw["table"]
    good = isinstance(table, list) and len(table) >= 2 and all(
        isinstance(pair, list) and len(pair) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in pair) for pair in table)
    if not good or len({pair[0] for pair in table}) != len(table):
        raise ConfigError(file, raw.lines.get("table"), f"{path}.table",
                          "expected [[node_nm, positive value], …] with at least two distinct nodes")
    low, high = _pair(raw, file, path, "uncertainty")
    return DensityScaling(kind, tuple(sorted((float(n), float(v)) for n, v in table)), low, high,
                          _source(raw, file, path))


def _scaling(section: LinedDict, file: Path, kind: str) -> NodeScaling:
    path = f"node_scaling.{kind}"
    raw = section[kind]
    if not isinstance(raw, LinedDict):
        raise ConfigError(file, section.lines.get(kind), path, "expected a mapping")
    check_keys(raw, file, path, _SCALING_KEYS, _SCALING_KEYS - {"note"})
    exponent = _number(raw, file, path, "exponent")
    low, high = _pair(raw, file, path, "exponent_range")
    if not low <= exponent <= high:
        raise ConfigError(file, raw.lines.get("exponent"), f"{path}.exponent",
                          f"{exponent:g} lies outside exponent_range [{low:g}, {high:g}]")
    return NodeScaling(exponent, low, high, _source(raw, file, path))


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Read and validate a calibration file (default: the packaged ``calibration/cells.yaml``).

    Unknown, missing and duplicate keys raise :class:`ConfigError` naming the file, line and key path. The
    packaged file is read once per process.
    """
    if path is None:
        return _packaged_calibration()
    return _read_calibration(Path(path))


@functools.cache
def _packaged_calibration() -> Calibration:
    return _read_calibration(CALIBRATION_FILE)


def _read_calibration(file: Path) -> Calibration:
    data = load_yaml(file)
    if not isinstance(data, LinedDict):
        raise ConfigError(file, None, "", "expected a mapping with keys version, area, energy, node_scaling, datapath")
    top = {"version", "area", "energy", "node_scaling", "datapath"}
    check_keys(data, file, "", top, top)
    if data["version"] != 1:
        raise ConfigError(file, data.lines.get("version"), "version", f"unsupported version {data['version']!r}")
    scaling = _section(data, file, "node_scaling", ("logic", "sram", "energy"))
    datapath = _section(data, file, "datapath", tuple(_DATAPATH))
    counts = {}
    for name, unit_key in _DATAPATH.items():
        raw = datapath[name]
        if not isinstance(raw, LinedDict):
            raise ConfigError(file, datapath.lines.get(name), f"datapath.{name}", "expected a mapping")
        check_keys(raw, file, f"datapath.{name}", {unit_key, "source", "date", "note"}, {unit_key, "source", "date"})
        _source(raw, file, f"datapath.{name}")
        value = raw[unit_key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(file, raw.lines.get(unit_key), f"datapath.{name}.{unit_key}",
                              f"expected a positive integer, got {value!r}")
        counts[name] = value
    return Calibration(
        path=str(file),
        area=MappingProxyType(_entries(data, file, "area", AREA_CELLS, "area_um2")),
        energy=MappingProxyType(_entries(data, file, "energy", ENERGY_ACTIONS, "energy_pJ")),
        logic_scaling=_density(scaling, file, "logic"),
        sram_scaling=_density(scaling, file, "sram"),
        energy_scaling=_scaling(scaling, file, "energy"),
        **counts,
    )


Terms = tuple[tuple[CalibrationEntry, float], ...]  # (cell or action, quantity in units of its width_bits)


def value_range(terms: Terms, node_nm: float, scaling: NodeScaling) -> tuple[float, float, float]:
    """(nominal, low, high) of Σ quantity × value at ``node_nm``, in the entries' unit (see the module docstring):
    low is the smallest low-corner sum over the scaling exponents, high the largest high-corner one; one pass over
    the terms (the hot path of every GEMM's energy)."""
    exponents = scaling.exponents
    nominal = 0
    lows = [0, 0, 0]
    highs = [0, 0, 0]
    for entry, quantity in terms:
        ratio = node_nm / entry.node_nm
        for i, exponent in enumerate(exponents):
            scale = ratio ** exponent if entry.scales_with_node else 1.0
            lows[i] += quantity * (entry.value * entry.low * scale)
            highs[i] += quantity * (entry.value * entry.high * scale)
        scale = ratio ** scaling.exponent if entry.scales_with_node else 1.0
        nominal += quantity * (entry.value * 1.0 * scale)
    return nominal, min(lows), max(highs)


def area_range(terms: Terms, node_nm: float, scaling: DensityScaling, *,
               node_uncertainty: bool = True) -> tuple[float, float, float]:
    """(nominal, low, high) µm² of Σ quantity × cell area at ``node_nm``: each cell scaled from its own node by
    ``scaling``; low (high) puts every cell, and with ``node_uncertainty`` the scaling ratio, at its low (high)
    factor."""
    nominal = low = high = 0.0
    scale_low, scale_high = (scaling.low, scaling.high) if node_uncertainty else (1.0, 1.0)
    for entry, quantity in terms:
        scales = entry.scales_with_node
        value = quantity * entry.value * (scaling.factor(entry.node_nm, node_nm) if scales else 1.0)
        nominal += value
        low += value * entry.low * (scale_low if scales else 1.0)
        high += value * entry.high * (scale_high if scales else 1.0)
    return nominal, low, high


def cell_um2(cal: Calibration, name: str, node_nm: float, corner: str = "nominal") -> float:
    """One area cell at ``node_nm`` (logic scaling), at the corner's factor."""
    entry = cal.area[name]
    factor = {"low": entry.low * cal.logic_scaling.low, "nominal": 1.0,
              "high": entry.high * cal.logic_scaling.high}[corner]
    return entry.value * cal.logic_scaling.factor(entry.node_nm, node_nm) * factor


def _bits(entry: CalibrationEntry, bits: float) -> float:
    """Quantity of a width-linear cell (adder, comparator, register, MUX2) for ``bits`` bits."""
    return bits / entry.width_bits


def datapath_patterns(sparsity: SparsitySpec) -> tuple[Pattern, ...]:
    """The patterns the select muxes and buffers are built for: all supported ones, or the smallest (by M)
    of a hierarchical design, whose larger patterns are run by splitting."""
    if sparsity.hierarchical:
        return (min(sparsity.patterns, key=lambda p: (p.m, p.n)),)
    return sparsity.patterns


def largest_pattern(patterns: Iterable[Pattern]) -> Pattern:
    return max(patterns, key=lambda p: (p.m, p.n))


def slot_fan_in(patterns: Iterable[Pattern]) -> tuple[int, tuple[int, ...]]:
    """(window, fan-in per kept slot) of operand-select muxes that serve every pattern in ``patterns``.

    The window is lcm of the M's; pattern n:m keeps window·n/m slots of it. Slot s of pattern n:m lies in group
    s // n at local slot j = s % n and, with ordered indices, reaches window positions g·m + j … g·m + m − n + j.
    A slot's fan-in is the size of the union of those positions over the patterns that use the slot.
    """
    patterns = tuple(patterns)
    window = math.lcm(*(p.m for p in patterns))
    slots = max(window * p.n // p.m for p in patterns)
    fan_in = []
    for s in range(slots):
        reach: set[int] = set()
        for p in patterns:
            if s < window * p.n // p.m:
                group, j = divmod(s, p.n)
                reach.update(range(group * p.m + j, group * p.m + p.m - p.n + j + 1))
        fan_in.append(len(reach))
    return window, tuple(fan_in)


# Floating-point operand types: (mantissa bits with the hidden one, exponent bits) of one operand.
FLOAT_FIELDS = {"fp8": (4, 4), "fp16": (11, 5), "bf16": (8, 8), "fp32": (24, 8)}
ACCUMULATOR_BITS = {"int32": 32, "fp16": 16, "fp32": 32}
ACCUMULATOR_MANTISSA = {"fp16": 11, "fp32": 24}


def product_bits(compute) -> int:
    """Bits of one product in the dot-product tree: twice the mantissa (with its hidden bit) for floats, twice
    the width for integers."""
    value = compute.value
    return 2 * FLOAT_FIELDS[value][0] if value in FLOAT_FIELDS else 2 * compute.value_bits


def tree_adder_bits(compute) -> int:
    """Width of each of the D−1 integer adders of a dot-product tree: a product plus ⌈log2 D⌉ carry bits."""
    return product_bits(compute) + math.ceil(math.log2(compute.dot_product_width))


def _multiplier(cal: Calibration, value: str, bits: int) -> CalibrationEntry:
    """The multiplier cell of an operand type: integer by width, FP16 the 16-bit (Horowitz FP16) entry."""
    if value in ("fp32", "bf16", "fp8"):
        return cal.area[f"{value}_multiplier"]
    return cal.by_width("area", "multiplier", bits)


def _mac_array(spec: AcceleratorSpec, cal: Calibration) -> tuple[Terms, str]:
    """Dot-product units as tensor cores build them: D = ``dot_product_width`` products share one adder tree and one
    accumulator. Per D products: D multipliers of the operand type; for floats, each product's mantissa aligned to
    the largest exponent (a barrel shifter of ⌈log2(accumulator mantissa + product mantissa)⌉ MUX2 levels, and a
    D−1 comparator tree over the exponents); D−1 integer adders of the product width (+⌈log2 D⌉ carry bits); one
    accumulator adder of the accumulator type (FP adder with normalisation, or an integer adder); registers for
    the 2·D operands and the accumulator. D = 1 is a MAC per accumulator (a systolic PE)."""
    compute = spec.compute
    w, macs, d = compute.value_bits, compute.dense_macs_per_cycle, compute.dot_product_width
    value, accumulator = compute.value, compute.accumulator_type
    adder, register, mux, comparator = (cal.area[name] for name in ("adder", "register_bit", "mux2", "comparator"))
    acc_bits = max(ACCUMULATOR_BITS[accumulator], cal.accumulator_min_bits if value.startswith("int") else 0)
    units = macs / d  # dot-product units
    terms = [(_multiplier(cal, value, w), macs)]
    product = product_bits(compute)
    if value in FLOAT_FIELDS:
        exponent = FLOAT_FIELDS[value][1]
        if d > 1:
            levels = math.ceil(math.log2(ACCUMULATOR_MANTISSA.get(accumulator, 24) + product))
            terms += [(mux, macs * _bits(mux, product * levels)),
                      (comparator, units * (d - 1) * _bits(comparator, exponent + 1))]
        accumulate = cal.area[f"{accumulator}_adder"]
        terms.append((accumulate, units))
    else:
        terms.append((adder, units * _bits(adder, acc_bits)))
    if d > 1:
        terms.append((adder, units * (d - 1) * _bits(adder, tree_adder_bits(compute))))
    terms.append((register, units * _bits(register, 2 * w * d + acc_bits)))
    if d == 1:
        note = (f"{macs} MACs, each a {value} multiplier, a {accumulator} accumulator and {2 * w + acc_bits} "
                "register bits")
    else:
        note = (f"{units:g} dot-product units of {d} {value} products: {d} multipliers"
                + (", mantissa alignment" if value in FLOAT_FIELDS else "")
                + f", a {d - 1}-adder tree and one {accumulator} accumulator each")
    return tuple(terms), note


def _operand_select_muxes(spec: AcceleratorSpec, cal: Calibration) -> tuple[Terms, str]:
    w, macs = spec.compute.value_bits, spec.compute.dense_macs_per_cycle
    patterns = datapath_patterns(spec.sparsity)
    window, fan_in = slot_fan_in(patterns)
    per_mac = sum(f - 1 for f in fan_in) / len(fan_in)  # MUX2 per MAC and data bit
    mux = cal.area["mux2"]
    dense = "weight" if spec.sparsity.operand == "activation" else "activation"
    note = f"{per_mac:g} MUX2 per MAC and {dense} bit"
    if spec.sparsity.hierarchical:
        note += (f"; built for {patterns[0]}, larger patterns split into {patterns[0]} groups "
                 "(overflowing groups cost extra cycles)")
    elif len(spec.sparsity.patterns) > 1:
        note += f"; union fan-in per slot over a window of {window}: {list(fan_in)}"
    return ((mux, macs * per_mac * _bits(mux, w)),), note


def _metadata(spec: AcceleratorSpec, cal: Calibration) -> tuple[Terms, str]:
    macs, fmt = spec.compute.dense_macs_per_cycle, spec.sparsity.metadata_format
    big = largest_pattern(spec.sparsity.patterns)
    groups = macs / big.n
    bits = metadata_bits(big.m, big.n, fmt)
    register, half_adder, adder = cal.area["register_bit"], cal.area["half_adder"], cal.area["adder"]
    terms = [(register, groups * _bits(register, bits * cal.metadata_pipeline_stages))]
    decoder = "none (an index selects directly)"
    if fmt in ("bitmask", "enumerative"):
        popcount = big.m * math.ceil(math.log2(big.m))
        terms.append((half_adder, groups * _bits(half_adder, popcount)))
        decoder = f"{popcount} half adders (prefix popcount) [D]"
    if fmt == "enumerative":
        rank_bits = math.ceil(math.log2(math.comb(big.m, big.n)))
        terms.append((adder, groups * big.m * _bits(adder, rank_bits)))
        decoder += f" + {big.m} adders of {rank_bits} bits (unranking) [D]"
    note = (f"{fmt} for {big}: {bits} bits × {cal.metadata_pipeline_stages} stages per group of {big.n} MACs; "
            f"decoder per group: {decoder}")
    return tuple(terms), note


def _selection_network(spec: AcceleratorSpec, cal: Calibration) -> tuple[Terms, str]:
    sparsity, w = spec.sparsity, spec.compute.value_bits
    if sparsity.selector_groups_per_cycle == 0:
        return (), "not modelled (selector_groups_per_cycle is 0)"
    big = largest_pattern(sparsity.patterns)
    net = selection_network(big.m, sparsity.selector)
    instances = sparsity.selector_groups_per_cycle * spec.compute.units
    comparator, mux = cal.area["comparator"], cal.area["mux2"]
    terms = ((comparator, instances * net.comparators * _bits(comparator, w)),
             (mux, instances * (2 * net.compare_exchanges + net.max_stages) * _bits(mux, w)))
    note = (f"{instances} × {sparsity.selector} top-of-{big.m}: {net.compare_exchanges} CE + "
            f"{net.max_stages} max stages, depth {net.depth}")
    if sparsity.hierarchical:
        note += f"; hierarchical: {big} masks are still chosen online, so sized for M = {big.m}"
    elif len(sparsity.patterns) > 1:
        note += f"; sized for the largest M ({big.m})"
    if sparsity.selector == "half_split" and 2 * big.n != big.m:
        note += f"; half_split keeps M/2, used as the estimate for {big}"
    return terms, note


def _extra_buffering(spec: AcceleratorSpec, cal: Calibration) -> tuple[Terms, str]:
    w, macs = spec.compute.value_bits, spec.compute.dense_macs_per_cycle
    window, fan_in = slot_fan_in(datapath_patterns(spec.sparsity))
    slots = len(fan_in)
    register = cal.area["register_bit"]
    dense = "weight" if spec.sparsity.operand == "activation" else "activation"
    note = f"{window} instead of {slots} {dense} values per {slots} MACs"
    return ((register, macs / slots * _bits(register, (window - slots) * w)),), note


_BUILDERS = {"mac_array": _mac_array, "operand_select_muxes": _operand_select_muxes, "metadata": _metadata,
             "selection_network": _selection_network, "extra_buffering": _extra_buffering}


@dataclass(frozen=True)
class AreaComponent:
    name: str
    nominal_mm2: float
    low_mm2: float
    high_mm2: float
    note: str = ""


@dataclass(frozen=True)
class AreaReport:
    """Datapath area of one design at ``technology_nm``: components, totals and the sparse overhead."""

    design: str
    technology_nm: int
    macs: int  # physical MACs (compute.dense_macs_per_cycle)
    components: tuple[AreaComponent, ...]
    total_mm2: float
    total_low_mm2: float
    total_high_mm2: float
    dense_mm2: float  # the mac_array alone: the same design without sparsity support
    overhead_pct: float  # sparse extras / dense × 100
    overhead_low_pct: float
    overhead_high_pct: float

    def component(self, name: str) -> AreaComponent:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"{self.design} has no area component {name!r} "
                       f"(it has {', '.join(c.name for c in self.components)})")

    def rows(self) -> list[dict[str, object]]:
        """One row per component plus a total: design, component, area_mm2, low_mm2, high_mm2, pct_of_dense,
        note."""
        rows = [{"design": self.design, "component": c.name, "area_mm2": c.nominal_mm2, "low_mm2": c.low_mm2,
                 "high_mm2": c.high_mm2, "pct_of_dense": 100 * c.nominal_mm2 / self.dense_mm2, "note": c.note}
                for c in self.components]
        rows.append({"design": self.design, "component": "total", "area_mm2": self.total_mm2,
                     "low_mm2": self.total_low_mm2, "high_mm2": self.total_high_mm2,
                     "pct_of_dense": 100 * self.total_mm2 / self.dense_mm2,
                     "note": f"overhead {self.overhead_pct:.1f}% "
                             f"[{self.overhead_low_pct:.1f}, {self.overhead_high_pct:.1f}]"})
        return rows


def design_terms(spec: AcceleratorSpec, calibration: Calibration | None = None) -> dict[str, tuple[Terms, str]]:
    """Each datapath component of ``spec``: its (cell, quantity) terms at the cells' own nodes and a note."""
    cal = calibration if calibration is not None else load_calibration()
    names = ("mac_array",) if spec.sparsity.operand == "none" else ("mac_array", *SPARSE_COMPONENTS)
    if spec.sparsity.operand == "weight":
        names = tuple(n for n in names if n != "selection_network")  # pruned offline: no online selector
    return {name: _BUILDERS[name](spec, cal) for name in names}


def design_area(spec: AcceleratorSpec, calibration: Calibration | None = None) -> AreaReport:
    """Datapath area of ``spec`` at ``spec.technology_nm`` (formulas in the module docstring)."""
    cal = calibration if calibration is not None else load_calibration()
    node, scaling = spec.technology_nm, cal.logic_scaling
    built = design_terms(spec, cal)
    components = []
    for name, (terms, note) in built.items():
        nominal, low, high = area_range(terms, node, scaling)
        components.append(AreaComponent(name, nominal / UM2_PER_MM2, low / UM2_PER_MM2, high / UM2_PER_MM2, note))
    total = area_range(tuple(t for terms, _ in built.values() for t in terms), node, scaling)
    dense = area_range(built["mac_array"][0], node, scaling, node_uncertainty=False)  # the node ratio cancels:
    extra = area_range(tuple(t for name, (terms, _) in built.items() if name != "mac_array" for t in terms), node,
                       scaling, node_uncertainty=False)  # extras and array scale alike
    return AreaReport(
        design=spec.name,
        technology_nm=node,
        macs=spec.compute.dense_macs_per_cycle,
        components=tuple(components),
        total_mm2=total[0] / UM2_PER_MM2,
        total_low_mm2=total[1] / UM2_PER_MM2,
        total_high_mm2=total[2] / UM2_PER_MM2,
        dense_mm2=components[0].nominal_mm2,
        overhead_pct=100 * extra[0] / dense[0],
        overhead_low_pct=100 * extra[1] / dense[2],
        overhead_high_pct=100 * extra[2] / dense[1],
    )


def preset_area_markdown(names: Iterable[str] | None = None, calibration: Calibration | None = None) -> str:
    """A markdown table of the presets' datapath area (all of ``hw_configs/`` by default), as in
    ``docs/area_model.md``."""
    cal = calibration if calibration is not None else load_calibration()
    names = design_names() if names is None else list(names)
    columns = ("design", "node (nm)", "patterns", "MAC array mm²", "muxes", "metadata", "selector", "buffering",
               "total mm² [low–high]", "over dense % [low–high]")
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for name in names:
        spec = AcceleratorSpec.from_name(name)
        report = design_area(spec, cal)
        parts = {c.name: c.nominal_mm2 for c in report.components}
        patterns = ", ".join(str(p) for p in spec.sparsity.patterns) or "dense"
        if spec.sparsity.hierarchical:
            patterns += " (hier.)"
        cells = [f"{parts[c]:.3f}" if c in parts else "–" for c in SPARSE_COMPONENTS]
        lines.append(
            f"| {name} | {spec.technology_nm} | {patterns} | {report.dense_mm2:.3f} | {' | '.join(cells)} "
            f"| {report.total_mm2:.3f} [{report.total_low_mm2:.3f}–{report.total_high_mm2:.3f}] "
            f"| {report.overhead_pct:.1f} [{report.overhead_low_pct:.1f}–{report.overhead_high_pct:.1f}] |")
    return "\n".join(lines)
