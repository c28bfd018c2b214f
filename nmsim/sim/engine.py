"""The discrete-event pipeline (simpy) that times one GEMM on one design: load → select → compute → write back.

A GEMM is cut into *steps* (:mod:`nmsim.sim.mapping` builds them): one wave of tiles, one tile per active unit,
working on one K-chunk. Symmetric units move in lockstep, so a step carries the whole wave's bytes and the
slowest tile's cycles. Four simpy processes pass steps along:

- **loader**: takes a free operand-buffer slot (two with double buffering, else one) and issues the step's
  operand reads through every memory level at once; each level is a channel with a bandwidth and a latency that
  serves requests first come, first served, so loads and write-backs contend; loads complete in issue order;
- **selector**: the on-the-fly top-N-of-M compressor: its latency, then groups ÷ (groups per cycle);
- **array**: pipeline fill (array fill/drain, metadata decode and operand-select mux stages) plus busy cycles;
  it frees the buffer slot when done and starts the write-back of a finished tile;
- **write-back**: output bytes through every level.

The array's idle time is charged to the stage it waited for: ``stall_memory`` (operands not loaded yet),
``stall_selector`` (loaded but not yet compressed), and ``drain`` (write-backs after the last step).
busy + fill + stall_memory + stall_selector + drain = cycles.

Fast-forward: consecutive identical waves (a *block* of steps repeated ``count`` times) reach a periodic steady
state after a few blocks; the engine simulates ``warmup_blocks`` of them and adds the remaining ones at the
measured period, which shifts every later event by the same amount. ``warmup_blocks=None`` simulates every step
(the tests check both give the same cycles).
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

BREAKDOWN = ("busy", "fill", "stall_memory", "stall_selector", "drain")


@dataclass(frozen=True)
class Step:
    """One wave of tiles on one K-chunk; byte tuples are per memory level, outermost first."""

    load_bytes: tuple[float, ...]  # operand bytes read at each level
    select_cycles: float  # compressor throughput cycles (0: no compressor)
    fill_cycles: float  # cycles before the first MAC result: array fill/drain, decode and mux stages
    busy_cycles: float  # cycles the MACs issue
    writeback_bytes: tuple[float, ...]  # output bytes written at each level when the step finishes tiles


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


def run_pipeline(
    schedule: list[tuple[Block, int]],
    channels: tuple[Channel, ...],
    *,
    buffer_slots: int,
    selector_latency: float = 0.0,
    warmup_blocks: int | None = 3,
) -> PipelineResult:
    """Cycles of ``schedule`` (blocks with repeat counts, in order) through the four-stage pipeline."""
    if buffer_slots < 1:
        raise ValueError("the operand buffer needs at least one slot")
    if warmup_blocks is not None and warmup_blocks < 2:
        raise ValueError("fast-forward needs at least two warm-up blocks to measure a period")
    steps: list[Step] = []
    runs = []  # (first step index of each simulated block of the run, blocks skipped)
    for block, count in schedule:
        simulated = count if warmup_blocks is None else min(count, warmup_blocks)
        starts = []
        for _ in range(simulated):
            starts.append(len(steps))
            steps.extend(block.steps)
        runs.append((starts, len(block.steps), count - simulated))

    env = simpy.Environment()
    links = _Channels(channels)
    slots = simpy.Container(env, capacity=buffer_slots, init=buffer_slots)
    loaded, selected = simpy.Store(env), simpy.Store(env)
    load_done = [0.0] * len(steps)
    array_done = [0.0] * len(steps)
    charged = [dict.fromkeys(BREAKDOWN[:4], 0.0) for _ in steps]
    writebacks_done = [0.0]

    def land(index: int, delay: float):
        yield env.timeout(delay)
        load_done[index] = env.now
        loaded.put(index)

    def loader():
        for index, step in enumerate(steps):
            yield slots.get(1)  # a free slot: the load is issued; up to buffer_slots loads are in flight
            env.process(land(index, links.reserve(env.now, step.load_bytes) - env.now))

    def selector():
        for _ in steps:
            index = yield loaded.get()
            work = steps[index].select_cycles
            if work > 0:
                yield env.timeout(selector_latency + work)
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
            cost["fill"], cost["busy"] = step.fill_cycles, step.busy_cycles
            yield env.timeout(step.fill_cycles + step.busy_cycles)
            array_done[index] = env.now
            slots.put(1)
            if any(step.writeback_bytes):
                writebacks_done[0] = max(writebacks_done[0], links.reserve(env.now, step.writeback_bytes))

    env.process(loader())
    env.process(selector())
    env.process(array())
    env.run()

    breakdown = dict.fromkeys(BREAKDOWN, 0.0)
    for cost in charged:
        for cause, cycles in cost.items():
            breakdown[cause] += cycles
    skipped_time = 0.0
    skipped_steps = 0
    for starts, block_steps, skipped in runs:
        if skipped == 0:
            continue
        last_end = array_done[starts[-1] + block_steps - 1]
        period = last_end - array_done[starts[-2] + block_steps - 1]
        skipped_time += skipped * period
        skipped_steps += skipped * block_steps
        for index in range(starts[-1], starts[-1] + block_steps):
            for cause, cycles in charged[index].items():
                breakdown[cause] += skipped * cycles
    array_end = array_done[-1] if steps else 0.0
    end = max(array_end, writebacks_done[0])
    breakdown["drain"] = end - array_end
    return PipelineResult(
        cycles=end + skipped_time,
        breakdown=breakdown,
        steps=len(steps) + skipped_steps,
        simulated_steps=len(steps),
    )
