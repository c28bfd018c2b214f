"""``nmsim run`` as an API: accuracy rows + traces + designs → ``reports/<name>/`` (tables, figures, report).

Stages: load and check every input (designs, traces, accuracy tables) → simulate → tables → figures → Markdown and
HTML. Everything is written into a staging folder beside the target and swapped in at the end, so a failure at
any stage leaves the previous report as it was. The same inputs give byte-identical tables and figures.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from nmsim import __version__
from nmsim.errors import NmsimError
from nmsim.hw.area import CALIBRATION_FILE
from nmsim.hw.spec import AcceleratorSpec, preset_names
from nmsim.io import atomic_write_bytes, atomic_write_text
from nmsim.patterns import parse_pattern
from nmsim.report import figures, tables
from nmsim.report.render import ReportContext, native_designs, report_html, report_markdown
from nmsim.report.sensitivity import PAIR, break_even, sensitivity
from nmsim.sim.param_sweep import load_sweep, run_sweep
from nmsim.sim.sweep import SWEEP_PATTERNS, TRACE_ROOT, committed_traces
from nmsim.sim.timing import TIMING_FILE
from nmsim.sim.trace_data import TraceData
from nmsim.sim.workload import model_shape
from nmsim.traces.build import method_config, trace_name

log = logging.getLogger(__name__)

REPORTS = Path("reports")
STUDY_TABLES = (REPORTS / "study_smollm2_16k.csv",)  # committed study rows that join the main job's own table
DEFAULT_ACCURACY = (REPORTS / "accuracy.csv", *STUDY_TABLES)


@dataclass(frozen=True)
class RunRequest:
    name: str = "smollm2-135m"  # the report folder under out_root
    model: str = "smollm2-135m"
    designs: tuple[str, ...] = ()  # preset names or YAML paths; () = every preset in hw_configs/
    baseline: str = "a100-dense"
    accuracy: tuple[Path, ...] = DEFAULT_ACCURACY
    patterns: tuple[str, ...] = SWEEP_PATTERNS
    trace_root: Path = TRACE_ROOT
    sweep: Path | None = None  # a sweep file whose points join the trade-off table and plots
    out_root: Path = REPORTS
    command: str = "nmsim run"
    workers: int | None = None  # sweep only
    scheduler: str | None = None  # sweep only
    allow_ideal: bool = False  # patterns without a trace use the idealised N/M answer instead of stopping


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_sha256(directory: Path) -> str:
    """One digest over a trace's statistics and manifest: (relative path, file digest) of each, sorted."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "sample" not in p.relative_to(directory).parts):
        digest.update(f"{path.relative_to(directory)}\0{_sha256(path)}\n".encode())
    return digest.hexdigest()


def _shown(path: Path) -> str:
    """A path as the report prints it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _open_trace(pattern: str, trace: TraceData | None, request: RunRequest, model: str) -> TraceData | None:
    """A missing trace of a sparse pattern stops the run, unless ``allow_ideal`` lets it use the idealised N/M
    answer (a dense run needs no trace)."""
    if trace is not None or pattern == "dense":
        return trace
    name = trace_name(method_config(pattern), model)
    if not request.allow_ideal:
        raise NmsimError(f"trace {request.trace_root / name}: missing; capture it with `nmsim traces build --pattern "
                         f"{pattern}` (model {model}), restore it from git, or pass --ideal to use the idealised "
                         "N/M answer for patterns without a trace")
    log.warning("no trace %s: the hardware rows of %s use the idealised N/M answer", name, pattern)
    return None


def _inputs(designs: list[AcceleratorSpec], traces: dict[str, TraceData | None], accuracy: tuple[Path, ...],
            sweep_file: Path | None) -> pd.DataFrame:
    rows = [{"kind": "nmsim", "name": "version", "path": "-", "sha256": __version__}]
    for spec in designs:
        rows.append({"kind": "design", "name": spec.name, "path": _shown(Path(spec.source)),
                     "sha256": _sha256(Path(spec.source))})
    for pattern, trace in traces.items():
        if trace is not None:
            rows.append({"kind": "trace", "name": pattern, "path": _shown(trace.path),
                         "sha256": _tree_sha256(trace.path)})
    for path in accuracy:
        rows.append({"kind": "accuracy", "name": path.name, "path": _shown(path), "sha256": _sha256(path)})
    package_root = Path(__file__).resolve().parents[2]
    for kind, path in (("calibration", CALIBRATION_FILE), ("timing", TIMING_FILE)):
        rows.append({"kind": kind, "name": path.name, "path": str(path.resolve().relative_to(package_root)),
                     "sha256": _sha256(path)})
    if sweep_file is not None:
        rows.append({"kind": "sweep", "name": sweep_file.name, "path": _shown(sweep_file),
                     "sha256": _sha256(sweep_file)})
    return pd.DataFrame(rows)


def _check_patterns(designs: list[AcceleratorSpec], patterns: tuple[str, ...]) -> None:
    """Every requested pattern (but dense) must be one some design supports."""
    for text in patterns:
        pattern = parse_pattern(text)
        if pattern.kind == "dense" or pattern.kind == "unstructured":
            continue
        if not any(pattern in spec.sparsity.patterns for spec in designs):
            raise NmsimError(f"pattern {pattern}: none of the designs ({', '.join(s.name for s in designs)}) "
                             "supports it; add a design that does or drop the pattern")


def write_table(frame: pd.DataFrame, directory: Path, name: str) -> list[str]:
    """``name``.csv and ``name``.parquet under ``directory``, each written atomically; returns the file names."""
    atomic_write_text(directory / f"{name}.csv", frame.to_csv(index=False, float_format="%.10g"))
    buffer = frame.to_parquet(index=False, engine="pyarrow", compression="zstd")
    atomic_write_bytes(directory / f"{name}.parquet", buffer)
    return [f"{name}.csv", f"{name}.parquet"]


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with two renames; the old report is removed only after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old)


def _layer_cases(natives: dict[str, AcceleratorSpec], designs: list[AcceleratorSpec]
                 ) -> list[tuple[str, AcceleratorSpec]]:
    """(pattern, design) pairs of the per-layer heatmap: each native design, and 8:16 on each hierarchical one."""
    composed = [("8:16", spec) for spec in designs
                if spec.sparsity.hierarchical and parse_pattern("8:16") in spec.sparsity.patterns]
    return list(natives.items()) + composed


def build_report(request: RunRequest) -> Path:
    """Simulate, tabulate, plot and write the report; returns the report folder."""
    stages = ["inputs", "performance", "tables", "sensitivity", "sweep", "figures", "report"]
    bar = tqdm(total=len(stages), desc="report", unit="stage")

    def stage(name: str) -> None:
        bar.set_postfix_str(name)
        log.info("report stage: %s", name)

    stage("inputs")
    names = list(request.designs) or preset_names()
    designs = [AcceleratorSpec.from_name(name) for name in names]
    baseline = AcceleratorSpec.from_name(request.baseline)
    if not any(spec.sparsity.operand == "none" for spec in designs):
        log.info("no dense design among the designs; the dense baseline %s joins them", baseline.name)
        designs.append(baseline)
    _check_patterns(designs, request.patterns)
    shape = model_shape(request.model)
    traces = {p: _open_trace(p, t, request, shape.name) for p, t in
              committed_traces(request.patterns, shape.name, request.trace_root).items()}
    for trace in traces.values():
        if trace is not None:
            trace.check_model(shape)
    accuracy_rows = tables.load_accuracy(list(request.accuracy))
    plan = load_sweep(request.sweep) if request.sweep is not None else None
    bar.update()

    stage("performance")
    perf = tables.performance(designs, shape, baseline, traces, request.patterns)
    bar.update()

    stage("tables")
    areas = tables.area_summary(designs)
    natives = {pattern: next(s for s in designs if s.name == name) for pattern, name in native_designs(areas).items()}
    result = {
        "accuracy": tables.best_accuracy(accuracy_rows, shape.name),
        "performance": perf,
        "area_summary": areas,
        "area_components": tables.area_components(designs),
        "io_formats": tables.io_formats(traces, natives, shape, baseline),
        "decode_fetch": tables.decode_fetch(traces, shape),
        "layers": tables.layer_speedups(_layer_cases(natives, designs), shape, baseline, traces),
    }
    bar.update()

    stage("sensitivity")
    pair_traces = {pattern: traces.get(pattern) for pattern, _ in PAIR}
    result["sensitivity"] = sensitivity(shape, baseline, pair_traces)
    result["break_even"] = break_even(result["sensitivity"])
    bar.update()

    stage("sweep")
    if plan is not None:
        result["sweep"] = run_sweep(plan, workers=request.workers, scheduler=request.scheduler,
                                    trace_root=request.trace_root)
    result["tradeoff"] = tables.tradeoff(perf, areas, result["accuracy"], result.get("sweep"))
    bar.update()

    result["inputs"] = _inputs(designs, traces, request.accuracy, request.sweep)

    request.out_root.mkdir(parents=True, exist_ok=True)
    target = request.out_root / request.name
    staging = Path(tempfile.mkdtemp(prefix=f".{request.name}.partial-", dir=request.out_root))
    try:
        stage("figures")
        figures.draw_all(result, [level.name for level in baseline.memory], staging / "figures")
        bar.update()

        stage("report")
        written = []
        for name, frame in result.items():
            written += write_table(frame, staging, name)
        context = ReportContext(shape.name, baseline.name, request.command, __version__)
        markdown = report_markdown(result, context, written)
        atomic_write_text(staging / "report.md", markdown + "\n")
        atomic_write_text(staging / "report.html",
                          report_html(markdown, staging, f"nmsim trade-off report: {shape.name}"))
        bar.update()
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        bar.close()
    log.info("wrote %s: %d tables, %d figures, report.md and report.html", target, len(result),
             len(list((target / "figures").glob("*.png"))))
    return target
