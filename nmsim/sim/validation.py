"""Predicted vs measured: nmsim's GEMM and vector-op times against published GPU measurements (``nmsim validate``).

A *measurement set* is a CSV of shapes and measured times plus where it came from (the package's sets are in
``presets/measurements/sets.yaml``; a user adds a CSV in the same format with ``--set``). Its ``kind`` says what
was measured: ``gemm`` (the default) in one of two formats,

- dense: ``M,K,N`` and ``latency_ms`` or ``latency_us``;
- 2:4 against dense: ``M,N,K``, a ``dense_…_us`` and a ``sparse_2of4_…_us`` column (NVIDIA's semantics: the weight
  operand is compressed);

or a vector op over the last dimension of an M × N FP16 tensor, ``softmax`` or ``layernorm``: ``M,N`` and
``gelements_per_s`` (M·N / latency / 1e9), ``latency_us`` or ``latency_ms``.

Each GEMM row is simulated on the set's design (and its 2:4 design) with the ideal N/M masks a 2:4-compressed
weight has by construction; each vector row is timed by :func:`nmsim.sim.kernels.kernel_time` on the set's design
(softmax reads a row once up to ``timing.yaml``'s ``softmax_single_pass_max_elements``, else once per pass; layer
norm reads it once; both write it once). A host-timed set (``harness: host``) adds its ``host_dispatch_us``
(default: ``timing.yaml``'s). Per set and kernel: mean absolute percentage error of latency, Spearman rank
correlation, and for 2:4 the mean absolute error of the speedup and the smallest M at which the speedup exceeds 1,
measured and predicted. Nothing here is tuned per row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import parse_pattern
from nmsim.sim.kernels import kernel_time, norm_work, softmax_passes, softmax_work
from nmsim.sim.simulate import GemmSimulation, simulate_gemm
from nmsim.sim.timing import Timing, load_timing
from nmsim.sim.usage import DENSE_USE, layer_use
from nmsim.sim.workload import Gemm
from nmsim.yaml_io import ConfigError, check_keys, load_yaml

log = logging.getLogger(__name__)

MEASUREMENTS_DIR = Path(__file__).resolve().parent.parent / "presets" / "measurements"
SETS_FILE = MEASUREMENTS_DIR / "sets.yaml"
HARNESSES = ("device", "host")
KINDS = ("gemm", "softmax", "layernorm")  # what a set measured; the last two are vector ops over M x N
VECTOR_KINDS = KINDS[1:]
TWO_OF_FOUR = parse_pattern("2:4")
VALUE_BYTES = 2  # FP16, every vector-op set
_SET_KEYS = {"file", "kind", "design", "sparse_design", "harness", "host_dispatch_us", "source"}


@dataclass(frozen=True)
class MeasurementSet:
    name: str
    path: Path
    design: str  # preset or YAML of the measured part, dense
    sparse_design: str  # its 2:4 side ("" for a dense-only set)
    harness: str  # device | host
    source: str
    kind: str = "gemm"  # gemm | softmax | layernorm
    host_dispatch_us: float | None = None  # a host-timed set's host overhead; None: timing.yaml's host_dispatch_us


def package_sets(path: Path = SETS_FILE) -> list[MeasurementSet]:
    """The measurement sets that ship with nmsim, in file order."""
    data = load_yaml(path)
    sets = []
    for name, entry in data.items():
        check_keys(entry, path, name, _SET_KEYS, {"file", "design", "harness", "source"})
        if entry["harness"] not in HARNESSES:
            raise ConfigError(path, entry.lines.get("harness"), f"{name}.harness",
                              f"{entry['harness']!r} is not one of {', '.join(HARNESSES)}")
        kind = entry.get("kind", "gemm")
        if kind not in KINDS:
            raise ConfigError(path, entry.lines.get("kind"), f"{name}.kind",
                              f"{kind!r} is not one of {', '.join(KINDS)}")
        host = entry.get("host_dispatch_us")
        if host is not None and (entry["harness"] != "host" or isinstance(host, bool)
                                 or not isinstance(host, (int, float)) or host < 0):
            raise ConfigError(path, entry.lines.get("host_dispatch_us"), f"{name}.host_dispatch_us",
                              f"expected a number of µs ≥ 0 on a host-timed set, got {host!r}")
        sets.append(MeasurementSet(name, path.parent / entry["file"], entry["design"],
                                   entry.get("sparse_design", ""), entry["harness"], entry["source"], kind,
                                   None if host is None else float(host)))
    return sets


def read_measurements(measurement: MeasurementSet) -> pd.DataFrame:
    """Rows ``M, K, N, measured_dense_us`` (and ``measured_2of4_us`` for a 2:4 set), or for a vector-op set
    ``M, N, measured_us``; errors name the file."""
    if not measurement.path.is_file():
        raise NmsimError(f"measurement set {measurement.name}: no file {measurement.path}")
    try:
        raw = pd.read_csv(measurement.path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise NmsimError(f"measurement set {measurement.path}: not a CSV ({exc})") from None
    if measurement.kind in VECTOR_KINDS:
        return _read_vector(measurement, raw)
    missing = [column for column in ("M", "K", "N") if column not in raw.columns]
    if missing:
        raise NmsimError(f"measurement set {measurement.path}: missing column(s) {', '.join(missing)}; a set "
                         "needs M,K,N and latency_ms or latency_us, or a dense_…_us and a sparse_2of4_…_us column")
    frame = raw[["M", "K", "N"]].copy()
    dense = [c for c in raw.columns if c.startswith("dense_") and c.endswith("_us")]
    sparse = [c for c in raw.columns if c.startswith("sparse_2of4_") and c.endswith("_us")]
    if "latency_ms" in raw.columns:
        frame["measured_dense_us"] = raw["latency_ms"] * 1e3
    elif "latency_us" in raw.columns:
        frame["measured_dense_us"] = raw["latency_us"]
    elif len(dense) == 1 and len(sparse) == 1:
        frame["measured_dense_us"], frame["measured_2of4_us"] = raw[dense[0]], raw[sparse[0]]
        if not measurement.sparse_design:
            raise NmsimError(f"measurement set {measurement.path} has a 2:4 column; give its 2:4 design "
                             "(--sparse-hw)")
    else:
        raise NmsimError(f"measurement set {measurement.path}: no time column; give latency_ms or latency_us, or "
                         "one dense_…_us and one sparse_2of4_…_us column")
    numbers = frame.apply(pd.to_numeric, errors="coerce")
    if numbers.isna().any().any() or (numbers <= 0).any().any():
        raise NmsimError(f"measurement set {measurement.path}: every shape and time must be a positive number")
    return numbers.astype({"M": "int64", "K": "int64", "N": "int64"})


def _read_vector(measurement: MeasurementSet, raw: pd.DataFrame) -> pd.DataFrame:
    what = f"measurement set {measurement.path} ({measurement.kind})"
    if measurement.sparse_design:
        raise NmsimError(f"{what}: a vector-op set has no 2:4 side")
    times = [c for c in ("gelements_per_s", "latency_us", "latency_ms") if c in raw.columns]
    missing = [column for column in ("M", "N") if column not in raw.columns]
    if missing or not times:
        problem = f"missing column(s) {', '.join(missing)}" if missing else "no time column"
        raise NmsimError(f"{what}: {problem}; a {measurement.kind} set needs M,N and gelements_per_s "
                         "(M*N / latency / 1e9), latency_us or latency_ms")
    numbers = raw[["M", "N", times[0]]].apply(pd.to_numeric, errors="coerce")
    if numbers.isna().any().any() or (numbers <= 0).any().any():
        raise NmsimError(f"{what}: every shape and time must be a positive number")
    frame = numbers[["M", "N"]].astype("int64")
    column = numbers[times[0]]
    frame["measured_us"] = {"gelements_per_s": frame.M * frame.N / column / 1e3, "latency_us": column,
                            "latency_ms": column * 1e3}[times[0]]
    return frame


def _time_us(sim: GemmSimulation, spec: AcceleratorSpec, extra_us: float) -> float:
    return sim.cycles / spec.clock_GHz / 1e3 + extra_us


def _roofline_us(sim: GemmSimulation, spec: AcceleratorSpec) -> float:
    return sim.roofline_cycles / spec.clock_GHz / 1e3


def _host_us(measurement: MeasurementSet, timing: Timing) -> float:
    if measurement.harness != "host":
        return 0.0
    return timing.host_dispatch_us if measurement.host_dispatch_us is None else measurement.host_dispatch_us


def _predict_vector(measurement: MeasurementSet, frame: pd.DataFrame, timing: Timing) -> pd.DataFrame:
    """One row per shape of a softmax or layer-norm set: measured, predicted and roofline µs, error, the traffic."""
    spec = AcceleratorSpec.from_name(measurement.design)
    extra = _host_us(measurement, timing)
    outer = spec.memory[0]
    rows = []
    for record in frame.itertuples(index=False):
        m, n = int(record.M), int(record.N)
        if measurement.kind == "softmax":
            work = softmax_work(m, n, VALUE_BYTES, timing.softmax_single_pass_max_elements)
            reads = softmax_passes(n, timing.softmax_single_pass_max_elements)
        else:
            work, reads = norm_work(m, n, VALUE_BYTES, "layernorm"), 1
        timed = kernel_time(work, spec)
        predicted = timed.cycles / spec.clock_GHz / 1e3 + extra
        roofline = max(timed.compute_cycles, work.bytes_total / outer.peak_bytes_per_cycle(spec.clock_GHz))
        rows.append({"set": measurement.name, "design": spec.name, "kernel": measurement.kind, "M": m, "K": pd.NA,
                     "N": n, "measured_us": record.measured_us, "predicted_us": predicted,
                     "error_pct": 100 * (predicted / record.measured_us - 1),
                     "roofline_us": roofline / spec.clock_GHz / 1e3 + extra,
                     "mapping": f"{reads} read{'s' if reads > 1 else ''} + 1 write, {timed.bound}-bound"})
    return pd.DataFrame(rows)


def predict(measurement: MeasurementSet, timing: Timing | None = None) -> pd.DataFrame:
    """One row per GEMM and kernel (dense, 2:4), or per vector-op shape: measured, predicted and roofline µs, error,
    the mapping."""
    timing = timing or load_timing()
    frame = read_measurements(measurement)
    if measurement.kind in VECTOR_KINDS:
        return _predict_vector(measurement, frame, timing)
    dense_spec = AcceleratorSpec.from_name(measurement.design)
    sparse_spec = AcceleratorSpec.from_name(measurement.sparse_design) if measurement.sparse_design else None
    extra = _host_us(measurement, timing)
    rows = []
    for record in frame.itertuples(index=False):
        gemm = Gemm(0, "q", "prefill", int(record.M), int(record.K), int(record.N))
        kernels = [("dense", dense_spec, DENSE_USE, record.measured_dense_us)]
        if sparse_spec is not None:
            kernels.append(("2:4", sparse_spec, layer_use(sparse_spec, TWO_OF_FOUR, None, ideal=True),
                            record.measured_2of4_us))
        for kernel, spec, use, measured in kernels:
            sim = simulate_gemm(gemm, spec, use, timing=timing)
            predicted = _time_us(sim, spec, extra)
            rows.append({"set": measurement.name, "design": spec.name, "kernel": kernel, "M": gemm.m, "K": gemm.k,
                         "N": gemm.n, "measured_us": measured, "predicted_us": predicted,
                         "error_pct": 100 * (predicted / measured - 1),
                         "roofline_us": _roofline_us(sim, spec) + extra, "mapping": sim.tile})
    table = pd.DataFrame(rows)
    if sparse_spec is not None:
        dense_rows = table[table.kernel == "dense"].reset_index(drop=True)
        sparse_rows = table[table.kernel == "2:4"].reset_index(drop=True)
        speedup = pd.DataFrame({"measured": dense_rows.measured_us / sparse_rows.measured_us,
                                "predicted": dense_rows.predicted_us / sparse_rows.predicted_us})
        table["measured_speedup_2of4"] = np.repeat(speedup["measured"].to_numpy(), 2)
        table["predicted_speedup_2of4"] = np.repeat(speedup["predicted"].to_numpy(), 2)
    return table


def _spearman(a: pd.Series, b: pd.Series) -> float:
    if len(a) < 2:
        return float("nan")
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])


def _crossover(rows: pd.DataFrame, column: str) -> float:
    """The smallest M whose speedup exceeds 1 (NaN when none does)."""
    above = rows[rows[column] > 1].M
    return float(above.min()) if len(above) else float("nan")


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per set and kernel: rows, MAPE %, Spearman ρ; for 2:4 also the speedup MAE and the crossover M."""
    rows = []
    for (name, kernel), part in table.groupby(["set", "kernel"], sort=False):
        entry = {"set": name, "kernel": kernel, "rows": len(part),
                 "latency_mape_pct": float(part.error_pct.abs().mean()),
                 "spearman_rho": _spearman(part.measured_us, part.predicted_us),
                 "speedup_mae": float("nan"), "crossover_M_measured": float("nan"),
                 "crossover_M_predicted": float("nan")}
        if kernel == "2:4":
            entry["speedup_mae"] = float((part.predicted_speedup_2of4 - part.measured_speedup_2of4).abs().mean())
            entry["crossover_M_measured"] = _crossover(part, "measured_speedup_2of4")
            entry["crossover_M_predicted"] = _crossover(part, "predicted_speedup_2of4")
        rows.append(entry)
    return pd.DataFrame(rows)


def validate(sets: list[MeasurementSet], timing: Timing | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-row table, per-set summary) over ``sets``."""
    tables = []
    for measurement in sets:
        log.info("validating against %s (%s, %s-timed)", measurement.name, measurement.design, measurement.harness)
        tables.append(predict(measurement, timing))
    table = pd.concat(tables, ignore_index=True)
    table["K"] = table["K"].astype("Int64")  # empty on vector-op rows
    return table, summarize(table)
