"""Predicted vs measured: nmsim's GEMM times against published GPU measurements (``nmsim validate``).

A *measurement set* is a CSV of GEMM shapes and measured times plus where it came from (the package's sets are in
``presets/measurements/sets.yaml``; a user adds a CSV in the same format with ``--set``). Two formats:

- dense: ``M,K,N`` and ``latency_ms`` or ``latency_us``;
- 2:4 against dense: ``M,N,K``, a ``dense_…_us`` and a ``sparse_2of4_…_us`` column (NVIDIA's semantics: the weight
  operand is compressed).

Each row is simulated on the set's design (and its 2:4 design) with the ideal N/M masks a 2:4-compressed weight has
by construction; a host-timed set (``harness: host``) adds ``timing.yaml``'s ``host_dispatch_us``. Per set:
mean absolute percentage error of latency, Spearman rank correlation, and for 2:4 the mean absolute error of the
speedup and the smallest M at which the speedup exceeds 1, measured and predicted. Nothing here is tuned per row.
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
from nmsim.sim.simulate import GemmSimulation, simulate_gemm
from nmsim.sim.timing import Timing, load_timing
from nmsim.sim.usage import DENSE, LayerUse, layer_use
from nmsim.sim.workload import Gemm
from nmsim.yaml_io import ConfigError, check_keys, load_yaml

log = logging.getLogger(__name__)

MEASUREMENTS_DIR = Path(__file__).resolve().parent.parent / "presets" / "measurements"
SETS_FILE = MEASUREMENTS_DIR / "sets.yaml"
HARNESSES = ("device", "host")
TWO_OF_FOUR = parse_pattern("2:4")
_SET_KEYS = {"file", "design", "sparse_design", "harness", "source"}


@dataclass(frozen=True)
class MeasurementSet:
    name: str
    path: Path
    design: str  # preset or YAML of the measured part, dense
    sparse_design: str  # its 2:4 side ("" for a dense-only set)
    harness: str  # device | host
    source: str


def package_sets(path: Path = SETS_FILE) -> list[MeasurementSet]:
    """The measurement sets that ship with nmsim, in file order."""
    data = load_yaml(path)
    sets = []
    for name, entry in data.items():
        check_keys(entry, path, name, _SET_KEYS, {"file", "design", "harness", "source"})
        if entry["harness"] not in HARNESSES:
            raise ConfigError(path, entry.lines.get("harness"), f"{name}.harness",
                              f"{entry['harness']!r} is not one of {', '.join(HARNESSES)}")
        sets.append(MeasurementSet(name, path.parent / entry["file"], entry["design"],
                                   entry.get("sparse_design", ""), entry["harness"], entry["source"]))
    return sets


def read_measurements(measurement: MeasurementSet) -> pd.DataFrame:
    """Rows ``M, K, N, measured_dense_us`` (and ``measured_2of4_us`` for a 2:4 set); errors name the file."""
    if not measurement.path.is_file():
        raise NmsimError(f"measurement set {measurement.name}: no file {measurement.path}")
    try:
        raw = pd.read_csv(measurement.path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise NmsimError(f"measurement set {measurement.path}: not a CSV ({exc})") from None
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


def _time_us(sim: GemmSimulation, spec: AcceleratorSpec, extra_us: float) -> float:
    return sim.cycles / spec.clock_GHz / 1e3 + extra_us


def _roofline_us(sim: GemmSimulation, spec: AcceleratorSpec) -> float:
    return sim.roofline_cycles / spec.clock_GHz / 1e3


def predict(measurement: MeasurementSet, timing: Timing | None = None) -> pd.DataFrame:
    """One row per GEMM and kernel (dense, 2:4): measured, predicted and roofline µs, error, the mapping."""
    timing = timing or load_timing()
    frame = read_measurements(measurement)
    dense_spec = AcceleratorSpec.from_name(measurement.design)
    sparse_spec = AcceleratorSpec.from_name(measurement.sparse_design) if measurement.sparse_design else None
    extra = timing.host_dispatch_us if measurement.harness == "host" else 0.0
    dense_use = LayerUse(DENSE, "none", 1.0)
    rows = []
    for record in frame.itertuples(index=False):
        gemm = Gemm(0, "q", "prefill", int(record.M), int(record.K), int(record.N))
        kernels = [("dense", dense_spec, dense_use, record.measured_dense_us)]
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
    return table, summarize(table)
