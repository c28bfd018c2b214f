"""The discrete-event pipeline (simpy) that times one GEMM on one design: load → select → compute → write back.

A GEMM is cut into *steps* (:mod:`nmsim.sim.mapping` builds them): one wave of tiles, one tile per active unit,
working on one K-chunk. Symmetric units move in lockstep, so a step carries the whole wave's bytes and the
slowest tile's cycles. Three simpy processes pass the steps along in order, each waiting on one event of the
stage before it (the step's arrival, its compression, the array finishing the step that held its buffer slot), so
a step costs the event loop a handful of events and no queue:

- **loader**: takes a free operand-buffer slot (two with double buffering, else one) and issues the step's
  operand reads through every memory level at once; each level is a channel with a bandwidth and a latency that
  serves requests first come, first served, so loads and write-backs contend;
- **selector**: the on-the-fly top-N-of-M compressor, pipelined: a step occupies it for groups ÷ (groups per
  cycle) cycles and leaves it after the network's latency (a design without one passes each step on as it
  arrives);
- **array**: pipeline fill (array fill/drain, metadata decode and operand-select mux stages) plus busy cycles;
  it frees the buffer slot when done and issues the write-back of a finished tile (output bytes through every
  level).

The array's idle time is charged to the stage it waited for: ``stall_memory`` (operands not loaded yet),
``stall_selector`` (loaded but not yet compressed), and ``drain`` (write-backs after the last step); cycles a
step's operand feed needs beyond its MAC cycles are ``stall_feed``. ``overhead`` (a kernel's fixed cost) is added
by the caller. busy + fill + stall_feed + stall_memory + stall_selector + drain + overhead = cycles.

Fast-forward: consecutive identical waves (a *block* of steps repeated ``count`` times) reach a periodic steady
state after a few blocks, repeating every block or alternating between the buffer slots. The engine simulates
``warmup_blocks`` of them and looks for the shortest period after which the pipeline's whole state repeats one span
later: every event time of every step (load issue and arrival, compression, array finish, write-back) and each
memory level's queue end (:func:`_steady`). It then adds the remaining whole periods at that span, which shifts
every later event by the same amount; when no period repeats yet it simulates four times as many blocks.
``warmup_blocks=None`` simulates every step (the tests check both agree).
"""

from __future__ import annotations

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
    """Run the processes over ``steps``; return per step its array finish, its event times (:func:`_steady`) and
    its charges, then when the array finished and when everything (write-backs included) finished. The loader
    waits on the array freeing the slot of the step ``buffer_slots`` back, the selector on the step's operands,
    the array on its compressed groups."""
    env = simpy.Environment()
    links = _Channels(channels)
    count = len(steps)
    loaded = [env.event() for _ in steps]  # succeeds when the step's operands have arrived
    compresses = any(step.select_cycles > 0 for step in steps)
    selected = [env.event() for _ in steps] if compresses else loaded  # … when its groups are compressed
    freed = [env.event() for _ in steps]  # … when the array has finished it: its buffer slot is free
    load_done = [0.0] * count
    select_done = [0.0] * count if compresses else load_done  # nothing to compress: selected when it arrives
    array_done = [0.0] * count
    charged = [dict.fromkeys(_PER_STEP, 0.0) for _ in steps]
    events: list[list[float]] = [[] for _ in steps]  # per step: every time that decides what comes after it
    writebacks_done = [0.0]

    def queue_ends() -> list[float]:
        """When each level's queue empties (now where it is idle): its backlog, the channels' whole state."""
        return [max(free, env.now) for free in links.free_at]

    def deliver(done: list[simpy.Event], index: int, delay: float, times: list[float]) -> None:
        """Succeed ``done[index]`` ``delay`` cycles from now and note the time: a timeout's callback, which costs
        the event loop one event where a process per delivery would cost three."""
        def arrive(_event) -> None:
            times[index] = env.now
            done[index].succeed()
        env.timeout(delay).callbacks.append(arrive)

    def loader():
        for index, step in enumerate(steps):
            if index >= buffer_slots:  # up to buffer_slots loads are in flight
                yield freed[index - buffer_slots]
            arrival = links.reserve(env.now, step.load_bytes)
            events[index] += (env.now, *queue_ends())
            deliver(loaded, index, arrival - env.now, load_done)

    def selector():  # pipelined: a new group set enters every ``work`` cycles, each leaves after the latency
        for index, step in enumerate(steps):
            yield loaded[index]
            if step.select_cycles > 0:
                yield env.timeout(step.select_cycles)
                deliver(selected, index, selector_latency, select_done)
            else:
                select_done[index] = env.now
                selected[index].succeed()

    def array():
        for index, step in enumerate(steps):
            idle_from = env.now
            yield selected[index]
            waited = env.now - idle_from
            on_memory = min(max(load_done[index] - idle_from, 0.0), waited)
            cost = charged[index]
            cost["stall_memory"] = on_memory
            cost["stall_selector"] = waited - on_memory
            cost["fill"], cost["busy"], cost["stall_feed"] = step.fill_cycles, step.busy_cycles, step.feed_cycles
            yield env.timeout(step.fill_cycles + step.busy_cycles + step.feed_cycles)
            array_done[index] = env.now
            freed[index].succeed()
            written = env.now
            if any(step.writeback_bytes):
                written = links.reserve(env.now, step.writeback_bytes)
                writebacks_done[0] = max(writebacks_done[0], written)
            events[index] += (load_done[index], select_done[index], env.now, written,
                              max(writebacks_done[0], env.now), *queue_ends())

    env.process(loader())
    if compresses:
        env.process(selector())
    env.process(array())
    env.run()
    array_end = array_done[-1] if steps else 0.0
    return array_done, events, charged, array_end, max(array_end, writebacks_done[0])


def _steady(array_done: list[float], events: list[list[float]], starts: list[int], block_steps: int, cycle: int
            ) -> tuple[int, float, int] | None:
    """The steady state of a run of simulated blocks (first steps ``starts``): (period, span, tail), or None.

    A period p (blocks, dividing ``cycle``) is steady when every event time of every step of the last ``cycle`` + 1
    blocks (load issue and arrival, compression, array finish, write-back, each memory level's queue end) is the
    time p blocks earlier plus one span. The window covers every buffer slot in flight, so the whole state of the
    pipeline repeats and skipping whole periods shifts everything after them by whole spans (comparing one step per
    block is not enough: with two slots, each step can shift uniformly from block to block while the state repeats
    only every two blocks). ``tail`` is how many final blocks the steady state leaves out: 0, or 1 where only the
    last block differs (its write-backs meet no later loads: the end of what was simulated), and the skipped
    periods go in before it."""
    def times(block: int) -> list[float]:
        first = starts[block]
        return [time for index in range(first, first + block_steps) for time in events[index]]

    for tail in (0, 1):
        blocks = len(starts) - tail
        for period in (p for p in range(1, cycle + 1) if cycle % p == 0):
            if blocks < cycle + 1 + period:
                break
            last = blocks - 1
            span = array_done[starts[last]] - array_done[starts[last - period]]
            if all(math.isclose(later - earlier, span, rel_tol=1e-9, abs_tol=1e-9)
                   for block in range(last - cycle, last + 1)
                   for earlier, later in zip(times(block - period), times(block))):
                return period, span, tail
    return None


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
        array_done, events, charged, array_end, end = _simulate(steps, channels, buffer_slots, selector_latency)
        spans = [_steady(array_done, events, starts, size, cycle) if skipped else (1, 0.0, 0)
                 for starts, size, skipped in runs]
        if all(spans) or warmup >= longest:
            break
        warmup = min(4 * warmup, longest)  # not periodic yet: simulate more blocks

    breakdown = dict.fromkeys(BREAKDOWN, 0.0)
    for cost in charged:
        for cause, cycles in cost.items():
            breakdown[cause] += cycles
    skipped_time = 0.0
    skipped_steps = 0
    for (starts, block_steps, skipped), (period, span, tail) in zip(runs, spans):
        if skipped == 0:
            continue
        repeats = skipped // period
        skipped_time += repeats * span
        skipped_steps += skipped * block_steps
        last = len(starts) - 1 - tail  # the steady period's last block
        for index in range(starts[last - period + 1], starts[last] + block_steps):
            for cause, cycles in charged[index].items():
                breakdown[cause] += repeats * cycles
    breakdown["drain"] = end - array_end
    return PipelineResult(
        cycles=end + skipped_time,
        breakdown=breakdown,
        steps=len(steps) + skipped_steps,
        simulated_steps=len(steps),
    )
