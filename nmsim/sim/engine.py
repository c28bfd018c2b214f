"""The discrete-event pipeline (simpy) that times one GEMM on one design: load → select → compute → write back.

A GEMM is cut into *steps* (:mod:`nmsim.sim.mapping` builds them): one wave of tiles, one tile per active unit,
working on one K-chunk. Symmetric units move in lockstep, so a step carries the whole wave's bytes and the
slowest tile's cycles. Four simpy processes pass steps along:

- **loader**: takes a free operand-buffer slot (two with double buffering, else one) and issues the step's
  operand reads through every memory level at once; each level is a channel with a bandwidth and a latency that
  serves requests first come, first served, so loads and write-backs contend; loads complete in issue order;
- **selector**: the on-the-fly top-N-of-M compressor, pipelined: a step occupies it for groups ÷ (groups per
  cycle) cycles and leaves it after the network's latency;
- **array**: pipeline fill (array fill/drain, metadata decode and operand-select mux stages) plus busy cycles;
  it frees the buffer slot when done and starts the write-back of a finished tile;
- **write-back**: output bytes through every level.

The array's idle time is charged to the stage it waited for: ``stall_memory`` (operands not loaded yet),
``stall_selector`` (loaded but not yet compressed), and ``drain`` (write-backs after the last step); cycles a
step's operand feed needs beyond its MAC cycles are ``stall_feed``. ``overhead`` (a kernel's fixed cost) is added
by the caller. busy + fill + stall_feed + stall_memory + stall_selector + drain + overhead = cycles.

Fast-forward: consecutive identical waves (a *block* of steps repeated ``count`` times) reach a periodic steady
state after a few blocks, repeating every block or alternating between the buffer slots. The engine simulates
``warmup_blocks`` of them, finds the shortest period whose last two spans agree (else it simulates four times as
many) and adds the remaining whole periods at that span, which shifts every later event by the same amount. ``warmup_blocks=None`` simulates every step (the tests check both agree).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import simpy

BREAKDOWN = ("busy", "fill", "stall_feed", "stall_memory", "stall_selector", "drain", "overhead")
_PER_STEP = ("busy", "fill", "stall_feed", "stall_memory", "stall_selector")


@dataclass(frozen=True)
class Step:
    """One wave of tiles on one K-chunk; byte tuples are per memory level, outermost first."""

    load_bytes: tuple[float, ...]  # operand bytes read at each level
    select_cycles: float  # compressor throughput cycles (0: no compressor)
    fill_cycles: float  # cycles before the first MAC result: array fill/drain, decode and mux stages
    busy_cycles: float  # cycles the MACs issue
    writeback_bytes: tuple[float, ...]  # output bytes written at each level when the step finishes tiles
    feed_cycles: float = 0.0  # cycles beyond busy the operand feed (shared-memory bandwidth per core) needs


@dataclass(frozen=True)
class Block:
    """The steps of one wave, in order; a schedule repeats blocks."""

    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Channel:
    """One memory level as the pipeline sees it."""

    name: str
    bytes_per_cycle: float  # math.inf: no bandwidth limit
    latency_cycles: float


@dataclass
class PipelineResult:
    cycles: float
    breakdown: dict[str, float]  # cause → cycles, keys BREAKDOWN
    steps: int  # steps in the GEMM
    simulated_steps: int  # steps the event loop ran (the rest were fast-forwarded)


class _Channels:
    """FIFO reservation per level: a request made at ``now`` starts when the level is free."""

    def __init__(self, channels: tuple[Channel, ...]):
        self.channels = channels
        self.free_at = [0.0] * len(channels)

    def reserve(self, now: float, nbytes: tuple[float, ...]) -> float:
        """Reserve every level for its bytes; return when the last byte has arrived."""
        done = now
        for index, (channel, amount) in enumerate(zip(self.channels, nbytes)):
            if amount <= 0:
                continue
            duration = amount / channel.bytes_per_cycle
            start = max(now, self.free_at[index])
            self.free_at[index] = start + duration
            done = max(done, start + duration + channel.latency_cycles)
        return done


def _simulate(steps: list[Step], channels: tuple[Channel, ...], buffer_slots: int, selector_latency: float):
    """Run the four processes over ``steps``; return per-step array finish times and charges, and the end."""
    env = simpy.Environment()
    links = _Channels(channels)
    slots = simpy.Container(env, capacity=buffer_slots, init=buffer_slots)
    loaded, selected = simpy.Store(env), simpy.Store(env)
    load_done = [0.0] * len(steps)
    array_done = [0.0] * len(steps)
    charged = [dict.fromkeys(_PER_STEP, 0.0) for _ in steps]
    writebacks_done = [0.0]
    writeback_done = [0.0] * len(steps)  # when each step's write-back (if any) completes

    def deliver(store: simpy.Store, index: int, delay: float, times: list[float] | None = None):
        yield env.timeout(delay)
        if times is not None:
            times[index] = env.now
        store.put(index)

    def loader():
        for index, step in enumerate(steps):
            yield slots.get(1)  # a free slot: the load is issued; up to buffer_slots loads are in flight
            env.process(deliver(loaded, index, links.reserve(env.now, step.load_bytes) - env.now, load_done))

    def selector():  # pipelined: a new group set enters every ``work`` cycles, each leaves after the latency
        for _ in steps:
            index = yield loaded.get()
            work = steps[index].select_cycles
            if work > 0:
                yield env.timeout(work)
                env.process(deliver(selected, index, selector_latency))
            else:
                selected.put(index)

    def array():
        for index, step in enumerate(steps):
            idle_from = env.now
            yield selected.get()
            waited = env.now - idle_from
            on_memory = min(max(load_done[index] - idle_from, 0.0), waited)
            cost = charged[index]
            cost["stall_memory"] = on_memory
            cost["stall_selector"] = waited - on_memory
            cost["fill"], cost["busy"], cost["stall_feed"] = step.fill_cycles, step.busy_cycles, step.feed_cycles
            yield env.timeout(step.fill_cycles + step.busy_cycles + step.feed_cycles)
            array_done[index] = env.now
            slots.put(1)
            writeback_done[index] = env.now
            if any(step.writeback_bytes):
                writeback_done[index] = links.reserve(env.now, step.writeback_bytes)
                writebacks_done[0] = max(writebacks_done[0], writeback_done[index])

    env.process(loader())
    env.process(selector())
    env.process(array())
    env.run()
    array_end = array_done[-1] if steps else 0.0
    return array_done, writeback_done, charged, array_end, max(array_end, writebacks_done[0])


def _steady_span(block_ends: list[float], cycle: int) -> tuple[int, float] | None:
    """The shortest period p (dividing ``cycle``) whose last two p-block spans agree: (p, span), or None."""
    for period in (p for p in range(1, cycle + 1) if cycle % p == 0):
        if len(block_ends) < 2 * period + 1:
            return None
        last, middle, first = block_ends[-1], block_ends[-1 - period], block_ends[-1 - 2 * period]
        if math.isclose(last - middle, middle - first, rel_tol=1e-9, abs_tol=1e-9):
            return period, last - middle
    return None


def _block_span(array_done: list[float], settled: list[float], ends: list[int], cycle: int
                ) -> tuple[int, float] | None:
    """The steady (period, span) of a run of blocks ending at step indices ``ends``, or None. Both the array and
    the completion of everything issued so far (``settled``: array and write-backs) must advance by the same span,
    so that skipping whole periods shifts the rest of the schedule, write-back backlog included, rigidly."""
    array = _steady_span([array_done[end] for end in ends], cycle)
    total = _steady_span([settled[end] for end in ends], cycle)
    if array is None or total is None or array[0] != total[0] or \
            not math.isclose(array[1], total[1], rel_tol=1e-9, abs_tol=1e-9):
        return None
    return array


def run_pipeline(
    schedule: list[tuple[Block, int]],
    channels: tuple[Channel, ...],
    *,
    buffer_slots: int,
    selector_latency: float = 0.0,
    warmup_blocks: int | None = 5,
) -> PipelineResult:
    """Cycles of ``schedule`` (blocks with repeat counts, in order) through the four-stage pipeline."""
    if buffer_slots < 1:
        raise ValueError("the operand buffer needs at least one slot")
    cycle = math.lcm(*range(1, buffer_slots + 1))  # steady states may alternate between the buffer slots
    if warmup_blocks is not None and warmup_blocks < 2 * cycle + 1:
        raise ValueError(f"fast-forward needs at least {2 * cycle + 1} warm-up blocks to see a steady period")
    longest = max((count for _, count in schedule), default=0)
    warmup = longest if warmup_blocks is None else min(warmup_blocks, longest)
    while True:
        steps: list[Step] = []
        runs = []  # (first step of each simulated block, steps per block, blocks skipped)
        for block, count in schedule:
            simulated = min(count, warmup)
            simulated += (count - simulated) % cycle  # skip whole cycles only
            starts = []
            for _ in range(simulated):
                starts.append(len(steps))
                steps.extend(block.steps)
            runs.append((starts, len(block.steps), count - simulated))
        array_done, writeback_done, charged, array_end, end = _simulate(steps, channels, buffer_slots,
                                                                        selector_latency)
        settled = list(itertools.accumulate((max(a, w) for a, w in zip(array_done, writeback_done)), max))
        spans = [_block_span(array_done, settled, [start + size - 1 for start in starts], cycle) if skipped
                 else (1, 0.0) for starts, size, skipped in runs]
        if all(spans) or warmup >= longest:
            break
        warmup = min(4 * warmup, longest)  # not periodic yet: simulate more blocks

    breakdown = dict.fromkeys(BREAKDOWN, 0.0)
    for cost in charged:
        for cause, cycles in cost.items():
            breakdown[cause] += cycles
    skipped_time = 0.0
    skipped_steps = 0
    for (starts, block_steps, skipped), (period, span) in zip(runs, spans):
        if skipped == 0:
            continue
        repeats = skipped // period
        skipped_time += repeats * span
        skipped_steps += skipped * block_steps
        for index in range(starts[-period], starts[-1] + block_steps):
            for cause, cycles in charged[index].items():
                breakdown[cause] += repeats * cycles
    breakdown["drain"] = end - array_end
    return PipelineResult(
        cycles=end + skipped_time,
        breakdown=breakdown,
        steps=len(steps) + skipped_steps,
        simulated_steps=len(steps),
    )
