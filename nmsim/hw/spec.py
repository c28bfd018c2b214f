"""Accelerator descriptions: YAML → validated, frozen objects (schema in ``docs/hw_config.md``).

Three steps, each with errors that name the file, the line and the key path: :func:`load_yaml` (strict syntax,
no duplicate keys) → schema checks here (known keys, types, units in the key names, allowed values) → semantic
checks (patterns are real N:M with N < M, the sparse operand has patterns, the parts of a systolic array or a
tensor core are all there). A design states what it *supports* (this file: drives area); the pattern each layer
*uses* is chosen per run and checked against it with :meth:`AcceleratorSpec.check_supports`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from nmsim.errors import NmsimError
from nmsim.hashing import hash_once
from nmsim.hw.complexity import SELECTION_KINDS
from nmsim.yaml_io import ConfigError, LinedDict, check_keys, load_yaml
from nmsim.patterns import METADATA_FORMATS, Pattern, parse_pattern
from nmsim.registry import design_path

SparseOperand = Literal["none", "activation", "weight"]
_TILE = re.compile(r"^(\d+)x(\d+)/(\d+)x(\d+)$")
MAX_TILE = 1 << 14  # the largest tile side
TILE_SPELLING = f"block/warp tiles like 128x128/64x64 whose warp tile divides the block tile (sides up to {MAX_TILE})"
# Upper bounds of the design numbers: far beyond any real part, small enough that nothing overflows or runs for hours.
MAX_COUNT = 1 << 20  # units, cores, vector units, selector groups per cycle, MACs per unit per cycle
MAX_ARRAY_SIDE = 1 << 14  # systolic rows and cols
MAX_CAPACITY_BYTES = 1 << 50  # one memory level: 1 PiB
MAX_BANDWIDTH_GBPS = 1e6  # 1 PB/s
MAX_RATE_PER_CYCLE = 1e9  # bytes, FLOPs or special functions per cycle
MAX_LATENCY_NS = 1e9  # 1 s
MAX_FREQUENCY_GHZ = 100.0
MAX_PATTERN_M = 1024  # the largest supported group size M
MAX_MEMORY_LEVELS = 16


@dataclass(frozen=True)
class TileShape:
    """A block tile (tile_m tokens × tile_n outputs, one per core) computed by warps of warp_m × warp_n each."""

    tile_m: int
    tile_n: int
    warp_m: int
    warp_n: int

    @property
    def warps(self) -> int:
        return (self.tile_m // self.warp_m) * (self.tile_n // self.warp_n)

    def __str__(self) -> str:
        return f"{self.tile_m}x{self.tile_n}"


def parse_tile(text: str) -> TileShape | None:
    """``"128x256/64x256"`` → its :class:`TileShape`; None when it is not one."""
    match = _TILE.match(text) if len(text) <= 40 else None
    sizes = tuple(int(group) for group in match.groups()) if match else ()
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_TILE or sizes[0] % sizes[2] or sizes[1] % sizes[3]:
        return None
    return TileShape(*sizes)



VALUE_TYPES = {"int4": 4, "int8": 8, "fp8": 8, "fp16": 16, "bf16": 16, "fp32": 32}  # operand type → bits
DEFAULT_VALUE_TYPE = {4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}
ACCUMULATORS = {"int": ("int32",), "fp": ("fp16", "fp32")}  # what each kind of operand may accumulate in


@dataclass(frozen=True)
class ComputeSpec:
    kind: Literal["systolic", "tensor_core"]
    units: int  # identical arrays or tensor cores working in parallel
    value_bits: int
    rows: int = 0  # systolic
    cols: int = 0  # systolic
    dataflow: str = ""  # systolic: os | ws | is
    macs_per_unit_per_cycle: int = 0  # tensor core: dense MACs per cycle per unit
    cores: int = 0  # tensor core: the cores (SMs) a tile is scheduled on, units ÷ cores tensor cores each
    tile_shapes: tuple[TileShape, ...] = ()  # tensor core: the tiles its library offers; (): timing.yaml's
    value_type: str = ""  # int4 | int8 | fp8 | fp16 | bf16 | fp32 (default from value_bits: int ≤ 8, else fp)
    accumulator: str = ""  # int32 | fp16 | fp32 (default: int32 for integers, fp32 for floats)
    dot_product_width: int = 1  # products that share one adder tree and accumulator (1: a MAC per accumulator)

    @property
    def value(self) -> str:
        """The operand type (``value_type``, else the default for ``value_bits``)."""
        return self.value_type or DEFAULT_VALUE_TYPE[self.value_bits]

    @property
    def accumulator_type(self) -> str:
        """The accumulator type (``accumulator``, else INT32 for integer operands and FP32 for floats)."""
        return self.accumulator or ("int32" if self.value.startswith("int") else "fp32")

    @property
    def units_per_core(self) -> int:
        return self.units // self.cores if self.cores else 1

    @property
    def dense_macs_per_cycle(self) -> int:
        per_unit = self.rows * self.cols if self.kind == "systolic" else self.macs_per_unit_per_cycle
        return self.units * per_unit


@dataclass(frozen=True)
class SparsitySpec:
    operand: SparseOperand
    patterns: tuple[Pattern, ...]  # supported N:M patterns
    hierarchical: bool  # larger patterns are composed from smaller ones (HighLight-style)
    metadata_format: str
    selector: str  # online top-N-of-M network (activation operand)
    selector_groups_per_cycle: int  # groups the compressor selects per cycle and unit (0: not modelled)


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    capacity_bytes: int
    bandwidth_GBps: float  # peak at ``frequency_GHz`` when given per cycle
    latency_ns: float
    double_buffered: bool
    bandwidth_bytes_per_cycle: float = 0.0  # on-chip: peak bytes per clock (scales with it); 0: fixed GB/s
    efficiency: float = 1.0  # achievable fraction of the peak bandwidth
    technology: str = "sram"  # what it is built of (its energy per bit): OFF_CHIP_TECHNOLOGIES or sram

    def peak_bytes_per_cycle(self, clock_GHz: float) -> float:
        """Peak bytes per cycle at ``clock_GHz``."""
        return self.bandwidth_bytes_per_cycle or self.bandwidth_GBps / clock_GHz

    def bytes_per_cycle(self, clock_GHz: float) -> float:
        """Achievable bytes per cycle at ``clock_GHz`` (the peak times ``efficiency``)."""
        return self.peak_bytes_per_cycle(clock_GHz) * self.efficiency


@dataclass(frozen=True)
class VectorSpec:
    """What runs the non-GEMM work (norms, activations, softmax, rotary, residual adds): ``units`` vector units
    (one per core on a GPU) of ``flops_per_cycle_per_unit`` FLOPs and ``special_ops_per_cycle_per_unit`` special
    functions (exp, rsqrt, tanh) per cycle each; every kernel pays ``kernel_fixed_us`` (launch, prologue, tail)."""

    units: int
    flops_per_cycle_per_unit: float
    special_ops_per_cycle_per_unit: float
    kernel_fixed_us: float


@dataclass(frozen=True)
class InterconnectSpec:
    """The link between devices for tensor parallelism: per direction, ``bandwidth_GBps`` and ``latency_ns`` per
    ring step."""

    bandwidth_GBps: float
    latency_ns: float


@dataclass(frozen=True)
class DieSpec:
    """What the die holds beyond the enabled parts the simulator times (die-level area): all its cores (SMs), its
    caches in MiB (0: the enabled capacity), HBM stacks, chip-to-chip links and their PHY, and the register file
    per core."""

    physical_cores: int = 0  # 0: compute.cores
    physical_cache_MiB: float = 0.0  # the caches between HBM and the cores; 0: the memory levels' capacity
    memory_stacks: int = 0
    interconnect_links: int = 0
    interconnect_phy: str = ""  # nvlink3 | nvlink4 | pcie4 (a PHY entry of calibration/die.yaml)
    register_file_KiB_per_core: float = 0.0


@dataclass(frozen=True)
class AcceleratorSpec:
    name: str
    description: str
    source: str  # the file it came from
    technology_nm: int
    frequency_GHz: float  # the clock of the datasheet peak (boost)
    compute: ComputeSpec
    sparsity: SparsitySpec
    memory: tuple[MemoryLevel, ...]  # outermost (DRAM) first
    sustained_frequency_GHz: float = 0.0  # the clock held under sustained full load; 0: frequency_GHz
    vector: VectorSpec | None = None  # None: no vector unit described (linear-only simulation)
    interconnect: InterconnectSpec | None = None  # None: a single device (no tensor parallelism)
    kv_cache_bits: int = 0  # bits per KV-cache value; 0: compute.value_bits
    die: DieSpec | None = None  # None: no die described (die-level area counts the datapath and memories only)

    __hash__ = hash_once  # specs key every simulation cache

    @property
    def kv_bits(self) -> int:
        """Bits per stored KV-cache value."""
        return self.kv_cache_bits or self.compute.value_bits

    @property
    def clock_GHz(self) -> float:
        """The clock simulated time runs at: the sustained clock when the design gives one."""
        return self.sustained_frequency_GHz or self.frequency_GHz

    def check_supports(self, pattern: Pattern) -> None:
        """Raise if a layer wants ``pattern`` but this design cannot run it sparse."""
        if pattern.kind == "dense":
            return
        if pattern not in self.sparsity.patterns:
            supported = ", ".join(str(p) for p in self.sparsity.patterns) or "none (dense only)"
            raise NmsimError(f"design {self.name!r} ({self.source}) does not support {pattern}; it supports "
                             f"{supported}")

    @classmethod
    def from_name(cls, name: str, overrides: dict[str, object] | None = None) -> AcceleratorSpec:
        """A design preset (:mod:`nmsim.registry`) by file stem, or a path to a YAML file (``overrides``: key path → value)."""
        return load_accelerator(design_path(name), overrides)


_TOP = {"base", "name", "description", "technology_nm", "frequency_GHz", "sustained_frequency_GHz", "compute",
        "sparsity", "memory", "vector", "interconnect", "kv_cache_bits", "die"}
_DIE = {"physical_cores", "physical_cache_MiB", "memory_stacks", "interconnect_links", "interconnect_phy",
        "register_file_KiB_per_core"}
DIE_PHYS = ("nvlink3", "nvlink4", "pcie4")
_VECTOR = {"units", "flops_per_cycle_per_unit", "special_ops_per_cycle_per_unit", "kernel_fixed_us"}
_INTERCONNECT = {"bandwidth_GBps", "latency_ns"}
_COMPUTE = {"kind", "units", "value_bits", "rows", "cols", "dataflow", "macs_per_unit_per_cycle", "cores",
            "tile_shapes", "value_type", "accumulator", "dot_product_width"}
_SPARSITY = {"operand", "patterns", "hierarchical", "metadata_format", "selector", "selector_groups_per_cycle"}
_LEVEL = {"name", "capacity_KiB", "capacity_MiB", "capacity_GiB", "bandwidth_GBps", "bandwidth_bytes_per_cycle",
          "efficiency", "latency_ns", "double_buffered", "technology"}
OFF_CHIP_TECHNOLOGIES = ("hbm2", "hbm2e", "hbm3", "dram")
_CAPACITY_UNITS = {"capacity_KiB": 1 << 10, "capacity_MiB": 1 << 20, "capacity_GiB": 1 << 30}


class _Reader:
    """Typed access to one YAML mapping with errors that carry file, line and key path."""

    def __init__(self, file: Path, mapping, key_path: str, allowed: set[str], required: set[str]):
        if not isinstance(mapping, LinedDict):
            raise ConfigError(file, getattr(mapping, "line", None), key_path,
                              f"expected a mapping with keys {', '.join(sorted(allowed))}")
        check_keys(mapping, file, key_path, allowed, required)
        self.file, self.mapping, self.key_path = file, mapping, key_path

    def error(self, key: str, message: str) -> ConfigError:
        path = f"{self.key_path}.{key}" if self.key_path else key
        return ConfigError(self.file, self.mapping.lines.get(key, self.mapping.line), path, message)

    def get(self, key: str, kind: type, default=None, *, minimum: float | None = None,
            maximum: float | None = None, positive: bool = False, choices=None):
        """``key``'s value as ``kind``, or ``default`` when it is absent. Numbers must be finite (no NaN or
        infinity), integers where ``kind`` is int (a float such as 576.5 or 1e30 is refused), at least ``minimum``,
        above 0 when ``positive`` and at most ``maximum``; ints and floats without a ``maximum`` are bounded by
        MAX_COUNT and MAX_RATE_PER_CYCLE."""
        if key not in self.mapping:
            return default
        value = self.mapping[key]
        number = kind in (int, float)
        if number and isinstance(value, bool) or not number and not isinstance(value, kind):
            raise self.error(key, f"expected {kind.__name__}, got {_shown(value)}")
        if kind is int and not isinstance(value, int):
            count = " (a whole count, no decimal point)" if isinstance(value, float) else ""
            raise self.error(key, f"expected int{count}, got {_shown(value)}")
        if kind is float:
            if not isinstance(value, (int, float)):
                raise self.error(key, f"expected float, got {_shown(value)}")
            try:
                value = float(value)
            except OverflowError:
                raise self.error(key, f"{_shown(value)} is too large") from None
            if not math.isfinite(value):
                raise self.error(key, f"{value} is not a finite number (NaN and infinity are not allowed)")
        if number:
            top = maximum if maximum is not None else (MAX_COUNT if kind is int else MAX_RATE_PER_CYCLE)
            if minimum is not None and value < minimum:
                raise self.error(key, f"{value} is below the minimum {minimum}")
            if positive and value <= 0:
                raise self.error(key, f"{value} is not positive (must be above 0)")
            if value > top and choices is None:
                raise self.error(key, f"{_shown(value)} is above {top:,}, the maximum" if isinstance(top, int) else
                                 f"{_shown(value)} is above {top:g}, the maximum")
        if choices is not None and value not in choices:
            raise self.error(key, f"{_shown(value)} is not one of {', '.join(map(str, choices))}")
        return value


def _shown(value, limit: int = 60) -> str:
    """``repr(value)``, cut at ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _compute(file: Path, data) -> ComputeSpec:
    r = _Reader(file, data, "compute", _COMPUTE, {"kind", "units", "value_bits"})
    kind = r.get("kind", str, choices=("systolic", "tensor_core"))
    spec = ComputeSpec(
        kind=kind,
        units=r.get("units", int, minimum=1, maximum=MAX_COUNT),
        value_bits=r.get("value_bits", int, choices=(4, 8, 16, 32)),
        rows=r.get("rows", int, 0, minimum=1, maximum=MAX_ARRAY_SIDE),
        cols=r.get("cols", int, 0, minimum=1, maximum=MAX_ARRAY_SIDE),
        dataflow=r.get("dataflow", str, "", choices=("os", "ws", "is")),
        macs_per_unit_per_cycle=r.get("macs_per_unit_per_cycle", int, 0, minimum=1, maximum=MAX_COUNT),
        cores=r.get("cores", int, 0, minimum=1, maximum=MAX_COUNT),
        tile_shapes=_tile_shapes(r, data.get("tile_shapes")),
        value_type=r.get("value_type", str, "", choices=tuple(VALUE_TYPES)),
        accumulator=r.get("accumulator", str, "", choices=("int32", "fp16", "fp32")),
        dot_product_width=r.get("dot_product_width", int, 1, minimum=1, maximum=4096),
    )
    if spec.value_type and VALUE_TYPES[spec.value_type] != spec.value_bits:
        raise r.error("value_type", f"{spec.value_type} is {VALUE_TYPES[spec.value_type]} bits, but value_bits is "
                                    f"{spec.value_bits}")
    allowed = ACCUMULATORS[spec.value[:3] if spec.value.startswith("int") else "fp"]
    if spec.accumulator_type not in allowed:
        raise r.error("accumulator", f"{spec.value} operands accumulate in {' or '.join(allowed)}, not "
                                     f"{spec.accumulator_type}")
    own = {"rows", "cols", "dataflow"} if kind == "systolic" else {"macs_per_unit_per_cycle", "cores", "tile_shapes"}
    foreign = ({"rows", "cols", "dataflow", "macs_per_unit_per_cycle", "cores", "tile_shapes"} - own) & set(data)
    if foreign:
        raise r.error(sorted(foreign)[0], f"not a key of a {kind} (its keys: {', '.join(sorted(own))})")
    if spec.cores and spec.units % spec.cores:
        raise r.error("cores", f"{spec.units} units do not divide evenly over {spec.cores} cores")
    if kind == "tensor_core" and not spec.cores:
        spec = replace(spec, cores=spec.units)  # each unit its own core
    missing = (own - {"cores", "tile_shapes"}) - set(data)
    if missing:
        raise ConfigError(file, data.line, "compute", f"a {kind} needs {', '.join(sorted(missing))}")
    return spec


def _tile_shapes(r: _Reader, raw) -> tuple[TileShape, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise r.error("tile_shapes", f"expected a list of {TILE_SPELLING}")
    tiles = []
    for index, text in enumerate(raw):
        tile = parse_tile(str(text))
        if tile is None:
            raise r.error("tile_shapes", f"item {index}: {text!r} is not {TILE_SPELLING}")
        tiles.append(tile)
    return tuple(tiles)


NO_SPARSITY = SparsitySpec("none", (), False, "index", "half_split", 0)  # a dense design's (``sparsity`` omitted)


def _sparsity(file: Path, data) -> SparsitySpec:
    if data is None:
        return NO_SPARSITY
    r = _Reader(file, data, "sparsity", _SPARSITY, {"operand"})
    operand = r.get("operand", str, choices=("none", "activation", "weight"))
    raw = data.get("patterns", [])
    if not isinstance(raw, list):
        raise r.error("patterns", "expected a list of N:M patterns such as [2:4, 8:16]")
    patterns = []
    for index, text in enumerate(raw):
        if not isinstance(text, str) or len(text) > 32:
            raise r.error("patterns", f"item {index}: expected an N:M pattern such as 8:16, got {_shown(text)}")
        try:
            pattern = parse_pattern(text)
        except NmsimError as exc:
            raise r.error("patterns", f"item {index}: {exc}") from None
        if pattern.kind != "nm" or pattern.n >= pattern.m:
            raise r.error("patterns", f"item {index}: {pattern} is not a sparse N:M pattern (need N < M)")
        if pattern.m > MAX_PATTERN_M:
            raise r.error("patterns", f"item {index}: {pattern}: M is above the maximum {MAX_PATTERN_M}")
        patterns.append(pattern)
    if (operand == "none") != (not patterns):
        raise r.error("operand", "a sparse operand needs patterns, and patterns need a sparse operand "
                                 f"(operand {operand!r}, {len(patterns)} patterns)")
    hierarchical = r.get("hierarchical", bool, False)
    if hierarchical and len(patterns) < 2:
        raise r.error("hierarchical", "composing patterns needs at least two")
    return SparsitySpec(
        operand=operand,
        patterns=tuple(patterns),
        hierarchical=hierarchical,
        metadata_format=r.get("metadata_format", str, "index", choices=METADATA_FORMATS),
        selector=r.get("selector", str, "half_split", choices=SELECTION_KINDS),
        selector_groups_per_cycle=r.get("selector_groups_per_cycle", int, 0, minimum=0, maximum=MAX_COUNT),
    )


def _vector(file: Path, data) -> VectorSpec | None:
    if data is None:
        return None
    r = _Reader(file, data, "vector", _VECTOR, _VECTOR)
    return VectorSpec(units=r.get("units", int, minimum=1, maximum=MAX_COUNT),
                      flops_per_cycle_per_unit=r.get("flops_per_cycle_per_unit", float, minimum=1e-9,
                                                     maximum=MAX_RATE_PER_CYCLE),
                      special_ops_per_cycle_per_unit=r.get("special_ops_per_cycle_per_unit", float, minimum=1e-9,
                                                           maximum=MAX_RATE_PER_CYCLE),
                      kernel_fixed_us=r.get("kernel_fixed_us", float, minimum=0, maximum=MAX_LATENCY_NS / 1e3))


def _interconnect(file: Path, data) -> InterconnectSpec | None:
    if data is None:
        return None
    r = _Reader(file, data, "interconnect", _INTERCONNECT, _INTERCONNECT)
    return InterconnectSpec(bandwidth_GBps=r.get("bandwidth_GBps", float, minimum=1e-9, maximum=MAX_BANDWIDTH_GBPS),
                            latency_ns=r.get("latency_ns", float, minimum=0, maximum=MAX_LATENCY_NS))


def _die(file: Path, data) -> DieSpec | None:
    if data is None:
        return None
    r = _Reader(file, data, "die", _DIE, set())
    die = DieSpec(physical_cores=r.get("physical_cores", int, 0, minimum=1, maximum=MAX_COUNT),
                  physical_cache_MiB=r.get("physical_cache_MiB", float, 0.0, minimum=0,
                                           maximum=MAX_CAPACITY_BYTES / (1 << 20)),
                  memory_stacks=r.get("memory_stacks", int, 0, minimum=0, maximum=64),
                  interconnect_links=r.get("interconnect_links", int, 0, minimum=0, maximum=1024),
                  interconnect_phy=r.get("interconnect_phy", str, "", choices=DIE_PHYS),
                  register_file_KiB_per_core=r.get("register_file_KiB_per_core", float, 0.0, minimum=0,
                                                   maximum=1 << 20))
    if die.interconnect_links and not die.interconnect_phy:
        raise r.error("interconnect_links", f"links need interconnect_phy ({', '.join(DIE_PHYS)})")
    return die


def _technology(r: _Reader, index: int) -> str:
    """The outermost level is off-chip memory (default: its name when that is an HBM generation, else dram); the
    others are on-chip SRAM."""
    if index == 0:
        name = r.mapping["name"]
        default = name.lower() if isinstance(name, str) and name.lower() in OFF_CHIP_TECHNOLOGIES else "dram"
        return r.get("technology", str, default, choices=OFF_CHIP_TECHNOLOGIES)
    technology = r.get("technology", str, "sram")
    if technology != "sram":
        raise r.error("technology", f"{technology!r}: only the outermost level (memory[0]) is off-chip; on-chip "
                                    "levels are sram")
    return technology


def _memory(file: Path, data, line: int | None) -> tuple[MemoryLevel, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(file, line, "memory", "expected a list of memory levels, outermost (DRAM) first")
    if len(data) > MAX_MEMORY_LEVELS:
        raise ConfigError(file, line, "memory", f"{len(data)} levels; at most {MAX_MEMORY_LEVELS}")
    levels, named = [], {}
    for index, entry in enumerate(data):
        r = _Reader(file, entry, f"memory[{index}]", _LEVEL, {"name", "latency_ns"})
        capacities = [key for key in _CAPACITY_UNITS if key in entry]
        if len(capacities) != 1:
            raise ConfigError(file, entry.line, f"memory[{index}]",
                              "give exactly one of capacity_KiB, capacity_MiB, capacity_GiB")
        bandwidths = [key for key in ("bandwidth_GBps", "bandwidth_bytes_per_cycle") if key in entry]
        if len(bandwidths) != 1:
            raise ConfigError(file, entry.line, f"memory[{index}]",
                              "give exactly one of bandwidth_GBps (off-chip, fixed) and bandwidth_bytes_per_cycle "
                              "(on-chip, scales with the clock)")
        unit = _CAPACITY_UNITS[capacities[0]]
        capacity = r.get(capacities[0], float, minimum=0, positive=True, maximum=MAX_CAPACITY_BYTES / unit)
        if capacity * unit < 1:
            raise r.error(capacities[0], f"{capacity} is less than one byte")
        name = r.get("name", str)
        if name in named:
            raise r.error("name", f"{name!r} is already the name of memory[{named[name][0]}] (line "
                                  f"{named[name][1]}); each level needs its own name")
        named[name] = (index, entry.lines.get("name"))
        levels.append(MemoryLevel(
            name=name,
            capacity_bytes=int(capacity * unit),
            bandwidth_GBps=r.get("bandwidth_GBps", float, 0.0, minimum=1e-9, maximum=MAX_BANDWIDTH_GBPS),
            latency_ns=r.get("latency_ns", float, minimum=0, maximum=MAX_LATENCY_NS),
            double_buffered=r.get("double_buffered", bool, False),
            bandwidth_bytes_per_cycle=r.get("bandwidth_bytes_per_cycle", float, 0.0, minimum=1e-9,
                                            maximum=MAX_RATE_PER_CYCLE),
            efficiency=r.get("efficiency", float, 1.0, minimum=1e-3, maximum=1.0),
            technology=_technology(r, index),
        ))
    return tuple(levels)


_KEY_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _override(data: LinedDict, file: Path, key_path: str, value) -> None:
    """Set ``key_path`` (``memory[0].bandwidth_GBps``, ``sparsity.patterns``) in ``data``; every step but the last
    must exist. The value is checked later, with the rest of the design."""
    steps, position = [], 0
    while position < len(key_path):
        match = _KEY_STEP.match(key_path, position)
        if match is None:
            raise ConfigError(file, None, key_path, "not a key path; write keys joined by dots, list items as [i], "
                                                    "e.g. memory[0].bandwidth_GBps")
        steps.append(match.group(1) if match.group(1) else int(match.group(2)))
        position = match.end() + (1 if key_path.startswith(".", match.end()) else 0)
    node, walked = data, ""
    for step in steps[:-1]:
        walked = f"{walked}[{step}]" if isinstance(step, int) else (f"{walked}.{step}" if walked else step)
        found = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node) or \
            isinstance(node, dict) and isinstance(step, str) and step in node
        if not found:
            have = f"{len(node)} items" if isinstance(node, list) else \
                ", ".join(sorted(node)) if isinstance(node, dict) else repr(node)
            raise ConfigError(file, None, key_path, f"the design has no {walked} (there: {have})")
        node = node[step]
    last = steps[-1]
    if not isinstance(node, dict) or not isinstance(last, str):
        raise ConfigError(file, None, key_path, "the last step must name a key of a mapping")
    node[last] = value


def load_accelerator(path: str | Path, overrides: dict[str, object] | None = None) -> AcceleratorSpec:
    """Read and validate one accelerator YAML, with ``overrides`` (key path → value) applied before validation."""
    path = Path(path)
    data = _with_base(path, load_yaml(path), ())
    for key_path, value in (overrides or {}).items():
        _override(data, path, key_path, value)
    r = _Reader(path, data, "", _TOP, _TOP - {"base", "description", "sparsity", "sustained_frequency_GHz", "vector",
                                             "interconnect", "kv_cache_bits", "die"})
    spec = AcceleratorSpec(
        name=r.get("name", str),
        description=r.get("description", str, ""),
        source=str(path),
        technology_nm=r.get("technology_nm", int, minimum=1, maximum=1000),
        frequency_GHz=r.get("frequency_GHz", float, minimum=1e-6, maximum=MAX_FREQUENCY_GHZ),
        compute=_compute(path, data["compute"]),
        sparsity=_sparsity(path, data.get("sparsity")),
        memory=_memory(path, data["memory"], data.lines.get("memory")),
        sustained_frequency_GHz=r.get("sustained_frequency_GHz", float, 0.0, minimum=1e-6,
                                      maximum=MAX_FREQUENCY_GHZ),
        vector=_vector(path, data.get("vector")),
        interconnect=_interconnect(path, data.get("interconnect")),
        kv_cache_bits=r.get("kv_cache_bits", int, 0, choices=(4, 8, 16, 32)),
        die=_die(path, data.get("die")),
    )
    return spec


def _with_base(path: Path, data, seen: tuple[Path, ...]):
    """``data`` over the design it names in ``base`` (a preset or a path relative to ``path``): mappings merge key
    by key, every other value (lists included) replaces the base's."""
    if not isinstance(data, LinedDict) or "base" not in data:
        return data
    name = data["base"]
    if not isinstance(name, str):
        raise ConfigError(path, data.lines.get("base"), "base", f"expected a design preset or path, got {name!r}")
    relative = path.parent / name
    try:
        base_path = relative if relative.suffix and relative.is_file() else design_path(name)
    except NmsimError as exc:
        raise ConfigError(path, data.lines.get("base"), "base", str(exc)) from None
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise ConfigError(path, data.lines.get("base"), "base", f"{base_path} is already a base of this design "
                                                                "(a cycle)")
    base = _with_base(base_path, load_yaml(base_path), seen + (path.resolve(),))
    return _merge(base, data)


def _merge(base: LinedDict, over: LinedDict) -> LinedDict:
    merged = LinedDict(line=over.line)
    for key, value in base.items():
        if key != "base":
            merged[key], merged.lines[key] = value, over.lines.get(key, base.lines.get(key))
    for key, value in over.items():
        if key == "base":
            continue
        if isinstance(value, LinedDict) and isinstance(base.get(key), LinedDict):
            value = _merge(base[key], value)
        merged[key], merged.lines[key] = value, over.lines[key]
    return merged
