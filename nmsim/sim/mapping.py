"""How one GEMM runs on one design: tiles, K-chunks, waves of units or cores and bytes per level → a schedule.

OUT[M × N] = IN[M × K] · W[K × N]. Along K the datapath spends K_eff MAC slots: K when dense; on an n:m datapath
(K//m)·n + min(K mod m, n), SCALE-Sim's compressed K, scaled by the layer's overflow passes if it has any
(:mod:`nmsim.sim.usage`).

- **Systolic array** (R × C): one step per fold, the folds and per-fold cycles of :mod:`nmsim.sim.systolic` with
  K_eff in place of K; a sparse datapath adds its metadata-decode and operand-mux stages to each fold's fill.
- **Tensor cores**: the block tile and split-K the mapper picks (:mod:`nmsim.sim.tiling`), one tile per core; a
  wave runs one tile on every core; K streams in chunks that fit the core's share of the innermost buffer (a half
  with double buffering). A step's cycles are its MAC cycles plus what the operand feed needs beyond them; a
  tile's first chunk pays the sparse stages and the prologue (the slowest level's latency: a new tile waits for its
  first chunk), its last the epilogue (outputs staged through shared memory) and writes the outputs (FP32 partial
  sums under split-K). The kernel's fixed cost and a split-K reduction kernel are ``GemmMapping.fixed_cycles``.

Bytes per level: the array reads each tile's operands from the innermost level. On a systolic design a level above
supplies the one below it with the least traffic any block of bm tokens × bn columns (whole K) that fits the lower
level allows, A·⌈N/bn⌉ + W·rows(bm)·⌈M/bm⌉, and never more than tile by tile; on tensor cores
:func:`nmsim.sim.tiling.level_traffic` says (tile loads on chip, a wave's block from DRAM). Outputs are written
once to every level (the partial sums of WS and IS folds only to the innermost). Activations are stored compressed
(kept values plus the design's metadata) when the design prunes them, weights when it prunes weights; rows(T) is
the share of weight rows the union of T tokens' masks needs (1 unless activations are pruned).

The online compressor selects each activation group once: its work is spread over the steps in proportion to
the activations they read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec, MemoryLevel
from nmsim.patterns import compressed_row_bytes
from nmsim.sim.systolic import fill_cycles
from nmsim.sim.engine import Block, Channel, Step
from nmsim.sim.tiling import (Operands, TileChoice, core_cycles_per_k, epilogue_cycles, feed_bytes_per_cycle,
                              level_traffic, output_traffic, prologue_cycles, rank_tilings, reduction_cycles,
                              reduction_traffic, tile_output_bytes, tile_shapes)
from nmsim.sim.timing import Timing
from nmsim.sim.usage import LayerUse
from nmsim.sim.workload import Gemm

MAX_STEPS_PER_TILE = 16  # longer K streams are simulated in this many steps of several chunks each


@dataclass(frozen=True)
class OperandBytes:
    activations: float
    weights: float
    outputs: float

    @property
    def total(self) -> float:
        return self.activations + self.weights + self.outputs


@dataclass(frozen=True)
class GemmMapping:
    schedule: tuple[tuple[Block, int], ...]  # blocks of steps with repeat counts
    channels: tuple[Channel, ...]  # one per memory level, outermost first
    buffer_slots: int
    selector_latency: float  # cycles through the top-N-of-M network
    level_bytes: tuple[OperandBytes, ...]  # bytes read (operands) and written (outputs) at each level
    mac_slots: float  # MACs the datapath issues
    selector_groups: float  # activation groups the compressor selects
    tile: str  # what one step covers, for reports
    fixed_cycles: float = 0.0  # the kernel's fixed cost (launch, prologue, epilogue) and a split-K reduction kernel
    tile_m: int = 0  # tokens per tile (the weight-row fraction a tile needs is read at this size)


@dataclass(frozen=True)
class _Tile:
    """One tile or fold's share of a step: bytes and cycles of a single unit."""

    activations: float
    weights: float
    outputs: float
    activation_values: float  # dense activation positions read (for the compressor)
    busy: float
    feed: float = 0.0  # cycles the operand feed needs beyond busy


def _compressed_k(k: int, use: LayerUse) -> int:
    """MAC slots along K: SCALE-Sim's K' for an exact n:m datapath, scaled by overflow passes."""
    if not use.sparse:
        return k
    n, m = use.pattern.n, use.pattern.m
    exact = (k // m) * n + min(k % m, n)
    return math.ceil(exact * use.compute_density * m / n - 1e-9)


def _split(total: int, size: int) -> list[tuple[int, int]]:
    """(part size, count) pieces of ``total`` cut into ``size``: the full ones, then the remainder."""
    full, rest = divmod(total, size)
    return [(size, full)] * bool(full) + [(rest, 1)] * bool(rest)


def _waves(classes: list[tuple[object, int]], units: int) -> list[tuple[tuple[tuple[object, int], ...], int]]:
    """Pack tiles (class, count), in order, into waves of ``units``: (composition, repeat count) runs."""
    waves, pending, filled = [], [], 0
    for tile, count in classes:
        if filled:
            take = min(units - filled, count)
            pending.append((tile, take))
            filled, count = filled + take, count - take
            if filled == units:
                waves.append((tuple(pending), 1))
                pending, filled = [], 0
        full, rest = divmod(count, units)
        if full:
            waves.append((((tile, units),), full))
        if rest:
            pending, filled = [(tile, rest)], rest
    if pending:
        waves.append((tuple(pending), 1))
    return waves


class _Mapper:
    def __init__(self, gemm: Gemm, spec: AcceleratorSpec, use: LayerUse, timing: Timing):
        self.gemm, self.spec, self.use, self.timing = gemm, spec, use, timing
        bits = spec.compute.value_bits
        self.value_bytes = bits / 8
        fmt = spec.sparsity.metadata_format
        sparse_act, sparse_weight = use.operand == "activation", use.operand == "weight"
        compressed = compressed_row_bytes(gemm.k, use.pattern, bits, fmt) / gemm.k  # per dense position
        self.act_bpp = compressed if sparse_act else self.value_bytes
        self.weight_bpp = compressed if sparse_weight else self.value_bytes
        self.k_eff = _compressed_k(gemm.k, use)
        self.sparse_fill = 0
        if use.sparse:
            supported = spec.sparsity.patterns
            mux_pattern = min(supported, key=lambda p: p.m) if spec.sparsity.hierarchical else \
                max(supported, key=lambda p: p.m)
            self.sparse_fill = timing.decode_cycles(use.pattern, fmt) + timing.mux_cycles(mux_pattern)

    def rows(self, tokens: int) -> float:
        return self.use.weight_rows_fraction(tokens)

    # --- tiles -------------------------------------------------------------------------------------------------
    def systolic_steps(self) -> tuple[list, str]:
        c = self.spec.compute
        rows, cols, g, k, fill = c.rows, c.cols, self.gemm, self.gemm.k, self.sparse_fill
        out_bytes = self.value_bytes
        classes = []
        if c.dataflow == "os":
            for r, nr in _split(g.m, rows):
                for cc, nc in _split(g.n, cols):
                    classes.append((_Tile(r * k * self.act_bpp, cc * k * self.weight_bpp * self.rows(r),
                                          r * cc * out_bytes, r * k, self.k_eff), nr * nc))
            per_fold_fill = fill_cycles(rows, cols, c.dataflow) + fill
        else:
            stream = g.m if c.dataflow == "ws" else g.n
            for kr, nk in _split(self.k_eff, rows):
                share = kr / self.k_eff
                for cc, nc in _split(g.n if c.dataflow == "ws" else g.m, cols):
                    tokens, columns = (g.m, cc) if c.dataflow == "ws" else (cc, g.n)
                    classes.append((_Tile(tokens * k * share * self.act_bpp, columns * k * share * self.weight_bpp,
                                          tokens * columns * out_bytes, tokens * k * share, stream), nk * nc))
            per_fold_fill = fill_cycles(rows, cols, c.dataflow) + fill
        steps = []
        for composition, repeat in _waves(classes, c.units):
            steps.append(([(composition, per_fold_fill, True)], repeat))
        return steps, f"{c.dataflow.upper()} fold {rows}x{cols}"

    def operands(self) -> Operands:
        g, use = self.gemm, self.use
        return Operands(g.m, g.k, g.n, self.act_bpp, self.weight_bpp, self.value_bytes, self.k_eff / g.k,
                        math.lcm(self.timing.k_chunk_granule, use.pattern.m if use.sparse else 1), self.rows)

    def chunk_bytes_per_k(self, tile_m: int, tile_n: int) -> float:
        """Operand bytes one tile of tile_m × tile_n holds per K position in its buffer slot."""
        return tile_m * self.act_bpp + tile_n * self.weight_bpp * self.rows(tile_m)

    def tensor_core_steps(self, choice: TileChoice, ops: Operands, ideal_memory: bool) -> tuple[list, str]:
        """Steps of one tiling (:mod:`nmsim.sim.tiling`): one block tile per core, waves over the cores."""
        c, g = self.spec.compute, self.gemm
        tile_m, tile_n, splits, k_part = choice.tile_m, choice.tile_n, choice.split_k, choice.k_part
        granule = ops.granule
        per_k = self.chunk_bytes_per_k(tile_m, tile_n)
        chunk = int(self.slot_capacity() // (per_k * granule)) * granule
        if chunk < granule:
            self.check_fits(per_k * granule, f"tile {tile_m}x{tile_n}, K-chunk {granule}")
        chunk = min(chunk, k_part)
        chunks = math.ceil(k_part / chunk)
        per_step = math.ceil(chunks / MAX_STEPS_PER_TILE) * chunk
        k_steps = [length for length, count in _split(k_part, per_step) for _ in range(count)]
        bytes_scale = g.k / (k_part * splits)  # the last split is shorter: bytes stay exact on average
        out_bytes = tile_output_bytes(ops, splits)
        feed_bpc = feed_bytes_per_cycle(self.spec, ideal_memory)
        prologue = prologue_cycles(self.spec, ideal_memory)
        steps = []
        classes = [((r, n), nr * nn * splits) for r, nr in _split(g.m, tile_m) for n, nn in _split(g.n, tile_n)]
        for composition, repeat in _waves(classes, c.cores):
            block = []
            for index, length in enumerate(k_steps):
                last = index == len(k_steps) - 1
                tiles = []
                for (r, n), count in composition:
                    macs, feed = core_cycles_per_k(choice.tile, r, n, ops, self.spec, feed_bpc)
                    tiles.append((_Tile(r * length * bytes_scale * self.act_bpp,
                                        n * length * bytes_scale * self.weight_bpp * self.rows(r),
                                        r * n * out_bytes if last else 0.0, r * length * bytes_scale,
                                        macs * length, max(0.0, feed - macs) * length), count))
                # a tile's first chunk waits for its operands (prologue), its last stages the outputs (epilogue)
                epilogue = max(epilogue_cycles(r, n, out_bytes, feed_bpc) for (r, n), _ in composition) \
                    if last else 0.0
                first = (self.sparse_fill + prologue) if index == 0 else 0.0
                block.append((tuple(tiles), first + epilogue, last))
            steps.append((block, repeat))
        return steps, choice.describe(chunk)

    # --- memory ------------------------------------------------------------------------------------------------
    def slot_capacity(self, level: int = -1) -> float:
        memory = self.spec.memory[level]
        compute = self.spec.compute
        per_core = compute.cores if compute.kind == "tensor_core" else compute.units
        units = per_core if level in (-1, len(self.spec.memory) - 1) else 1
        return memory.capacity_bytes / units / (2 if memory.double_buffered else 1)

    def check_fits(self, need: float, what: str) -> None:
        inner = self.spec.memory[-1]
        if need > self.slot_capacity():
            raise NmsimError(
                f"design {self.spec.name} ({self.spec.source}): one {what} of {self.gemm.projection} needs "
                f"{need / 1024:.1f} KiB of operands, but memory level {inner.name!r} gives each unit "
                f"{self.slot_capacity() / 1024:.1f} KiB per buffer slot; enlarge its capacity")

    def supply_traffic(self, level: int, tile_a: float, tile_w: float, tile_m: int, tile_n: int) -> tuple:
        """(activation, weight) bytes level ``level − 1`` sends to ``level``: the best block that fits ``level``."""
        g = self.gemm
        a_row, w_col = g.k * self.act_bpp, g.k * self.weight_bpp
        total_a, total_w = g.m * a_row, g.n * w_col
        capacity = self.slot_capacity(level)
        best = (tile_a, tile_w)
        sizes_m = sorted({min(tile_m << i, g.m) for i in range(32) if (tile_m << i) < 2 * g.m})
        sizes_n = sorted({min(tile_n << i, g.n) for i in range(32) if (tile_n << i) < 2 * g.n})
        for bm in sizes_m:
            rows = self.rows(bm)
            for bn in sizes_n:
                if bm * a_row + bn * w_col * rows > capacity:
                    break
                a, w = total_a * math.ceil(g.n / bn), total_w * rows * math.ceil(g.m / bm)
                if a + w < sum(best):
                    best = (a, w)
        return best


def _channel(level: MemoryLevel, clock_GHz: float, ideal: bool) -> Channel:
    if ideal:
        return Channel(level.name, math.inf, 0.0)
    return Channel(level.name, level.bytes_per_cycle(clock_GHz), level.latency_ns * clock_GHz)


def smallest_tile_tokens(m: int, spec: AcceleratorSpec, timing: Timing) -> int:
    """The fewest tokens any tensor-core tile of an M-token GEMM holds, over every tile shape (remainders too)."""
    sizes = set()
    for tile in tile_shapes(spec, timing):
        tile_m = min(m, tile.tile_m)
        sizes.add(tile_m)
        if m % tile_m:
            sizes.add(m % tile_m)
    return min(sizes)


def tilings(gemm: Gemm, spec: AcceleratorSpec, use: LayerUse, timing: Timing, *,
            ideal_memory: bool = False) -> list[TileChoice]:
    """A tensor-core GEMM's candidate tilings whose smallest K-chunk fits a buffer slot, best first by the mapper's
    closed form (:mod:`nmsim.sim.tiling`); an error names the level when none fits."""
    mapper = _Mapper(gemm, spec, use, timing)
    ops = mapper.operands()
    ranked = rank_tilings(ops, spec, timing, ideal_memory=ideal_memory)

    def need(choice: TileChoice) -> float:
        return mapper.chunk_bytes_per_k(choice.tile_m, choice.tile_n) * ops.granule

    fitting = [choice for choice in ranked if need(choice) <= mapper.slot_capacity()]
    if not fitting:
        smallest = min(ranked, key=need)
        mapper.check_fits(need(smallest), f"tile {smallest.tile_m}x{smallest.tile_n}, K-chunk {ops.granule}")
    return fitting


def map_gemm(gemm: Gemm, spec: AcceleratorSpec, use: LayerUse, timing: Timing, *,
             ideal_memory: bool = False, tiling: TileChoice | None = None) -> GemmMapping:
    """The pipeline schedule, channels and bytes per level of ``gemm`` on ``spec`` as ``use`` says (tensor cores:
    with ``tiling``, by default the closed form's best)."""
    mapper = _Mapper(gemm, spec, use, timing)
    compute = spec.compute
    ops = mapper.operands()
    if compute.kind == "systolic":
        raw, tile_text = mapper.systolic_steps()
    else:
        tiling = tiling or tilings(gemm, spec, use, timing, ideal_memory=ideal_memory)[0]
        raw, tile_text = mapper.tensor_core_steps(tiling, ops, ideal_memory)

    def step_sums(tiles):
        slowest = max(tiles, key=lambda item: item[0].busy + item[0].feed)[0]
        return (sum(t.activations * n for t, n in tiles), sum(t.weights * n for t, n in tiles),
                sum(t.outputs * n for t, n in tiles), sum(t.activation_values * n for t, n in tiles),
                slowest.busy, slowest.feed)

    totals = [0.0, 0.0, 0.0, 0.0]
    for block, repeat in raw:
        for tiles, _, _ in block:
            for index, value in enumerate(step_sums(tiles)[:4]):
                totals[index] += value * repeat
    tile_a, tile_w, tile_out, act_values = totals

    levels = len(spec.memory)
    if compute.kind == "systolic":
        tile_m, tile_n = (compute.rows, compute.cols) if compute.dataflow == "os" else (gemm.m, gemm.n)
        reads = [(tile_a, tile_w)] * levels
        for level in range(levels - 1, 0, -1):
            below_a, below_w = reads[level]
            supply = mapper.supply_traffic(level, below_a, below_w, tile_m, tile_n)
            reads[level - 1] = min(supply, (below_a, below_w), key=sum)
        final_outputs = gemm.m * gemm.n * mapper.value_bytes
        writes = [final_outputs] * (levels - 1) + [tile_out]
    else:
        tile_m = tiling.tile_m
        reads = list(level_traffic(ops, spec, tiling.tile_m, tiling.tile_n, tiling.split_k))
        reads[-1] = (tile_a, tile_w)
        writes = list(output_traffic(ops, spec, tiling.split_k))[:-1] + [tile_out]
    level_bytes = tuple(OperandBytes(a, w, o) for (a, w), o in zip(reads, writes))

    def share(amount: float, total: float) -> float:
        return amount / total if total else 0.0

    selecting = use.operand == "activation" and spec.sparsity.selector_groups_per_cycle > 0
    groups_per_value = 1 / use.pattern.m if use.operand == "activation" else 0.0
    rereads = act_values / (gemm.m * gemm.k) if act_values else 1.0  # tile-level re-reads of each activation
    schedule = []
    for block, repeat in raw:
        steps = []
        for tiles, fill, _ in block:
            a, w, out, values, busy, feed = step_sums(tiles)
            active = sum(n for _, n in tiles)
            groups = values * groups_per_value / rereads
            steps.append(Step(
                load_bytes=tuple(a * share(la, tile_a) + w * share(lw, tile_w) for la, lw in reads),
                select_cycles=groups / (spec.sparsity.selector_groups_per_cycle * active * compute.units_per_core)
                if selecting else 0.0,
                fill_cycles=fill,
                busy_cycles=busy,
                writeback_bytes=tuple(out * share(lo, tile_out) for lo in writes),
                feed_cycles=feed,
            ))
        schedule.append((Block(tuple(steps)), repeat))
    selector_latency = timing.selector_cycles(use.pattern.m, spec.sparsity.selector) if selecting else 0
    inner = spec.memory[-1]
    fixed_cycles = 0.0
    if compute.kind == "tensor_core":
        split = tiling.split_k
        stored_sparse = use.operand == "weight"  # a compressed tensor and its metadata, set up per kernel
        fixed_cycles = (timing.kernel_fixed_us + (timing.sparse_kernel_fixed_us if stored_sparse else 0.0)) * \
            1e3 * spec.clock_GHz + reduction_cycles(ops, spec, split, timing)
        level_bytes = tuple(OperandBytes(moved.activations, moved.weights, moved.outputs + extra)
                            for moved, extra in zip(level_bytes, reduction_traffic(ops, spec, split)))
    return GemmMapping(
        schedule=tuple(schedule),
        channels=tuple(_channel(level, spec.clock_GHz, ideal_memory) for level in spec.memory),
        buffer_slots=2 if inner.double_buffered else 1,
        selector_latency=selector_latency,
        level_bytes=level_bytes,
        mac_slots=gemm.m * gemm.n * mapper.k_eff,
        selector_groups=gemm.m * math.ceil(gemm.k / use.pattern.m) if use.operand == "activation" else 0.0,
        tile=tile_text,
        fixed_cycles=fixed_cycles,
        tile_m=tile_m,
    )
