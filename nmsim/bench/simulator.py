"""Speed of the cycle simulator: a whole-model sweep, cost growth with sequence length and model size, and nmsim
beside SCALE-Sim 3.0.0 on the same GEMMs.

Every nmsim timing starts from a cold simulation cache (``clear_cache()``), so nothing is served
from an earlier measurement, and the best of several repeats is kept. SCALE-Sim is never imported: it runs in a
Python of its own through ``scripts/scalesim_golden.py --time``, one GEMM after another, each timed inside its
process from config parse to report. nmsim's side is :func:`~nmsim.sim.simulate.simulate_gemm` on a loaded design;
its config parse (preset YAML and timing file) is timed apart and shown in a second, stricter geometric mean.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import subprocess
from pathlib import Path

from nmsim.registry import BASELINE_DESIGN, DEFAULT_MODEL
from nmsim.bench import BenchResult, best_of
from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import parse_pattern
from nmsim.parallel import available_cores
from nmsim.registry import REPORT_PATTERNS as SWEEP_PATTERNS
from nmsim.registry import design_names as preset_names
from nmsim.registry import models as preset_shapes
from nmsim.sim.cases import grid_cases, simulate_cases
from nmsim.sim.inference import clear_cache
from nmsim.sim.simulate import cache_counts, simulate_gemm, simulate_model
from nmsim.sim.timing import Timing, load_timing
from nmsim.sim.usage import DENSE, layer_use
from nmsim.registry import model_shape
from nmsim.sim.workload import Gemm, linear_gemms
from nmsim.traces.reader import committed_traces

log = logging.getLogger(__name__)

SCALESIM_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "scalesim_golden.py"
MODEL = DEFAULT_MODEL  # the sweep, the sequence-length growth and the SCALE-Sim GEMMs
BASELINE = BASELINE_DESIGN  # the dense baseline design of every model run (the CLI's default)
GROWTH_DESIGNS = (("act-8of16", "8:16"), ("systolic-32x32-os", "dense"))  # design, pattern it runs
GROWTH_SEQS = (128, 512, 2048, 8192)  # prefill tokens (batch 1)
SEQ = 512  # prefill tokens of the sweep and of the model-size growth
SWEEP_GOAL_SECONDS = 2  # the SmolLM2 sweep of every preset
WHOLE_SWEEP_GOAL_SECONDS = 10  # SmolLM2 and the 7-8B shape presets; nmsim validate's simulations too
COMPARE_DESIGN = "systolic-32x32-os"  # the array SCALE-Sim models: 32x32, output stationary
COMPARE_TOKENS = 128  # M of the SCALE-Sim GEMMs
GEMM_REPEATS = 20  # one nmsim GEMM takes well under a millisecond: best of many


def _cold_best(work, repeats: int):
    """``work()``'s result (of the last run) and its best wall seconds over ``repeats`` runs, each from a cold
    cache."""
    last = {}
    seconds = best_of(lambda: last.update(result=work()), repeats, before=clear_cache)
    return last["result"], seconds


def sweep_benchmark(repeats: int = 3, designs: list[str] | None = None) -> list[BenchResult]:
    """``designs`` (default: every preset) × :data:`SWEEP_PATTERNS` × prefill and decode of :data:`MODEL` with the
    committed traces (read inside the timing, as ``nmsim run`` does): as nmsim runs it, on the available cores (the
    goal), and in one process, whose cache counts give the GEMM rates of one core."""
    specs = [AcceleratorSpec.from_name(name) for name in (designs or preset_names())]
    shape = model_shape(MODEL)
    baseline = AcceleratorSpec.from_name(BASELINE)
    cases = grid_cases(specs, SWEEP_PATTERNS, seq=SEQ)  # what sim.cases.sweep runs

    def sweep(workers: int | None):
        return simulate_cases(cases, shape, baseline=baseline, workers=workers,
                              traces=committed_traces(SWEEP_PATTERNS, MODEL)).totals

    table, seconds = _cold_best(lambda: sweep(None), repeats)
    _, serial = _cold_best(lambda: sweep(1), repeats)
    hits, misses = cache_counts()  # of the last one-process repeat, which ran the same calls as every other
    gemms = hits + misses
    return [
        BenchResult(f"sweep {shape.name}: {len(specs)} designs x {len(SWEEP_PATTERNS)} patterns x prefill S={SEQ}"
                    f" + decode, {len(table)} model runs, {available_cores()} cores (goal < {SWEEP_GOAL_SECONDS} s)",
                    seconds, "s", seconds / SWEEP_GOAL_SECONDS),
        BenchResult("  same sweep in one process (ratio: one process / all cores)", serial, "s", serial / seconds),
        BenchResult(f"  GEMM results per second, one process ({gemms}: pattern, dense and baseline per layer GEMM)",
                    gemms / serial, "1/s"),
        BenchResult(f"  GEMM simulations per second, one process ({misses} distinct, the rest from cache)",
                    misses / serial, "1/s"),
    ]


LARGE_MODELS = ("llama-2-7b", "llama-3.1-8b", "qwen2.5-7b", "gemma-3-4b")  # the 7-8B shape presets


def whole_model_sweep_benchmark(repeats: int = 3) -> list[BenchResult]:
    """The simulator's cost at scale: SmolLM2-135M and the four 7-8B shape presets, every preset, dense + the
    report's patterns, prefill and decode end to end (every op of the step; decode averaged over 128 steps from
    S), with the statistics nmsim run would use (measured, else transplanted; read once, outside the timing), on
    the available cores; and ``nmsim validate``'s simulations (every package set)."""
    from nmsim.sim.validation import package_sets, validate
    from nmsim.traces.sources import statistics_for

    specs = [AcceleratorSpec.from_name(name) for name in preset_names()]
    baseline = AcceleratorSpec.from_name(BASELINE)
    shapes = [model_shape(name) for name in (MODEL, *LARGE_MODELS)]
    cases = grid_cases(specs, SWEEP_PATTERNS, seq=SEQ)

    statistics = {shape.name: {parse_pattern(p): statistics_for(shape, p) for p in SWEEP_PATTERNS
                               if parse_pattern(p).kind == "nm"} for shape in shapes}  # read once, as a run does

    def sweep():
        return sum(len(simulate_cases(cases, shape, baseline=baseline, traces=statistics[shape.name]).totals)
                   for shape in shapes)

    rows, seconds = _cold_best(sweep, repeats)
    _, validate_seconds = _cold_best(lambda: validate(package_sets()), repeats)
    return [
        BenchResult(f"whole-model sweep: {len(shapes)} models x {len(specs)} designs x {len(SWEEP_PATTERNS)} patterns "
                    f"x prefill S={SEQ} + decode, {rows} model runs, {available_cores()} cores "
                    f"(goal < {WHOLE_SWEEP_GOAL_SECONDS} s)", seconds, "s", seconds / WHOLE_SWEEP_GOAL_SECONDS),
        BenchResult(f"nmsim validate's simulations, every package set (goal < {WHOLE_SWEEP_GOAL_SECONDS} s)",
                    validate_seconds, "s", validate_seconds / WHOLE_SWEEP_GOAL_SECONDS),
    ]


INFERENCE_MODEL = "llama-3.1-8b"  # the end-to-end benchmark: prefill + decode on one design
INFERENCE_DESIGN = "act-8of16"
INFERENCE_GOAL_SECONDS = 0.5


def inference_benchmark(repeats: int = 3) -> list[BenchResult]:
    """End-to-end prefill (S = :data:`SEQ`) and decode (128 steps from that context) of :data:`INFERENCE_MODEL` on
    :data:`INFERENCE_DESIGN` with 8:16 and its transplanted statistics (read outside the timing), from a cold
    cache, and the share of it spent outside the linear GEMMs' pipeline runs."""
    from nmsim.sim.inference import simulate_inference
    from nmsim.traces.sources import statistics_for

    spec, baseline = AcceleratorSpec.from_name(INFERENCE_DESIGN), AcceleratorSpec.from_name(BASELINE)
    shape = model_shape(INFERENCE_MODEL)
    pattern = parse_pattern("8:16")
    statistics = statistics_for(shape, pattern)
    run, seconds = _cold_best(lambda: simulate_inference(spec, shape, pattern=pattern, baseline=baseline, batch=1,
                                                         prompt=SEQ, trace=statistics), repeats)
    ops = len(run.prefill.ops) + len(run.decode.ops)
    return [BenchResult(f"end to end {INFERENCE_MODEL} on {INFERENCE_DESIGN}, 8:16: prefill S={SEQ} + decode "
                        f"{run.generate} steps, {ops} ops (goal < {INFERENCE_GOAL_SECONDS} s)", seconds, "s",
                        seconds / INFERENCE_GOAL_SECONDS)]


def _model_cost(spec: AcceleratorSpec, pattern: str, model: str, seq: int, baseline: AcceleratorSpec,
                repeats: int) -> list[BenchResult]:
    """Milliseconds for one whole-model prefill, and the pipeline steps its distinct GEMMs simulated."""
    shape = model_shape(model)
    run, seconds = _cold_best(lambda: simulate_model(spec, shape, phase="prefill", batch=1, seq=seq,
                                                     pattern=parse_pattern(pattern), baseline=baseline), repeats)
    distinct = {id(sim): sim for row in run.rows for sim in (row.sparse, row.dense, row.baseline)}  # cache hits
    steps = sum(sim.steps for sim in distinct.values())
    simulated = sum(sim.simulated_steps for sim in distinct.values())
    return [
        BenchResult(f"prefill {model} S={seq} on {spec.name}, {pattern} ({len(run.rows)} GEMMs, no trace)",
                    1e3 * seconds, "ms"),
        BenchResult(f"  steps simulated of {steps} in the pipeline ({len(distinct)} distinct GEMMs)", simulated,
                    "step", simulated / steps),
    ]


def growth_benchmark(repeats: int = 3, models: list[str] | None = None) -> list[BenchResult]:
    """Cost of :func:`simulate_model` as the sequence grows (:data:`MODEL`) and across ``models`` (default: the
    model-shape presets)."""
    baseline = AcceleratorSpec.from_name(BASELINE)
    designs = [(AcceleratorSpec.from_name(name), pattern) for name, pattern in GROWTH_DESIGNS]
    results = []
    for spec, pattern in designs:
        for seq in GROWTH_SEQS:
            results += _model_cost(spec, pattern, MODEL, seq, baseline, repeats)
    for spec, pattern in designs:
        for model in models or preset_shapes():
            results += _model_cost(spec, pattern, model, SEQ, baseline, repeats)
    return results


def _scalesim_gemms(python: str, spec: AcceleratorSpec, gemms: list[tuple[int, int, int]]) -> list[dict]:
    """SCALE-Sim's cycles and seconds per GEMM, run one after another in ``python`` (SCALE-Sim's own venv)."""
    compute = spec.compute
    command = [python, str(SCALESIM_SCRIPT), "--time", str(compute.rows), str(compute.cols), compute.dataflow,
               *(f"{m},{k},{n}" for m, k, n in gemms)]
    log.info("SCALE-Sim: %d GEMMs on %dx%d %s, one after another (tens of seconds each)", len(gemms),
             compute.rows, compute.cols, compute.dataflow)
    peer = []
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:  # stderr: ours
            for line in process.stdout:
                peer.append(json.loads(line))
                log.info("SCALE-Sim: %(m)dx%(k)dx%(n)d took %(seconds).1f s", peer[-1])
    except OSError as exc:
        raise NmsimError(f"cannot run SCALE-Sim with {python!r}: {exc}") from None
    if process.returncode != 0 or len(peer) != len(gemms):
        raise NmsimError(f"SCALE-Sim ({python}) exited with status {process.returncode} after {len(peer)} of "
                         f"{len(gemms)} GEMMs; its messages are above")
    return peer


def _geomean(values: list[float]) -> float:
    """Geometric mean."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _parse_design() -> tuple[AcceleratorSpec, Timing]:
    """:data:`COMPARE_DESIGN` and the timing constants, read from their YAML files."""
    return AcceleratorSpec.from_name(COMPARE_DESIGN), load_timing()


def scalesim_benchmark(python: str) -> list[BenchResult]:
    """Cycles and seconds of SCALE-Sim and nmsim on the distinct projection GEMMs of :data:`MODEL` at
    :data:`COMPARE_TOKENS` tokens, dense, on :data:`COMPARE_DESIGN` with ideal memory (SCALE-Sim's CALC mode)."""
    (spec, timing), parse_seconds = _cold_best(_parse_design, GEMM_REPEATS)
    use = layer_use(spec, DENSE)
    projections: dict[tuple[int, int, int], list[str]] = {}
    for gemm in linear_gemms(model_shape(MODEL), "prefill", 1, COMPARE_TOKENS):
        if gemm.layer == 0:
            projections.setdefault((gemm.m, gemm.k, gemm.n), []).append(gemm.projection)
    peer = _scalesim_gemms(python, spec, list(projections))
    results, speedups, speedups_with_parse = [], [], []
    for (m, k, n), names, theirs in zip(projections, projections.values(), peer):
        gemm = Gemm(0, names[0], "prefill", m, k, n)
        ours, seconds = _cold_best(functools.partial(simulate_gemm, gemm, spec, use, timing=timing,
                                                     ideal_memory=True), GEMM_REPEATS)
        label = f"{'/'.join(names)} {m}x{k}x{n}"
        cycles = int(ours.cycles) if float(ours.cycles).is_integer() else ours.cycles
        equal = cycles == theirs["total_cycles"]
        if not equal:
            log.error("cycles differ on %s: SCALE-Sim %s, nmsim %s", label, theirs["total_cycles"], cycles)
        speedups.append(theirs["seconds"] / seconds)
        speedups_with_parse.append(theirs["seconds"] / (seconds + parse_seconds))
        results += [
            BenchResult(f"{label} cycles, SCALE-Sim", theirs["total_cycles"], "cyc"),
            BenchResult(f"{label} cycles, nmsim ({'equal' if equal else 'ERROR: CYCLES DIFFER'})", cycles, "cyc",
                        cycles / theirs["total_cycles"]),
            BenchResult(f"{label} time, SCALE-Sim (config parse to report)", theirs["seconds"], "s"),
            BenchResult(f"{label} time, nmsim simulate_gemm (best of {GEMM_REPEATS})", 1e3 * seconds, "ms"),
            BenchResult(f"{label} speed-up, SCALE-Sim time / nmsim time", speedups[-1], "x"),
        ]
    results += [
        BenchResult(f"geometric-mean speed-up over {len(speedups)} GEMMs (goal >= 1000)", _geomean(speedups), "x"),
        BenchResult(f"nmsim config parse, preset YAML + timing file (best of {GEMM_REPEATS})", 1e3 * parse_seconds,
                    "ms"),
        BenchResult("geometric-mean speed-up counting nmsim's config parse for every GEMM",
                    _geomean(speedups_with_parse), "x"),
    ]
    return results


def run_simulator_benchmark(scalesim_python: str | None = None, repeats: int = 3, *,
                            designs: list[str] | None = None, models: list[str] | None = None) -> list[BenchResult]:
    """The sweep (of ``designs``, default every preset), the cost growth (across ``models``, default the
    model-shape presets) and, with ``scalesim_python`` (a Python with scalesim 3.0.0), SCALE-Sim beside."""
    results = sweep_benchmark(repeats, designs) + whole_model_sweep_benchmark(repeats) + \
        inference_benchmark(repeats) + growth_benchmark(repeats, models)
    if scalesim_python:
        results += scalesim_benchmark(scalesim_python)
    return results


PROFILE_FIT_GOAL_SECONDS = 30  # fitting a profile from a full committed trace


def profile_benchmark(repeats: int = 3) -> list[BenchResult]:
    """Fitting the mask model to a full committed trace (8:16, every layer and input), and a whole-model run with
    a transplanted profile against the same run with the measured trace (prefill and decode at batch 16)."""
    from nmsim.registry import TRACE_ROOT
    from nmsim.traces.profile import profile_from_trace
    from nmsim.traces.reader import TraceData
    from nmsim.traces.transplant import transplant

    trace = TraceData.open(TRACE_ROOT / "smollm2-135m_8of16_magnitude_none")
    fitted = {}
    fit_seconds = best_of(lambda: fitted.update(profile=profile_from_trace(trace)), repeats)
    profile = fitted["profile"]
    shape = model_shape(MODEL)
    spec, baseline = AcceleratorSpec.from_name("act-8of16"), AcceleratorSpec.from_name(BASELINE)
    pattern = parse_pattern("8:16")

    def run(statistics):
        for phase, batch in (("prefill", 1), ("decode", 16)):
            simulate_model(spec, shape, phase=phase, batch=batch, seq=SEQ, pattern=pattern, baseline=baseline,
                           trace=statistics)

    with_trace = best_of(lambda: run(trace), repeats, before=clear_cache)
    with_profile = best_of(lambda: run(transplant(profile, shape)), repeats, before=clear_cache)
    return [
        BenchResult(f"fit the mask model to {trace.path.name} ({len(profile.inputs)} inputs; goal < "
                    f"{PROFILE_FIT_GOAL_SECONDS} s)", fit_seconds, "s", fit_seconds / PROFILE_FIT_GOAL_SECONDS),
        BenchResult(f"{MODEL} 8:16 prefill + decode b16 on act-8of16 with the measured trace", with_trace, "s"),
        BenchResult("  same with a transplanted profile (ratio: profile / trace)", with_profile, "s",
                    with_profile / with_trace),
    ]
