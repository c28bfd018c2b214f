"""Timing assumptions of the simulated datapath (``timing.yaml``): tile shapes, kernel costs, logic levels per cycle.

Pipeline depths of the sparse datapath, in cycles, for a group of M positions keeping N (formulas of
``shared/reference/hw_reference.md`` §6–7):

- metadata decode: index → a ⌈log2 M⌉-level decoder; bitmask → a prefix popcount of ⌈log2 M⌉ adder levels;
  enumerative → an unranking chain of M levels; divided by ``adder_levels_per_cycle``;
- operand select: an (M−N+1):1 mux, ⌈log2(M−N+1)⌉ levels of 2:1 muxes, divided by ``mux_levels_per_cycle``;
- online selector: the network's comparator depth, divided by ``comparator_stages_per_cycle``.

Tensor-core kernels (:mod:`nmsim.sim.tiling`): the tile shapes a library offers (``tensor_core_tiles``: the block
tile each core computes and the warp tile each of its warps computes), the largest split-K, and the fixed time a
kernel costs beyond its tiles (``kernel_fixed_us``, ``sparse_kernel_fixed_us``), in µs because launch and setup do
not scale with the core clock. ``host_dispatch_us`` is what a host-timed framework call adds on top (used only
for measurements taken that way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from nmsim.hashing import hash_once
from nmsim.hw.complexity import selection_network
from nmsim.hw.spec import TILE_SPELLING, TileShape, parse_tile
from nmsim.yaml_io import ConfigError, check_keys, load_yaml
from nmsim.patterns import Pattern

TIMING_FILE = Path(__file__).with_name("timing.yaml")
_ENTRY_KEYS = {"value", "source", "date"}


@dataclass(frozen=True)
class Timing:
    tensor_core_tiles: tuple[TileShape, ...]
    split_k_max: int
    k_chunk_granule: int
    kernel_fixed_us: float
    sparse_kernel_fixed_us: float
    host_dispatch_us: float
    mux_levels_per_cycle: int
    adder_levels_per_cycle: int
    comparator_stages_per_cycle: int
    softmax_single_pass_max_elements: int  # rows up to this length are read once; longer ones once per pass
    attention_block_queries: int  # queries per block of a fused attention kernel (wave quantization)

    __hash__ = hash_once  # the timing keys every simulation cache

    def decode_cycles(self, pattern: Pattern, metadata_format: str) -> int:
        levels = pattern.m if metadata_format == "enumerative" else math.ceil(math.log2(pattern.m))
        return math.ceil(levels / self.adder_levels_per_cycle)

    def mux_cycles(self, pattern: Pattern) -> int:
        return math.ceil(math.ceil(math.log2(pattern.m - pattern.n + 1)) / self.mux_levels_per_cycle)

    def selector_cycles(self, group_size: int, selector: str) -> int:
        return math.ceil(selection_network(group_size, selector).depth / self.comparator_stages_per_cycle)


_FLOATS = {"kernel_fixed_us", "sparse_kernel_fixed_us", "host_dispatch_us"}


def _tiles(path: Path, entry, value) -> tuple[TileShape, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, entry.lines.get("value"), "tensor_core_tiles.value",
                          "expected a list of tiles written block/warp, e.g. 128x128/64x64")
    tiles = []
    for index, text in enumerate(value):
        tile = parse_tile(str(text))
        if tile is None:
            raise ConfigError(path, entry.lines.get("value"), f"tensor_core_tiles.value[{index}]",
                              f"{text!r} is not {TILE_SPELLING}")
        tiles.append(tile)
    return tuple(tiles)


def load_timing(path: str | Path = TIMING_FILE) -> Timing:
    """Read and check a timing file: every field present with a value of its kind, a source and a date."""
    path = Path(path)
    data = load_yaml(path)
    names = set(Timing.__dataclass_fields__)
    check_keys(data, path, "", names, names)
    values = {}
    for name in names:
        entry = data[name]
        check_keys(entry, path, name, _ENTRY_KEYS, _ENTRY_KEYS)
        value = entry["value"]
        if name == "tensor_core_tiles":
            values[name] = _tiles(path, entry, value)
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name in _FLOATS:
            if not number or value < 0:
                raise ConfigError(path, entry.lines.get("value"), f"{name}.value",
                                  f"expected a number of µs ≥ 0, got {value!r}")
            values[name] = float(value)
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(path, entry.lines.get("value"), f"{name}.value",
                              f"expected a positive integer, got {value!r}")
        else:
            values[name] = value
    return Timing(**values)
