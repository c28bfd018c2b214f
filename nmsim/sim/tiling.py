"""The tensor-core mapper: for one GEMM, pattern and design, the block tile, split-K and K-chunk a library would pick.

OUT[M × N] = IN[M × K] · W[K × N] on a GPU-like design: ``compute.cores`` cores (SMs) of ``units ÷ cores`` tensor
cores each. A *block tile* of tile_m tokens × tile_n outputs runs on one core, split over warps of warp_m × warp_n
(``timing.yaml`` lists the shapes a CUTLASS-like library offers); split-K cuts K into parts that run as separate
tiles and write FP32 partial sums, which a second (reduction) kernel adds. Like cuBLAS's heuristics and
LLMCompass's mapper, every candidate (tile × split-K) is costed by the closed form below; the pipeline
(:mod:`nmsim.sim.engine`) times the ``TIMED_CANDIDATES`` best of them and the fastest is kept, for each pattern
separately, so no pattern loses to a tiling rule. (The closed form assumes loads and compute overlap perfectly;
the pipeline sees the bursts of lockstep waves and of split-K's partial sums, so it has the last word.)

Closed form, in cycles of the design's clock, per candidate:

- **math**: waves × (K-part × per-K cycles + per-tile cycles), waves = ⌈tiles·split / cores⌉; per K position a
  core needs
  max(MAC cycles, operand-feed cycles):
  - MAC cycles = tile_m · tile_n · density ÷ (dense MACs per cycle per core);
  - operand feed = the bytes the core's shared memory moves per K position ÷ its bytes per cycle: each warp reads
    its warp_m activation rows and warp_n weight columns (fragments), and the tile's rows and columns are written
    in once. A sparse MMA consumes the *dense* operand at M/N times the dense rate while its compressed operand
    shrinks, so the feed, not the MACs, can cap the speedup; small tiles (more fragment reads per MAC) feed worse.
- **per tile**: each wave's tiles wait for their first K-chunk (the slowest level's latency: the prologue) and
  stage their outputs through shared memory (written and read: the epilogue) before the core takes its next tile;
- **memory**: each level's bytes ÷ its achievable bytes per cycle (:func:`level_traffic`).
- **split-K**: the GEMM writes FP32 partial sums; a reduction kernel then reads them and writes the outputs,
  after the GEMM: its traffic and its own fixed cost (``kernel_fixed_us``) add to the time.

Shapes: ``tile_m``/``tile_n`` are clipped to M and N; bytes per position are per K index (``act_bpp``,
``weight_bpp``: compressed when the design prunes that operand, metadata included).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from nmsim.hw.spec import AcceleratorSpec, TileShape
from nmsim.sim.timing import Timing

PARTIAL_SUM_BYTES = 4  # split-K partial sums are FP32
TIMED_CANDIDATES = 3  # mappings the pipeline times, best first by the closed form


@dataclass(frozen=True)
class Operands:
    """What the mapper needs to know of one GEMM on one design, per K position (bytes) and per MAC."""

    m: int
    k: int
    n: int
    act_bpp: float  # bytes per activation value per K position (compressed when activations are pruned)
    weight_bpp: float  # bytes per weight per K position (compressed when weights are pruned)
    out_bytes: float  # bytes per output value
    density: float  # MAC slots per K position (K_eff / K)
    granule: int  # K-chunks are multiples of this
    rows: Callable[[int], float]  # tokens → share of weight rows a tile of that many tokens needs


@dataclass(frozen=True)
class TileChoice:
    """The mapping the mapper keeps."""

    tile: TileShape
    tile_m: int  # clipped to M
    tile_n: int  # clipped to N
    split_k: int
    k_part: int  # K positions per split
    estimate_cycles: float  # the closed form (the pipeline's cycles are what results report)

    def describe(self, chunk: int) -> str:
        split = f", split-K {self.split_k}" if self.split_k > 1 else ""
        warps = f"{min(self.tile.warp_m, self.tile_m)}x{min(self.tile.warp_n, self.tile_n)}"
        return f"tile {self.tile_m}x{self.tile_n} (warps {warps}), K-chunk {chunk}{split}"


def tile_shapes(spec: AcceleratorSpec, timing: Timing) -> tuple[TileShape, ...]:
    """The tiles the design's library offers: its own list, else ``timing.yaml``'s."""
    return spec.compute.tile_shapes or timing.tensor_core_tiles


def feed_bytes_per_cycle(spec: AcceleratorSpec, ideal_memory: bool) -> float:
    """Shared-memory bytes one core moves per cycle (0 with ideal memory: no feed limit)."""
    return 0.0 if ideal_memory else spec.memory[-1].bytes_per_cycle(spec.clock_GHz) / spec.compute.cores


def prologue_cycles(spec: AcceleratorSpec, ideal_memory: bool) -> float:
    """What a new tile waits for its first K-chunk: the slowest level's latency."""
    return 0.0 if ideal_memory else max(level.latency_ns for level in spec.memory) * spec.clock_GHz


def tile_output_bytes(ops: Operands, split_k: int) -> float:
    """Bytes per output value a tile writes: FP32 partial sums under split-K, else the output width."""
    return PARTIAL_SUM_BYTES if split_k > 1 else ops.out_bytes


def epilogue_cycles(r: int, n: int, out_bytes: float, feed_bytes_per_cycle: float) -> float:
    """An r × n tile's outputs staged through shared memory (written, then read out) at the core's feed rate."""
    return r * n * out_bytes * 2 / feed_bytes_per_cycle if feed_bytes_per_cycle else 0.0


def feed_bytes_per_k(tile: TileShape, r: int, n: int, ops: Operands) -> float:
    """Shared-memory bytes one core moves per K position for an r × n tile: warp fragment reads plus the tile's
    rows and columns written in."""
    warp_m, warp_n = min(tile.warp_m, r), min(tile.warp_n, n)
    warps = math.ceil(r / warp_m) * math.ceil(n / warp_n)
    w_bpp = ops.weight_bpp * ops.rows(r)
    reads = warps * (warp_m * ops.act_bpp + warp_n * w_bpp)
    writes = r * ops.act_bpp + n * w_bpp
    return reads + writes


def core_cycles_per_k(tile: TileShape, r: int, n: int, ops: Operands, spec: AcceleratorSpec,
                      feed_bytes_per_cycle: float) -> tuple[float, float]:
    """(MAC cycles, operand-feed cycles) of one core per K position of an r × n tile."""
    macs = r * n * ops.density / (spec.compute.macs_per_unit_per_cycle * spec.compute.units_per_core)
    feed = feed_bytes_per_k(tile, r, n, ops) / feed_bytes_per_cycle if feed_bytes_per_cycle else 0.0
    return macs, feed


def wave_footprint(tiles_m: int, tiles_n: int, active: int) -> tuple[int, int]:
    """(tile rows, tile columns) of the near-square block of ``active`` tiles one wave covers."""
    cols = max(1, min(tiles_n, math.isqrt(max(active - 1, 0)) + 1))
    rows = max(1, min(tiles_m, math.ceil(active / cols)))
    return rows, cols


def level_traffic(ops: Operands, spec: AcceleratorSpec, tile_m: int, tile_n: int, split_k: int
                  ) -> tuple[tuple[float, float], ...]:
    """(activation, weight) bytes read at each memory level, outermost first.

    On-chip levels below the outermost serve every tile its operands: A·⌈N/tile_n⌉ + W·rows(tile_m)·⌈M/tile_m⌉.
    The outermost level (behind a shared level such as an L2) serves one wave's block: tiles running at once share
    what they read, so A is read ⌈tiles_n / wave columns⌉ times and W ⌈tiles_m / wave rows⌉ times; an operand
    that fits half the shared level is read once. Never more than tile by tile.
    """
    tiles_m, tiles_n = math.ceil(ops.m / tile_m), math.ceil(ops.n / tile_n)
    total_a = ops.m * ops.k * ops.act_bpp
    total_w = ops.k * ops.n * ops.weight_bpp
    tile_a = total_a * tiles_n
    tile_w = total_w * ops.rows(tile_m) * tiles_m
    levels = len(spec.memory)
    reads = [(tile_a, tile_w)] * levels
    if levels >= 3:
        shared = spec.memory[1].capacity_bytes
        rows_t, cols_t = wave_footprint(tiles_m, tiles_n, min(tiles_m * tiles_n * split_k, spec.compute.cores))
        a_times = 1 if total_a <= shared / 2 else math.ceil(tiles_n / cols_t)
        w_times = 1 if total_w <= shared / 2 else math.ceil(tiles_m / rows_t)
        block_rows = min(ops.m, rows_t * tile_m)
        outer = (total_a * a_times, total_w * ops.rows(block_rows) * w_times)
        reads[0] = outer if sum(outer) < tile_a + tile_w else (tile_a, tile_w)
    return tuple(reads)


def output_traffic(ops: Operands, spec: AcceleratorSpec, split_k: int) -> tuple[float, ...]:
    """Output bytes the GEMM kernel writes at each level: the final outputs everywhere, or with split-K the FP32
    partial sums, at every level but the outermost, and there too when they overflow half the level below it."""
    levels = len(spec.memory)
    if split_k == 1:
        return (ops.m * ops.n * ops.out_bytes,) * levels
    partials = split_k * ops.m * ops.n * PARTIAL_SUM_BYTES
    return (partials if _partials_spill(ops, spec, split_k) else 0.0,) + (partials,) * (levels - 1)


def _partials_spill(ops: Operands, spec: AcceleratorSpec, split_k: int) -> bool:
    partials = split_k * ops.m * ops.n * PARTIAL_SUM_BYTES
    return len(spec.memory) < 2 or partials > spec.memory[1].capacity_bytes / 2


def reduction_traffic(ops: Operands, spec: AcceleratorSpec, split_k: int) -> tuple[float, ...]:
    """Bytes the split-K reduction kernel moves at each level (reads the partial sums, writes the outputs); it runs
    after the GEMM, not overlapped with it. Zeros without split-K."""
    levels = len(spec.memory)
    if split_k == 1:
        return (0.0,) * levels
    partials, final = split_k * ops.m * ops.n * PARTIAL_SUM_BYTES, ops.m * ops.n * ops.out_bytes
    outer = final + (partials if _partials_spill(ops, spec, split_k) else 0.0)
    return (outer,) + (partials + final,) * (levels - 2) + ((0.0,) if levels > 1 else ())


def reduction_cycles(ops: Operands, spec: AcceleratorSpec, split_k: int, timing: Timing) -> float:
    """Cycles of the split-K reduction kernel: its fixed cost plus its slowest level's traffic."""
    if split_k == 1:
        return 0.0
    clock = spec.clock_GHz
    moved = reduction_traffic(ops, spec, split_k)
    return timing.kernel_fixed_us * 1e3 * clock + \
        max(amount / level.bytes_per_cycle(clock) for amount, level in zip(moved, spec.memory))


def _split_options(ops: Operands, timing: Timing) -> list[tuple[int, int]]:
    """(split, K positions per split) pairs: K parts are whole granules, at least two granules long."""
    options, seen = [], set()
    for split in range(1, timing.split_k_max + 1):
        k_part = math.ceil(ops.k / split / ops.granule) * ops.granule
        actual = math.ceil(ops.k / k_part)
        if actual in seen or (actual > 1 and k_part < 2 * ops.granule):
            continue
        seen.add(actual)
        options.append((actual, k_part))
    return options


def rank_tilings(ops: Operands, spec: AcceleratorSpec, timing: Timing, *, ideal_memory: bool = False
                 ) -> list[TileChoice]:
    """Every (tile, split-K) candidate, fastest first by the closed form; ties keep the earlier tile and the smaller
    split (the order of ``timing.tensor_core_tiles``)."""
    compute, clock = spec.compute, spec.clock_GHz
    feed_bpc = feed_bytes_per_cycle(spec, ideal_memory)
    level_bpc = [math.inf if ideal_memory else level.bytes_per_cycle(clock) for level in spec.memory]
    latency = prologue_cycles(spec, ideal_memory)
    ranked: list[TileChoice] = []
    for tile in tile_shapes(spec, timing):
        tile_m, tile_n = min(ops.m, tile.tile_m), min(ops.n, tile.tile_n)
        tiles = math.ceil(ops.m / tile_m) * math.ceil(ops.n / tile_n)
        macs, feed = core_cycles_per_k(tile, tile_m, tile_n, ops, spec, feed_bpc)
        for split, k_part in _split_options(ops, timing):
            waves = math.ceil(tiles * split / compute.cores)
            epilogue = epilogue_cycles(tile_m, tile_n, tile_output_bytes(ops, split), feed_bpc)
            math_cycles = waves * (k_part * max(macs, feed) + latency + epilogue)
            reads = level_traffic(ops, spec, tile_m, tile_n, split)
            writes = output_traffic(ops, spec, split)
            memory_cycles = max((a + w + o) / bpc for (a, w), o, bpc in zip(reads, writes, level_bpc))
            cycles = max(math_cycles, memory_cycles) + \
                (0.0 if ideal_memory else reduction_cycles(ops, spec, split, timing))
            ranked.append(TileChoice(tile, tile_m, tile_n, split, k_part, cycles))
    return sorted(ranked, key=lambda choice: choice.estimate_cycles)  # stable: ties keep the listed order
