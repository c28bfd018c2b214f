"""``nmsim run`` and ``nmsim simulate`` as lists of stages (in the spirit of ZigZag's stage list).

``nmsim run`` (:func:`run`), data flowing one way::

    accuracy rows ─► traces ─► trace statistics ─► simulation results ─► tables ─► figures ─► rendered report
    (accuracy_stage) (trace_stage) (statistics_stage) (simulation_stage) (tables_stage) (report_stage)

The designs, the model's shape and a sweep plan are read and checked first (:func:`load_designs`), so bad input
stops the run before any work.

Each stage is a function of plain typed inputs that returns plain typed outputs, so any one can be called alone from
Python. Files are read at the edges: designs, traces and accuracy tables by the first stages, the report written
by the last. The accuracy stage decides what to compute by row *key* (model, pattern, operand, criterion,
mitigation, targets, sequence length, tokens, data). The simulation stage runs every case the tables, the
sensitivity analysis and a parameter sweep need, each once; nothing after it simulates.

``nmsim simulate`` (:func:`simulate`): design + model + trace → every linear GEMM simulated → per-GEMM tables,
totals, area.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from nmsim import __version__
from nmsim.accuracy.table import expected_tokens, method_labels, read_rows, row_key
from nmsim.errors import NmsimError
from nmsim.hw.die import AREA_LEVELS, design_area_levels
from nmsim.hw.spec import AcceleratorSpec
from nmsim.io import atomic_write_text, write_table
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import (BASELINE_DESIGN, DEFAULT_MODEL, REPORT_PATTERNS, STUDY_CRITERIA, STUDY_MAX_TOKENS,
                            STUDY_MITIGATIONS, STUDY_PATTERNS, STUDY_TARGETS, TARGET_MODELS, TRACE_ROOT, ModelShape,
                            band_source, design_names, find_model, model_shape)
from nmsim.registry import DEPLOYMENT_DECODE_BATCHES, DEPLOYMENT_DECODE_CONTEXTS, DEPLOYMENT_PREFILL_TOKENS
from nmsim.report import deployment as dep
from nmsim.report import sensitivity as sens
from nmsim.report import tables
from nmsim.report.folder import check_report_name, staged, tidy
from nmsim.sim.cases import SimCase, SimulationResults, simulate_cases
from nmsim.sim.param_sweep import SweepPlan, check_sweep, load_sweep, run_sweep
from nmsim.sim.results import SimulateOutput, describe, gemm_table, totals
from nmsim.sim.inference import DEFAULT_GENERATE, capacity_message, check_fits, simulate_inference
from nmsim.sim.inference_tables import op_table
from nmsim.sim.simulate import simulate_model
from nmsim.traces.reader import TraceData
from nmsim.traces.sources import missing_message, statistics_for

log = logging.getLogger(__name__)

REPORTS = Path("reports")
# committed study rows that join the main job's own table (Gemma 3 270M's stand in for the Gemma targets)
STUDY_TABLES = (REPORTS / "study_smollm2_16k.csv", REPORTS / "study_gemma3_16k.csv")


# --- requests --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AccuracyRequest:
    """The accuracy grid as the command line spells it, and how to evaluate it (``nmsim eval``, ``nmsim run``)."""

    out: Path = REPORTS / "accuracy"  # writes out.csv and out.md
    json: Path | None = None
    model: str = DEFAULT_MODEL
    patterns: tuple[Pattern, ...] = STUDY_PATTERNS
    criteria: tuple[str, ...] = STUDY_CRITERIA
    mitigations: tuple[str, ...] = STUDY_MITIGATIONS
    targets: tuple[str, ...] = STUDY_TARGETS
    layers: str | None = None
    exclude_layers: str | None = None
    prefill_only: bool = False
    weight_patterns: tuple[Pattern, ...] = ()
    weight_methods: tuple[str, ...] = ("magnitude", "wanda")
    headline_from: Path | None = None  # instead of the grid: the headline methods of this finished table
    seqlen: int = 512
    max_tokens: int | None = STUDY_MAX_TOKENS  # None: the whole test split
    data_dir: str | None = None
    batch_size: int = 1
    calibration_windows: int = 16
    learn_windows: int = 64
    learn_steps: int | None = None
    learn_lr: float = 1e-4
    device: str = "cpu"  # cpu, cuda, cuda:N, auto (nmsim.llm.device); not part of a row's key
    dtype: str = "float32"  # float32, bfloat16, float16: part of a row's key
    recompute: bool = False  # evaluate every row again
    fidelity: bool = True  # KL, top-1 and greedy agreement with dense beside perplexity
    command: str = ""
    scheduler: str | None = None  # rows on this Dask scheduler's workers (nmsim.accuracy.distributed)
    workers: int | None = None  # > 1: rows on a local Dask cluster of this many processes

    @property
    def table(self) -> Path:
        return self.out.with_suffix(".csv")


@dataclass(frozen=True)
class RunRequest:
    """``nmsim run``: the accuracy rows, the traces, every design → ``out_root/name/``."""

    name: str = DEFAULT_MODEL  # the report folder under out_root
    model: str = DEFAULT_MODEL
    designs: tuple[str, ...] = ()  # preset names or YAML paths; () = every design preset
    baseline: str = BASELINE_DESIGN
    accuracy: tuple[Path, ...] = (REPORTS / "accuracy.csv", *STUDY_TABLES)  # tables whose rows compete
    patterns: tuple[Pattern, ...] = REPORT_PATTERNS
    trace_root: Path = TRACE_ROOT
    sweep: Path | None = None  # a sweep file whose points join the trade-off table and plots
    out_root: Path = REPORTS
    command: str = "nmsim run"
    workers: int | None = None  # sweep only
    scheduler: str | None = None  # sweep only
    sweep_yes: bool = False  # sweep only: run it even when its estimated time is above the budget
    allow_ideal: bool = False  # patterns without a trace use the idealised N/M answer instead of stopping
    study: AccuracyRequest | None = None  # the accuracy stage; None: use the tables in ``accuracy`` as they are
    recapture: bool = False  # capture the traces of ``patterns`` again
    area_level: str = "die"  # the area the decision metric divides by: datapath, core or die
    target_models: tuple[str, ...] = TARGET_MODELS  # end to end at deployment scale; () = none
    sensitivity_pairs: tuple[tuple[Pattern, Pattern], ...] = ()  # () = 8:16 vs 16:32 where the run has both
    prefill_tokens: tuple[int, ...] = DEPLOYMENT_PREFILL_TOKENS  # the deployment scenarios
    decode_batches: tuple[int, ...] = DEPLOYMENT_DECODE_BATCHES
    decode_contexts: tuple[int, ...] = DEPLOYMENT_DECODE_CONTEXTS

    def __post_init__(self) -> None:  # patterns become values at the boundary, dense first, no repeats
        check_report_name(self.name)  # joined to out_root, it must stay inside it
        patterns = tuple(dict.fromkeys(parse_pattern(p) for p in (Pattern.dense(), *self.patterns)))
        object.__setattr__(self, "patterns", patterns)
        pairs = tuple(dict.fromkeys((parse_pattern(a), parse_pattern(b)) for a, b in self.sensitivity_pairs))
        object.__setattr__(self, "sensitivity_pairs", pairs)


@dataclass(frozen=True)
class Designs:
    """The designs of a run (the dense baseline joins when none is dense) and its baseline."""

    designs: list[AcceleratorSpec]
    baseline: AcceleratorSpec
    natives: dict[Pattern, AcceleratorSpec] = field(default_factory=dict)  # pattern → its native design


# --- stage 1: accuracy rows -----------------------------------------------------------------------------------------
def _model_row_name(model: str) -> str | None:
    """The ``model`` column a table row of ``model`` gets (None when only loading it tells)."""
    entry = find_model(model)
    if entry is not None:
        return entry.name
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        return path.stem
    return path.resolve().name if path.is_dir() else None


def planned_row_keys(request: AccuracyRequest) -> set[tuple] | None:
    """The keys of every row the grid asks for, torch-free; None when they cannot be known without loading the
    model (a headline grid, the whole split, a hub model)."""
    from nmsim.llm.data import load_split
    from nmsim.sparsify.mitigations import parse_mitigation
    from nmsim.sparsify.targets import make_targets

    name = _model_row_name(request.model)
    if request.headline_from is not None or request.max_tokens is None or name is None:
        return None
    phase = "prefill" if request.prefill_only else "all"
    targets = [str(make_targets(t, layers=request.layers, exclude_layers=request.exclude_layers, phase=phase))
               for t in request.targets]
    labels = [method_labels(Pattern.dense(), "", "", "", "")]
    labels += [method_labels(p, "activation", c, str(parse_mitigation(m)), t) for p in request.patterns
               if p.kind != "dense" for c in request.criteria for m in request.mitigations for t in targets]
    labels += [method_labels(p, "weight", w, "none", t) for p in request.weight_patterns
               for w in request.weight_methods for t in targets]
    common = {"model": name, "seqlen_tokens": request.seqlen,
              "tokens_evaluated": expected_tokens(request.seqlen, request.max_tokens),
              "data": load_split("test", request.data_dir).name, "dtype": request.dtype}
    return {row_key({**common, **label}) for label in labels}


def accuracy_stage(request: AccuracyRequest) -> Path:
    """Evaluate the rows of the grid that ``request.table`` lacks (every row with ``recompute``); returns the
    table. Rows are matched by key, so other token counts, criteria or models never stand in for the asked ones."""
    if not request.recompute and request.table.is_file():
        planned = planned_row_keys(request)
        if planned is not None and planned <= {row_key(r) for r in read_rows(request.table, resumable=True)}:
            log.info("accuracy: all %d rows of the grid are in %s", len(planned), request.table)
            return request.table
    from nmsim.accuracy.study import StudySettings, build_grid, run_study, targets_from_args
    from nmsim.sparsify.learnable import LearnRecipe

    if request.headline_from is not None:
        from nmsim.accuracy.summary import headline_grid

        grid = headline_grid(request.headline_from)
    else:
        targets = targets_from_args(list(request.targets), request.layers, request.exclude_layers,
                                    request.prefill_only)
        grid = build_grid([str(p) for p in request.patterns], list(request.criteria), list(request.mitigations),
                          targets, [str(p) for p in request.weight_patterns], list(request.weight_methods))
    settings = StudySettings(
        model=request.model, data_dir=request.data_dir, seqlen=request.seqlen, max_tokens=request.max_tokens,
        batch_size=request.batch_size, calibration_windows=request.calibration_windows,
        learn_recipe=LearnRecipe(windows=request.learn_windows, seqlen=request.seqlen, steps=request.learn_steps,
                                 lr=request.learn_lr),
        device=request.device, dtype=request.dtype,
        fidelity=request.fidelity,
    )
    table = run_study(grid, settings, request.out, request.json, recompute=request.recompute,
                      command=request.command, scheduler=request.scheduler, workers=request.workers)
    log.info("wrote %s and %s (%d rows)%s", request.table, request.out.with_suffix(".md"), len(table),
             f" and {request.json}" if request.json else "")
    return request.table


# --- stage 2: traces ------------------------------------------------------------------------------------------------
def trace_stage(model: str, patterns: tuple[Pattern, ...], root: Path, data_dir: str | None = None, *,
                device: str = "cpu", dtype: str = "float32") -> None:
    """Capture the committed trace of each pattern again (magnitude, no mitigation; the model in ``dtype`` on
    ``device``) and rewrite the index."""
    from nmsim.traces.committed import method_config, rebuild_trace, write_index

    for pattern in patterns:
        log.info("capturing the trace of %s again", pattern)
        rebuild_trace(method_config(pattern), root, model, data_dir, device=device, dtype=dtype)
    write_index(root)


# --- stage 3: trace statistics --------------------------------------------------------------------------------------
def case_patterns(patterns: tuple[Pattern, ...], pairs: tuple[sens.Pair, ...] | None = None) -> tuple[Pattern, ...]:
    """Every pattern the report's cases simulate: the run's, then the sensitivity pairs' (which run whatever
    ``--patterns`` says; None: the default pair), so none of them falls back to the idealised answer unnoticed."""
    extra = sens.DEFAULT_PAIR if pairs is None else tuple(p for pair in pairs for p in (pair.a, pair.b))
    return tuple(dict.fromkeys((*patterns, *extra)))


def statistics_stage(shape: ModelShape, patterns: tuple[Pattern, ...], root: Path | None,
                     allow_ideal: bool = False, pairs: tuple[sens.Pair, ...] | None = None
                     ) -> dict[Pattern, TraceData | None]:
    """Each pattern's mask statistics (``patterns`` and the others the report's cases simulate,
    :func:`case_patterns`): measured from the model's committed trace, else transplanted from the traced model that
    stands in for it (:mod:`nmsim.traces.sources`), checked against the model. A sparse pattern with neither stops
    the run, unless ``allow_ideal`` lets it use the idealised N/M answer (dense needs none)."""
    traces = {pattern: statistics_for(shape, pattern, root=root)  # a damaged one stops here
              for pattern in case_patterns(patterns, pairs)}
    for pattern, trace in traces.items():
        if trace is not None:
            trace.check_model(shape)
        elif pattern.kind != "dense" and root is not None:
            if not allow_ideal:
                raise NmsimError(missing_message(shape, pattern, root))
            log.warning("no mask statistics for %s %s: its hardware rows use the idealised N/M answer", shape.name,
                        pattern)
    return traces


# --- designs (read with the inputs) ---------------------------------------------------------------------------------
def load_designs(names: tuple[str, ...], baseline_name: str, patterns: tuple[Pattern, ...]) -> Designs:
    """The designs (every preset when ``names`` is empty), the baseline joining when no design is dense, and each
    pattern's native design; every requested sparse N:M pattern must be one some design supports."""
    designs = [AcceleratorSpec.from_name(name) for name in names or design_names()]
    seen: dict[str, AcceleratorSpec] = {}
    for spec in designs:
        if spec.name in seen:
            raise NmsimError(f"two designs are named {spec.name!r} ({seen[spec.name].source} and {spec.source}); "
                             "a report tells designs apart by name: rename one")
        seen[spec.name] = spec
    baseline = AcceleratorSpec.from_name(baseline_name)
    if not any(spec.sparsity.operand == "none" for spec in designs):
        log.info("no dense design among the designs; the dense baseline %s joins them", baseline.name)
        designs.append(baseline)
    for pattern in patterns:
        if pattern.kind == "nm" and not any(pattern in spec.sparsity.patterns for spec in designs):
            raise NmsimError(f"pattern {pattern}: none of the designs ({', '.join(s.name for s in designs)}) "
                             "supports it; add a design that does or drop the pattern")
    natives = {}
    for spec in designs:  # the design supporting exactly one pattern, on activations, not composed
        supported = spec.sparsity.patterns
        if spec.sparsity.operand == "activation" and not spec.sparsity.hierarchical and len(supported) == 1:
            natives.setdefault(supported[0], spec)
    return Designs(designs, baseline, natives)


# --- stage 4: simulation --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Simulated:
    """Everything the report's tables read from the simulator."""

    results: SimulationResults
    sweep: pd.DataFrame | None  # a parameter sweep's points, when the run has one
    deployment: Deployment | None = None  # the target models end to end, when the run has targets
    validation: pd.DataFrame | None = None  # the performance model against the packaged GPU measurements


@dataclass(frozen=True)
class Deployment:
    """The target models at deployment scale (:mod:`nmsim.report.deployment`)."""

    targets: list[dep.Target]
    pairs: list[tuple[AcceleratorSpec, Pattern]]
    table: pd.DataFrame
    band: pd.DataFrame


def deployment_stage(targets: list[dep.Target], designs: Designs, patterns: tuple[Pattern, ...],
                     workers: int | None = None, chosen: tuple[dep.Scenario, ...] | None = None
                     ) -> Deployment | None:
    """Every target model end to end in every deployment scenario (``chosen``: the registry's), and the band."""
    if not targets:
        return None
    pairs = dep.deployment_pairs(designs.designs, designs.baseline, designs.natives, dep.runnable(patterns))
    table = dep.run_deployment(targets, pairs, designs.baseline, workers=workers, chosen=chosen)
    band = dep.band_table(targets, pairs, designs.baseline, table, workers=workers, chosen=chosen)
    return Deployment(targets, pairs, table, band)


def report_cases(designs: Designs, patterns: tuple[Pattern, ...], traces: dict[Pattern, TraceData | None],
                 pairs: tuple[sens.Pair, ...] | None = None) -> list[SimCase]:
    """Every case the report's tables and the sensitivity analysis read (``pairs``: None, the default pair)."""
    pairs = sens.run_pairs(designs.natives) if pairs is None else pairs
    natives = {p: s for p, s in designs.natives.items() if p in patterns}
    return (tables.performance_cases(designs.designs, patterns)
            + tables.io_format_cases(traces, natives)
            + tables.layer_speedup_cases(tables.layer_cases(natives, designs.designs))
            + sens.sensitivity_cases(pairs))


def simulation_stage(shape: ModelShape, designs: Designs, patterns: tuple[Pattern, ...],
                     traces: dict[Pattern, TraceData | None], sweep: SweepPlan | None = None, *,
                     trace_root: Path | None = TRACE_ROOT, workers: int | None = None,
                     scheduler: str | None = None, pairs: tuple[sens.Pair, ...] | None = None) -> Simulated:
    """Run every case the report needs, each once (and the sweep's points, on local cores or a Dask cluster)."""
    results = simulate_cases(report_cases(designs, patterns, traces, pairs), shape, baseline=designs.baseline,
                             traces=traces)
    log.info("simulated %d whole-model cases", len(results.totals))
    points = run_sweep(sweep, workers=workers, scheduler=scheduler, trace_root=trace_root) if sweep else None
    from nmsim.sim.validation import package_sets, validate  # the validation figure of `nmsim validate`

    validation, _ = validate(package_sets())
    return Simulated(results, points, validation=validation)


# --- stage 5: tables ------------------------------------------------------------------------------------------------
def tables_stage(shape: ModelShape, designs: Designs, patterns: tuple[Pattern, ...],
                 traces: dict[Pattern, TraceData | None], simulated: Simulated, accuracy_rows: pd.DataFrame,
                 inputs: pd.DataFrame, area_level: str = "die", pairs: tuple[sens.Pair, ...] | None = None
                 ) -> dict[str, pd.DataFrame]:
    """Every table of the report, in the order the report lists them; area decisions at ``area_level``."""
    results = simulated.results
    pairs = sens.run_pairs(designs.natives) if pairs is None else pairs
    natives = {p: s for p, s in designs.natives.items() if p in patterns}
    traces = {p: t for p, t in traces.items() if p in patterns}  # the run's patterns (the sensitivity reads results)
    perf = tables.performance(results, designs.designs, patterns)
    areas = tables.area_summary(designs.designs, area_level)
    out = {
        "accuracy": tables.best_accuracy(accuracy_rows, shape.name),
        "performance": perf,
        "area_summary": areas,
        "area_components": tables.area_components(designs.designs),
        "area_levels": tables.area_levels(designs.designs),
        "io_formats": tables.io_formats(traces, natives, results),
        "decode_fetch": tables.decode_fetch(traces, shape),
        "layers": tables.layer_speedups(tables.layer_cases(natives, designs.designs), results),
        "sensitivity": sens.sensitivity(results, pairs, area_level=area_level),
    }
    out["break_even"] = sens.break_even(out["sensitivity"])
    if simulated.sweep is not None:
        out["sweep"] = simulated.sweep
    out["tradeoff"] = tables.tradeoff(perf, areas, out["accuracy"], simulated.sweep)
    decision_pair = out["sensitivity"][out["sensitivity"].pair == sens.pair_label(*sens.DEFAULT_PAIR)] \
        if len(out["sensitivity"]) else out["sensitivity"]
    out["decision_summary"] = tables.decision_summary(out["tradeoff"], areas, out["layers"], decision_pair)
    deployment = simulated.deployment
    if deployment is not None:
        out["targets"] = dep.targets_table(deployment.targets, accuracy_rows, tables.best_accuracy)
        out["deployment"] = deployment.table
        out["deployment_band"] = deployment.band
        out["deployment_fronts"] = dep.fronts(deployment.table, deployment.targets, deployment.pairs, accuracy_rows,
                                              tables.best_accuracy, area_level)
        out["deployment_summary"] = dep.summary(deployment.table, out["deployment_fronts"], deployment.band,
                                                designs.natives)
    if simulated.validation is not None:
        out["validation"] = simulated.validation
    out["inputs"] = inputs
    return out


# --- stage 6: figures and the rendered report -----------------------------------------------------------------------
def report_stage(result: dict[str, pd.DataFrame], shape: ModelShape, baseline: AcceleratorSpec,
                 target: Path) -> Path:
    """Figures, tables (CSV + Parquet), report.md and report.html, written into a staging folder beside ``target``
    and swapped in at the end, so a failure leaves the previous report as it was (:mod:`nmsim.report.folder`: what
    killed runs left is put right first; a full disk is one error naming the report and the bytes)."""
    from nmsim.report import figures
    from nmsim.report.render import ReportContext, report_html, report_markdown

    with staged(target) as staging:  # swapped in whole at the end; removed on any failure
        figures.draw_all(result, [level.name for level in baseline.memory], staging / "figures")
        written = []
        for name, frame in result.items():
            written += write_table(frame, staging, name)
        # the text names no command line: the same inputs give the same report, however it was invoked
        markdown = report_markdown(result, ReportContext(shape.name, baseline.name, __version__), written)
        atomic_write_text(staging / "report.md", markdown + "\n")
        atomic_write_text(staging / "report.html", report_html(markdown, staging, f"nmsim trade-off report: "
                                                                                   f"{shape.name}"))
    return target


# --- nmsim run ------------------------------------------------------------------------------------------------------
def run(request: RunRequest) -> Path:
    """The main job, stage by stage; returns the report folder."""
    stages = ["inputs", "accuracy", "traces", "statistics", "simulation", "deployment", "tables", "report"]
    bar = tqdm(total=len(stages), desc="nmsim run", unit="stage")

    def stage(name: str) -> None:
        bar.set_postfix_str(name)
        log.info("stage: %s", name)

    try:
        stage("inputs")  # designs, model shape and sweep plan first: bad input stops before any work
        report_folder = request.out_root / request.name
        tidy(report_folder)  # a report a killed run left in its .old folder is back first
        designs = load_designs(request.designs, request.baseline, request.patterns)
        pairs = sens.run_pairs(designs.natives, request.sensitivity_pairs)
        chosen = dep.scenarios(request.prefill_tokens, request.decode_batches, request.decode_contexts)
        shape = model_shape(request.model)
        plan = load_sweep(request.sweep) if request.sweep is not None else None
        if plan is not None:  # every point's design, and the time budget
            check_sweep(plan, yes=request.sweep_yes, workers=request.workers, scheduler=request.scheduler)
        bar.update()

        stage("accuracy")  # rows missing from the table, by key
        accuracy = request.accuracy
        if request.study is not None:
            accuracy = tuple(dict.fromkeys([accuracy_stage(request.study), *accuracy]))
        accuracy_rows = tables.load_accuracy(list(accuracy))
        bar.update()

        stage("traces")  # captured again only when asked
        if request.recapture:
            study = request.study or AccuracyRequest()  # the data, device and dtype (defaults without a study)
            trace_stage(request.model, request.patterns, request.trace_root, study.data_dir,
                        device=study.device, dtype=study.dtype)
        bar.update()

        stage("statistics")  # each pattern's trace statistics, checked against the model
        traces = statistics_stage(shape, request.patterns, request.trace_root, request.allow_ideal, pairs)
        targets = dep.load_targets(request.target_models, dep.runnable(request.patterns), request.trace_root)
        bar.update()

        stage("simulation")  # every case once
        simulated = simulation_stage(shape, designs, request.patterns, traces, plan, trace_root=request.trace_root,
                                     workers=request.workers, scheduler=request.scheduler, pairs=pairs)
        bar.update()

        stage("deployment")  # the target models end to end in the deployment scenarios
        simulated = dataclasses.replace(simulated, deployment=deployment_stage(targets, designs, request.patterns,
                                                                               chosen=chosen))
        bar.update()

        stage("tables")  # from the results; nothing simulates after this
        inputs = tables.inputs(designs.designs, traces, accuracy, request.sweep)
        result = tables_stage(shape, designs, request.patterns, traces, simulated, accuracy_rows, inputs,
                              request.area_level, pairs)
        bar.update()

        stage("report")  # figures, CSV + Parquet, Markdown and HTML, swapped in whole
        target = report_stage(result, shape, designs.baseline, report_folder)
        bar.update()
    finally:
        bar.close()
    log.info("wrote %s: %d tables, %d figures, report.md and report.html", target, len(result),
             len(list((target / "figures").glob("*.png"))))
    return target


# --- nmsim simulate -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulateRequest:
    hw: str  # preset name or YAML path
    model: str  # registered model, config.json, model directory or .gguf
    phase: str = "prefill"
    batch: int = 1
    seq: int = 512
    traces: str | None = None  # a trace directory: its measured statistics
    pattern: Pattern | str | None = None  # default: the trace's pattern, else the design's largest supported one
    baseline: str = BASELINE_DESIGN
    ideal: bool = False  # also (or, without statistics, only) the idealised N/M answer
    ideal_memory: bool = False
    measure: bool = False
    stats_from: str | None = None  # the traced model whose profiles stand in (default: measured, else the registry's)
    trace_root: Path | None = TRACE_ROOT
    generate: int = DEFAULT_GENERATE  # decode steps averaged (contexts seq + 1 … seq + generate)
    devices: int = 1  # tensor-parallel degree
    attention: str = "fused"  # fused | unfused
    prune_lm_head: bool = False
    linear_only: bool = False  # only the linear GEMMs (no end-to-end step)
    no_limits: bool = False  # lift SIMULATE_LIMITS and the model's context bound (for experiments beyond real models)


# The work one `nmsim simulate` may ask for without --no-limits: beyond any real deployment, and where a run would
# take minutes or longer (decode costs ~40 us a step; prefill GEMM sizes grow with batch × seq).
SIMULATE_LIMITS = {"tokens": 2**24, "generate": 2**17, "devices": 1024}
_DECODE_STEP_S = 40e-6  # simulation time per decode step (10^6 steps of SmolLM2 took 37 s on this machine)


def check_simulate_bounds(request: SimulateRequest, shape: ModelShape | None = None) -> None:
    """Refuse (NmsimError) a request beyond SIMULATE_LIMITS (batch × seq prompt tokens, decode steps, devices) or,
    given the model's shape, a prompt longer than its context (max_positions); ``no_limits`` lifts both."""
    if request.no_limits:
        return
    flag = "; pass --no-limits to simulate it anyway"
    tokens = request.batch * request.seq
    if tokens > SIMULATE_LIMITS["tokens"]:
        raise NmsimError(f"--batch {request.batch} × --seq {request.seq} = {tokens:,} prompt tokens: above the bound "
                         f"of {SIMULATE_LIMITS['tokens']:,} tokens in one prefill, beyond any real deployment{flag}")
    if request.generate > SIMULATE_LIMITS["generate"]:
        seconds = request.generate * _DECODE_STEP_S
        raise NmsimError(f"--generate {request.generate:,}: above the bound of {SIMULATE_LIMITS['generate']:,} decode "
                         f"steps (each is simulated, ~{seconds:,.0f} s of work){flag}")
    if request.devices > SIMULATE_LIMITS["devices"]:
        raise NmsimError(f"--devices {request.devices:,}: above the bound of {SIMULATE_LIMITS['devices']:,} "
                         f"tensor-parallel devices{flag}")
    if shape is not None and shape.max_positions and request.seq > shape.max_positions:
        raise NmsimError(f"--seq {request.seq:,}: longer than the context of {shape.label}, "
                         f"{shape.max_positions:,} tokens (max_positions){flag}")


def check_output_file(path: Path | None, argument: str) -> None:
    """Refuse, before any work, an output path that cannot be a file: a directory, or under a file."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise NmsimError(f"{argument} {path}: is a directory; give a file path (e.g. {path / 'simulate.json'})")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise NmsimError(f"{argument} {path}: {parent} is a file, not a directory; give a file path in a directory")


def simulate(request: SimulateRequest) -> SimulateOutput:
    """``nmsim simulate``: design, model and mask statistics → every linear GEMM (and the idealised answer when
    asked). Statistics: the trace given, else measured or transplanted (:mod:`nmsim.traces.sources`); without any,
    the run stops unless ``ideal`` asks for the idealised answer."""
    check_simulate_bounds(request)  # before any work
    spec = AcceleratorSpec.from_name(request.hw)  # inputs
    baseline = AcceleratorSpec.from_name(request.baseline)
    shape = model_shape(request.model)
    check_simulate_bounds(request, shape)
    trace = TraceData.open(request.traces) if request.traces else None
    if request.pattern is not None:
        pattern = parse_pattern(request.pattern)
        if trace is not None and pattern != trace.pattern:
            raise NmsimError(f"--pattern {pattern} disagrees with the trace {request.traces}, which is "
                             f"{trace.pattern}; leave --pattern out to use the trace's")
    elif trace is not None:
        pattern = trace.pattern
    else:
        pattern = max(spec.sparsity.patterns, key=lambda p: p.m, default=Pattern.dense())
    if trace is None:  # statistics: measured, else transplanted
        trace = statistics_for(shape, pattern, root=request.trace_root, source=request.stats_from)
    needs_statistics = pattern.kind != "dense" and spec.sparsity.operand == "activation"
    if trace is None and needs_statistics and not request.ideal:
        raise NmsimError(missing_message(shape, pattern, request.trace_root))
    tokens = request.batch * (request.seq if request.phase == "prefill" else 1)
    if request.ideal and needs_statistics and min(tokens, 128) > 1:
        log.warning("--ideal assumes all %d tokens of a tile keep the same values (one mask); real masks differ from "
                    "token to token, so the union of a tile's masks needs more weight rows than N/M", min(tokens, 128))
    common = {"phase": request.phase, "batch": request.batch, "seq": request.seq, "pattern": pattern,
              "baseline": baseline, "ideal_memory": request.ideal_memory, "devices": request.devices}
    statistics = {}
    if trace is not None:
        statistics["trace"] = {"trace": trace}
    if trace is None or request.ideal:
        statistics["ideal"] = {"ideal": True}
    if request.linear_only:  # the end-to-end step checks memory with its activations; here weights and KV cache
        check_fits(spec, shape, pattern, batch=request.batch, context=request.seq + request.generate,
                   devices=request.devices)
    inference = {}
    if not request.linear_only:  # end to end: both phases, every op
        for name, given in statistics.items():
            inference[name] = simulate_inference(
                spec, shape, pattern=pattern, baseline=baseline, batch=request.batch, prompt=request.seq,
                generate=request.generate, devices=request.devices, attention=request.attention,
                prune_lm_head=request.prune_lm_head, ideal_memory=request.ideal_memory, **given)
        first = next(iter(inference.values()))
        if not first.memory.fits:
            raise NmsimError(capacity_message(first))
    runs = {}  # simulation
    for name, given in statistics.items():
        runs[name] = inference[name].linear[request.phase] if name in inference else \
            simulate_model(spec, shape, **given, **common)
    band = {}
    if trace is not None and trace.provenance.startswith("transplanted") and needs_statistics:
        other = band_source(trace.provenance.removeprefix("transplanted from ").strip())
        alternative = statistics_for(shape, pattern, root=request.trace_root, source=other) if other else None
        if alternative is not None:
            band = {"statistics": alternative.provenance,
                    "totals": totals(simulate_model(spec, shape, trace=alternative, **common))}
    measured_speedups, note = ({}, "")
    if request.measure:
        from nmsim.sim.measured import measure_run

        measured_speedups, note = measure_run(next(iter(runs.values())))
        log.info("measured column: %s", note)
    gemms = {name: gemm_table(run, measured_speedups) for name, run in runs.items()}  # tables
    levels = design_area_levels(spec)
    area = levels.datapath
    payload = {
        "run": describe(next(iter(runs.values()))),
        "sources": {name: (run.statistics if name == "trace" else "idealised N/M (every token of a tile keeps the "
                           "same values)") for name, run in runs.items()},
        "totals": {name: totals(run) for name, run in runs.items()},
        "sensitivity_band": band,
        "gemms": {name: table.to_dict(orient="records") for name, table in gemms.items()},
        "area": {"technology_nm": area.technology_nm, "total_mm2": area.total_mm2,
                 "total_low_mm2": area.total_low_mm2, "total_high_mm2": area.total_high_mm2,
                 "dense_mm2": area.dense_mm2, "overhead_pct": area.overhead_pct,
                 "overhead_low_pct": area.overhead_low_pct, "overhead_high_pct": area.overhead_high_pct,
                 "components": area.rows(),
                 "levels": {level: levels.level_summary(level) for level in AREA_LEVELS},
                 "level_components": levels.rows(), "warnings": list(levels.warnings)},
        "measured_note": note,
        "ideal_memory": request.ideal_memory,
        "inference": {name: run.summary() for name, run in inference.items()},
        "ops": {name: {phase: op_table(step).to_dict(orient="records")
                       for phase, step in (("prefill", run.prefill), ("decode", run.decode))}
                for name, run in inference.items()},
    }
    return SimulateOutput(runs, gemms, payload, inference)
