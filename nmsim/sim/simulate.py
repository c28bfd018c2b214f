"""Per-GEMM and per-model simulation: the simulated cycles beside the roofline (and a measured GPU ratio).

:func:`simulate_gemm` maps one GEMM (:mod:`nmsim.sim.mapping`) and runs the pipeline (:mod:`nmsim.sim.engine`).
On tensor cores the mapper (:mod:`nmsim.sim.tiling`) ranks tilings by its closed form and the pipeline times the
``TIMED_CANDIDATES`` best; the fastest is kept. Three caches: the tiling choice per statistics class (statistics at
1 % resolution), the pipeline run per GEMM shape, part, tiling and what its tiles read of the layer's statistics
(:meth:`LayerUse.timing_key`; a layer whose statistics equal its class's reuses the run that chose its tiling), and
the full result (energy included) per exact use; a dense run ignores what the design's sparsity supports, so designs
deriving from one part share its dense results.

:func:`simulate_model` runs every linear GEMM of a model for one phase and pattern and adds, per GEMM, the same
design run dense and the dense baseline design.

Cycle convention: SCALE-Sim reports a systolic GEMM's last cycle index, one less than the fold count times the
per-fold cycles; systolic designs follow it so the dense numbers match (``tests/sim/scalesim_golden.json``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

from nmsim.errors import NmsimError
from nmsim.hw.energy import ActionCounts, EnergyReport, gemm_energy
from nmsim.hw.spec import NO_SPARSITY, AcceleratorSpec
from nmsim.patterns import Pattern
from nmsim.sim.engine import run_pipeline
from nmsim.sim.mapping import GemmMapping, OperandBytes, map_gemm, smallest_tile_tokens, tilings
from nmsim.sim.tiling import TIMED_CANDIDATES, TileChoice
from nmsim.sim.roofline import roofline
from nmsim.sim.timing import Timing, load_timing
from nmsim.traces.reader import TraceData
from nmsim.sim.usage import DENSE, DENSE_USE, LayerUse, layer_use
from nmsim.sim.workload import Gemm, ModelShape, Phase, linear_gemms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GemmSimulation:
    """One GEMM on one design."""

    cycles: float
    breakdown: dict[str, float]  # cause → cycles (engine.BREAKDOWN)
    level_bytes: tuple[OperandBytes, ...]  # per memory level, outermost first
    mac_slots: float  # MACs the datapath issued
    selector_groups: float
    utilization: float  # MAC slots ÷ (cycles × peak MACs per cycle)
    roofline_cycles: float
    energy: EnergyReport
    tile: str
    steps: int
    simulated_steps: int


@functools.lru_cache(maxsize=1 << 15)
def _timed(m: int, k: int, n: int, spec: AcceleratorSpec, use: LayerUse, timing: Timing, ideal_memory: bool,
           tiling: TileChoice | None):
    """(mapping, pipeline result) of one GEMM with one tiling; cached, so that a layer whose statistics equal its
    class's reuses the run that chose the tiling."""
    gemm = Gemm(0, "q", "prefill", m, k, n)
    mapping: GemmMapping = map_gemm(gemm, spec, use, timing, ideal_memory=ideal_memory, tiling=tiling)
    result = run_pipeline(list(mapping.schedule), mapping.channels, buffer_slots=mapping.buffer_slots,
                          selector_latency=mapping.selector_latency)
    return mapping, result


def _statistics_class(use: LayerUse) -> LayerUse:
    """What the tiling choice looks at, at 1 % resolution: layers whose statistics agree that closely share one
    choice (each is still timed with its own statistics)."""
    rows = tuple((tokens, round(fraction, 2)) for tokens, fraction in use.rows_needed)
    return LayerUse(use.pattern, use.operand, round(use.compute_density, 2), rows)


@functools.lru_cache(maxsize=1 << 14)
def _best_tiling(m: int, k: int, n: int, spec: AcceleratorSpec, use: LayerUse, timing: Timing,
                 ideal_memory: bool) -> TileChoice:
    """The mapper's choice: its closed form's ``TIMED_CANDIDATES`` best, each timed in the pipeline; the fastest."""
    gemm = Gemm(0, "q", "prefill", m, k, n)
    best = None
    for tiling in tilings(gemm, spec, use, timing, ideal_memory=ideal_memory)[:TIMED_CANDIDATES]:
        mapping, result = _timed(m, k, n, spec, use, timing, ideal_memory, tiling)
        total = result.cycles + mapping.fixed_cycles
        if best is None or total < best[0] - 1e-9:
            best = (total, tiling)
    return best[1]


def _time_shape(m: int, k: int, n: int, spec: AcceleratorSpec, use: LayerUse, timing: Timing, ideal_memory: bool):
    """(mapping, pipeline result, cycles, breakdown) of one GEMM; ``use`` is a :meth:`LayerUse.timing_key`. The
    pipeline run is cached (:func:`_timed`); what is added here is arithmetic."""
    tiling = None if spec.compute.kind == "systolic" else \
        _best_tiling(m, k, n, spec, _statistics_class(use), timing, ideal_memory)
    mapping, result = _timed(m, k, n, spec, use, timing, ideal_memory, tiling)
    cycles, breakdown = result.cycles, dict(result.breakdown)
    if spec.compute.kind == "systolic":  # SCALE-Sim's last-cycle-index convention, charged to the final fold
        cycles -= 1
        breakdown["fill"] -= 1
    if not ideal_memory:  # the kernel's fixed cost; --ideal-memory times the datapath alone
        cycles += mapping.fixed_cycles
        breakdown["overhead"] += mapping.fixed_cycles
    return mapping, result, cycles, breakdown


@functools.lru_cache(maxsize=1 << 16)
def _simulate_shape(m: int, k: int, n: int, spec: AcceleratorSpec, use: LayerUse, timing: Timing,
                    ideal_memory: bool) -> GemmSimulation:
    gemm = Gemm(0, "q", "prefill", m, k, n)
    floor = 1 if spec.compute.kind == "systolic" else smallest_tile_tokens(m, spec, timing)
    key = use.timing_key(floor, m)
    mapping, result, cycles, breakdown = _time_shape(m, k, n, spec, key, timing, ideal_memory)
    rows = use.weight_rows_fraction(mapping.tile_m or m)  # 1 unless activations are pruned
    estimate = roofline(gemm, spec, use.pattern if use.sparse else DENSE, weight_rows_fraction=rows)
    peak = spec.compute.dense_macs_per_cycle
    gated = mapping.mac_slots * use.zero_slot_fraction
    actions = ActionCounts(
        macs=mapping.mac_slots - gated,
        gated_macs=gated,
        selector_groups=mapping.selector_groups,
        selector_group_size=use.pattern.m if mapping.selector_groups else 0,
        bytes_by_level=tuple((level.name, moved.total) for level, moved in zip(spec.memory, mapping.level_bytes)),
    )
    return GemmSimulation(
        cycles=cycles,
        breakdown=dict(breakdown),
        level_bytes=mapping.level_bytes,
        mac_slots=mapping.mac_slots,
        selector_groups=mapping.selector_groups,
        utilization=mapping.mac_slots / (cycles * peak),
        roofline_cycles=estimate.cycles,
        energy=gemm_energy(actions, spec),
        tile=mapping.tile,
        steps=result.steps,
        simulated_steps=result.simulated_steps,
    )


def clear_cache() -> None:
    """Forget cached GEMM results and tiling choices (benchmarks time cold runs; :func:`nmsim.sim.inference.
    clear_cache` also forgets the non-GEMM kernels)."""
    _simulate_shape.cache_clear()
    _best_tiling.cache_clear()
    _timed.cache_clear()


def cache_counts() -> tuple[int, int]:
    """(GEMM results served from the cache, GEMMs simulated) since the last :func:`clear_cache`."""
    info = _simulate_shape.cache_info()
    return info.hits, info.misses


@functools.lru_cache(maxsize=256)
def _dense_part(spec: AcceleratorSpec) -> AcceleratorSpec:
    """``spec`` without what only sparse runs read (its sparsity, its name): the part a dense run times. The die
    and vector unit stay: they set the die's size, and with it the wire energy (:func:`nmsim.hw.energy.wire_mm`)."""
    return dataclasses.replace(spec, name="", description="", source="", sparsity=NO_SPARSITY,
                               interconnect=None, kv_cache_bits=0)


def simulate_gemm(gemm: Gemm, spec: AcceleratorSpec, use: LayerUse, *, timing: Timing | None = None,
                  ideal_memory: bool = False) -> GemmSimulation:
    """Simulate ``gemm`` on ``spec`` as ``use`` says (``ideal_memory``: no bandwidth or latency limits). A dense
    run does not depend on what the design's sparsity supports, so designs that share a part share its result."""
    timing = timing or load_timing()
    if use.sparse:
        return _simulate_shape(gemm.m, gemm.k, gemm.n, spec, use, timing, ideal_memory)
    part = _dense_part(spec)
    try:
        return _simulate_shape(gemm.m, gemm.k, gemm.n, part, use, timing, ideal_memory)
    except NmsimError:  # say which design it was
        return _simulate_shape.__wrapped__(gemm.m, gemm.k, gemm.n, spec, use, timing, ideal_memory)


@dataclass(frozen=True)
class GemmRow:
    """One GEMM of a model run: the design with the layer's pattern, the design dense, the baseline dense."""

    gemm: Gemm
    use: LayerUse
    sparse: GemmSimulation
    dense: GemmSimulation
    baseline: GemmSimulation


@dataclass(frozen=True)
class ModelRun:
    spec: AcceleratorSpec
    baseline: AcceleratorSpec
    shape: ModelShape
    phase: Phase
    batch: int
    seq: int
    pattern: Pattern
    ideal: bool
    trace: str  # trace directory, or "" for the idealised N/M answer
    rows: tuple[GemmRow, ...]
    statistics: str = "ideal"  # where the masks' statistics came from: measured (trace), transplanted from …, ideal
    devices: int = 1  # tensor-parallel degree: the rows are one device's share


def simulate_model(
    spec: AcceleratorSpec,
    shape: ModelShape,
    *,
    phase: Phase,
    batch: int,
    seq: int,
    pattern: Pattern,
    baseline: AcceleratorSpec,
    trace: TraceData | None = None,
    ideal: bool = False,
    ideal_memory: bool = False,
    fallback_dense: bool = False,
    timing: Timing | None = None,
    devices: int = 1,
) -> ModelRun:
    """Every linear GEMM of ``shape`` in one phase (one device's share over ``devices``), with the layer pattern
    from the trace (or ideal N/M); the MoE router stays dense."""
    timing = timing or load_timing()
    if trace is not None:
        trace.check_model(shape)
    rows = []
    dense_runs: dict[tuple[int, int, int], tuple[GemmSimulation, GemmSimulation]] = {}  # every layer has the shapes
    for gemm in linear_gemms(shape, phase, batch, seq, devices):
        if gemm.prunable:
            stats = trace.for_gemm(_StatsKey(gemm.phase, gemm.layer, gemm.role)) if trace is not None else None
            use = layer_use(spec, pattern, stats, ideal=ideal, fallback_dense=fallback_dense)
        else:
            use = DENSE_USE
        size = (gemm.m, gemm.k, gemm.n)
        if size not in dense_runs:
            dense_runs[size] = (simulate_gemm(gemm, spec, DENSE_USE, timing=timing, ideal_memory=ideal_memory),
                                simulate_gemm(gemm, baseline, DENSE_USE, timing=timing, ideal_memory=ideal_memory))
        dense, base = dense_runs[size]
        rows.append(GemmRow(gemm=gemm, use=use, dense=dense, baseline=base,
                            sparse=simulate_gemm(gemm, spec, use, timing=timing, ideal_memory=ideal_memory)))
    log.debug("simulated %d GEMMs of %s on %s", len(rows), shape.name, spec.name)
    idealised = ideal or trace is None
    return ModelRun(spec, baseline, shape, phase, batch, seq, pattern, idealised,
                    str(trace.path) if trace is not None else "", tuple(rows),
                    "ideal" if idealised else trace.provenance, devices)


@dataclass(frozen=True)
class _StatsKey:
    """Where a GEMM's input statistics are in a trace: its phase, layer and projection role."""

    phase: str
    layer: int
    projection: str
