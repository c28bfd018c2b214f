"""Parameter sweeps: one design, a grid of parameter values, evaluated in parallel on local cores or on a Dask
cluster.

A sweep file (YAML, strict like the design files) names the design and the values to try per key path::

    design: act-8of16                  # preset name or YAML path (relative to the sweep file)
    model: smollm2-135m                # shape preset, config.json or .gguf (default: smollm2-135m)
    parameters:                        # key path in the design → values; the grid is their product
      memory[0].bandwidth_GBps: [800, 1555, 3110]
      sparsity.selector_groups_per_cycle: [4, 16]
    patterns: [dense, 8:16]            # default: dense and every pattern the design supports
    phases: [prefill, decode]          # default: both
    batch_sizes: [1, 4]                # default: [1]
    seq_tokens: 512                    # prompt tokens: prefill length and the context decode starts from (512)
    baseline: a100-dense               # dense baseline design (default: a100-dense)

Every point is validated like a design file before any work starts (:func:`check_sweep`), so a bad value stops
the sweep with the key path and the point. The work is bounded: a grid above MAX_POINTS points is refused, and one
whose estimated time (cases × SECONDS_PER_CASE over the workers) is above SWEEP_BUDGET_S needs ``--yes``. Rows come
back in grid order whatever order the workers finish in, so a sweep gives the same table on one core, many cores or
a cluster.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import itertools
import logging
import math
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from nmsim.errors import NmsimError
from nmsim.hw.area import design_area
from nmsim.hw.spec import AcceleratorSpec
from nmsim.registry import design_path
from nmsim.yaml_io import ConfigError, LinedDict, check_keys, load_yaml
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import BASELINE_DESIGN, DEFAULT_MODEL, TRACE_ROOT, ModelShape, model_shape
from nmsim.parallel import available_cores
from nmsim.sim.cases import sweep
from nmsim.traces.reader import TraceData
from nmsim.traces.sources import missing_message, statistics_for

log = logging.getLogger(__name__)

_KEYS = {"design", "model", "parameters", "patterns", "phases", "batch_sizes", "seq_tokens", "baseline"}
MAX_POINTS = 1_000_000  # grid points of one sweep, with or without --yes
MAX_BATCH = 1 << 16  # sequences per batch
MAX_SEQ_TOKENS = 1 << 20  # prompt tokens
# Seconds one case (a point × pattern × phase × batch size, whole model) takes on one core: a documented constant,
# measured with a sweep of act-8of16 on a shared CPU core: 0.09 s for smollm2-135m, 0.24 s for llama-3.1-8b.
SECONDS_PER_CASE = 0.25
SWEEP_BUDGET_S = 600.0  # a sweep estimated to take longer needs --yes


@dataclass(frozen=True)
class SweepPlan:
    source: str  # the sweep file
    design: str  # preset name or YAML path
    model: str
    parameters: tuple[tuple[str, tuple], ...]  # (key path, values), in file order
    patterns: tuple[Pattern, ...] | None  # None: dense and every pattern the design supports
    phases: tuple[str, ...] = ("prefill", "decode")
    batch_sizes: tuple[int, ...] = (1,)
    seq_tokens: int = 512
    baseline: str = BASELINE_DESIGN
    lines: tuple[tuple[str, int], ...] = ()  # (key path, line of its values in the sweep file)

    @property
    def point_count(self) -> int:
        """Grid points: the product of the value counts."""
        return math.prod(len(values) for _, values in self.parameters)

    def points(self) -> list[dict[str, object]]:
        """The grid: one {key path: value} per point, the last parameter varying fastest."""
        keys = [key for key, _ in self.parameters]
        return [dict(zip(keys, values)) for values in itertools.product(*(values for _, values in self.parameters))]


def _list(data: LinedDict, file: Path, key: str, kind: type, default: tuple) -> tuple:
    if key not in data:
        return default
    values = data[key]
    if not isinstance(values, list) or not values or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                             for v in values):
        raise ConfigError(file, data.lines.get(key), key, f"expected a non-empty list of {kind.__name__}")
    return tuple(values)


def load_sweep(path: str | Path) -> SweepPlan:
    """Read a sweep file; errors name the file, the line and the key path."""
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, LinedDict):
        raise ConfigError(path, None, "", f"expected a mapping with keys {', '.join(sorted(_KEYS))}")
    check_keys(data, path, "", _KEYS, {"design", "parameters"})
    design = data["design"]
    if not isinstance(design, str):
        raise ConfigError(path, data.lines["design"], "design", "expected a preset name or a YAML path")
    if Path(design).suffix and not Path(design).is_absolute():
        design = str(path.parent / design)
    parameters = data["parameters"]
    if not isinstance(parameters, LinedDict) or not parameters:
        raise ConfigError(path, data.lines["parameters"], "parameters",
                          "expected a mapping of design key paths to lists of values, e.g. "
                          "memory[0].bandwidth_GBps: [800, 1555]")
    grid = []
    for key, values in parameters.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(path, parameters.lines[key], f"parameters.{key}", "expected a non-empty list of values")
        grid.append((key, tuple(values)))
    count = math.prod(len(values) for _, values in grid)
    if count > MAX_POINTS:
        raise ConfigError(path, data.lines["parameters"], "parameters",
                          f"the grid has {count:,} points ({' × '.join(str(len(v)) for _, v in grid)} values); a "
                          f"sweep has at most {MAX_POINTS:,}")
    patterns = _list(data, path, "patterns", str, None)
    try:
        patterns = tuple(parse_pattern(p) for p in patterns) if patterns is not None else None
    except NmsimError as exc:
        raise ConfigError(path, data.lines["patterns"], "patterns", str(exc)) from None
    phases = _list(data, path, "phases", str, ("prefill", "decode"))
    if not set(phases) <= {"prefill", "decode"}:
        raise ConfigError(path, data.lines["phases"], "phases", "allowed: prefill, decode")
    batches = _list(data, path, "batch_sizes", int, (1,))
    seq = data.get("seq_tokens", 512)
    if not 1 <= min(batches) <= max(batches) <= MAX_BATCH:
        raise ConfigError(path, data.lines.get("batch_sizes"), "batch_sizes",
                          f"batch sizes must be integers from 1 to {MAX_BATCH:,}, got {list(batches)}")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ_TOKENS:
        raise ConfigError(path, data.lines.get("seq_tokens"), "seq_tokens",
                          f"expected an integer from 1 to {MAX_SEQ_TOKENS:,}, got {seq!r}")
    model = data.get("model", DEFAULT_MODEL)
    baseline = data.get("baseline", BASELINE_DESIGN)
    for key, value in (("model", model), ("baseline", baseline)):
        if not isinstance(value, str):
            raise ConfigError(path, data.lines.get(key), key, "expected a name or a path")
    return SweepPlan(str(path), design, model, tuple(grid), patterns, phases, batches, seq, baseline,
                     tuple((key, parameters.lines[key]) for key, _ in grid))


@dataclass(frozen=True)
class _Task:
    """One grid point, self-contained so a remote worker needs no files."""

    index: int
    point: dict[str, object]
    spec: AcceleratorSpec
    baseline: AcceleratorSpec
    shape: ModelShape
    patterns: tuple[Pattern, ...]
    phases: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    seq_tokens: int
    traces: dict[Pattern, TraceData | None]


def _evaluate(task: _Task) -> list[dict]:
    """Whole-model totals of one point for every pattern × phase × batch size, with the design's area."""
    table = sweep([task.spec], task.shape, baseline=task.baseline, patterns=task.patterns, phases=task.phases,
                  batches=task.batch_sizes, seq=task.seq_tokens, traces=task.traces)
    area = design_area(task.spec)
    table.insert(0, "point", task.index)
    for column, value in reversed(task.point.items()):
        table.insert(1, column, value)
    table["area_mm2"] = area.total_mm2
    table["area_overhead_pct"] = area.overhead_pct
    return table.to_dict(orient="records")


def point_spec(plan: SweepPlan, point: dict[str, object]) -> AcceleratorSpec:
    """The design at one grid point; an invalid value names the sweep file, the point and the key path."""
    try:
        return AcceleratorSpec.from_name(plan.design, point)
    except ConfigError as exc:
        if exc.key_path in point:  # the sweep's value: the sweep file's line
            raise ConfigError(plan.source, dict(plan.lines).get(exc.key_path),
                              f"point {point}: parameters.{exc.key_path}", exc.message) from None
        raise NmsimError(f"{plan.source}: point {point}: {exc}") from None


def estimate_s(plan: SweepPlan, workers: int | None = None, scheduler: str | None = None) -> tuple[int, float]:
    """(cases, estimated seconds) of ``plan`` on ``workers`` local processes (a Dask cluster: one core assumed),
    from SECONDS_PER_CASE; the patterns of a plan without ``patterns`` are counted on the unchanged design."""
    patterns = len(plan.patterns) if plan.patterns else \
        1 + len(AcceleratorSpec.from_name(plan.design).sparsity.patterns)
    cases = plan.point_count * patterns * len(plan.phases) * len(plan.batch_sizes)
    cores = 1 if scheduler else max(1, workers or available_cores())
    return cases, cases * SECONDS_PER_CASE / min(cores, plan.point_count)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def check_sweep(plan: SweepPlan, *, yes: bool = False, workers: int | None = None,
                scheduler: str | None = None) -> None:
    """Before any work: refuse a sweep estimated above SWEEP_BUDGET_S unless ``yes``, then check the design, the
    baseline, the model and every point's design (each built like a design file, its patterns supported)."""
    design_path(plan.design)  # a missing design fails here, naming the presets
    cases, seconds = estimate_s(plan, workers, scheduler)
    where = "a Dask cluster, counted as 1 core" if scheduler else \
        f"{min(max(1, workers or available_cores()), plan.point_count)} core(s)"
    message = (f"sweep {plan.source}: {plan.point_count:,} points, {cases:,} cases (points × patterns × phases × "
               f"batch sizes), estimated {_duration(seconds)} on {where} at {SECONDS_PER_CASE} s per case (a "
               f"documented constant, nmsim.sim.param_sweep.SECONDS_PER_CASE; larger models take longer)")
    if seconds > SWEEP_BUDGET_S and not yes:
        raise NmsimError(f"{message}, above the budget of {_duration(SWEEP_BUDGET_S)}; pass --yes to run it anyway, "
                         "or sweep fewer values")
    log.info("%s", message)
    model_shape(plan.model)
    AcceleratorSpec.from_name(plan.baseline)
    _point_designs(plan)


def _point_designs(plan: SweepPlan) -> list[tuple[AcceleratorSpec, tuple[Pattern, ...]]]:
    """Every point's design and the patterns it runs; an invalid point names the sweep file, the point and the key."""
    designs = []
    points = plan.points()
    for point in tqdm(points, desc=f"checking {Path(plan.source).name}", unit="point", leave=False,
                      disable=len(points) < 1000):
        spec = point_spec(plan, point)
        patterns = plan.patterns or (Pattern.dense(), *spec.sparsity.patterns)
        for pattern in patterns:
            try:
                spec.check_supports(pattern)
            except NmsimError as exc:
                raise NmsimError(f"{plan.source}: point {point}: {exc}") from None
        designs.append((spec, tuple(patterns)))
    return designs


def _tasks(plan: SweepPlan, trace_root: Path | None) -> list[_Task]:
    design_path(plan.design)  # a missing design fails here, naming the presets
    shape = model_shape(plan.model)
    baseline = AcceleratorSpec.from_name(plan.baseline)
    tasks = [_Task(index, point, spec, baseline, shape, patterns, plan.phases, plan.batch_sizes, plan.seq_tokens, {})
             for index, (point, (spec, patterns)) in enumerate(zip(plan.points(), _point_designs(plan)))]
    traces = {}
    for pattern in dict.fromkeys(p for t in tasks for p in t.patterns):  # measured, else transplanted
        traces[pattern] = statistics_for(shape, pattern, root=trace_root)
        if traces[pattern] is None and pattern.kind != "dense" and trace_root is not None:
            raise NmsimError(f"{plan.source}: {missing_message(shape, pattern, trace_root)}")
    return [dataclasses.replace(t, traces={p: traces[p] for p in t.patterns}) for t in tasks]


def run_sweep(plan: SweepPlan, *, workers: int | None = None, scheduler: str | None = None,
              trace_root: Path | None = TRACE_ROOT) -> pd.DataFrame:
    """Evaluate every grid point: in ``workers`` local processes (default: all cores; 1 runs in this process), or
    on the Dask distributed scheduler at ``scheduler`` (``tcp://host:8786``). One row per point × pattern × phase ×
    batch size, in grid order."""
    tasks = _tasks(plan, trace_root)
    log.info("sweep %s: %d points x %d pattern(s) x %d phase(s) x %d batch size(s) of %s on %s", plan.source,
             len(tasks), len(tasks[0].patterns), len(plan.phases), len(plan.batch_sizes), plan.model, plan.design)
    results: dict[int, list[dict]] = {}
    bar = tqdm(total=len(tasks), desc=f"sweep {Path(plan.source).name}", unit="point")
    if scheduler is None and (workers or os.cpu_count() or 1) == 1:
        for task in tasks:
            results[task.index] = _evaluate(task)
            bar.update()
    else:
        with _executor(workers, scheduler) as executor:
            futures = {executor.submit(_evaluate, task): task.index for task in tasks}
            for future in cf.as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return pd.DataFrame([row for index in sorted(results) for row in results[index]])


@contextlib.contextmanager
def _executor(workers: int | None, scheduler: str | None) -> Iterator[cf.Executor]:
    """A concurrent.futures executor: fresh local processes (spawned, so nothing of this process's state is
    shared), or the executor of a Dask distributed client, closed with it."""
    if scheduler is None:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield pool
        return
    from distributed import Client

    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise NmsimError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with `dask scheduler` "
                         "and `dask worker ADDRESS`, or leave --scheduler out to use local cores") from None
    with client, client.get_executor(pure=False) as executor:
        yield executor
