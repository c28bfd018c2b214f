"""The one reader of trace statistics, for the simulator and the report alike (torch-free).

A trace directory (committed under ``traces/`` or written by ``nmsim capture``) holds ``stats/`` (tables of
:mod:`nmsim.traces.stats`) and a manifest (``full_manifest.json`` or ``manifest.json``) naming the model and the
pattern. :class:`TraceData` holds the tables as read (``tables``) and one :class:`InputStats` per phase and captured
input; GEMMs find their input by layer and projection (q, k and v share one input, so do gate and up).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import TRACE_ROOT, ModelShape, committed_trace_dir
from nmsim.traces.checks import check_statistics
from nmsim.traces.format import read_manifest_file
from nmsim.traces.stats import CHECKSUMS, CHECKSUMS_FORMAT

_TABLES = ("inputs", "group_nnz", "weight_fetch")  # required: the simulator reads them
_OPTIONAL_TABLES = ("compression", "agreement")  # read when present: the report's byte and overlap figures


@dataclass(frozen=True)
class InputStats:
    """Statistics of one linear-layer input over the captured tokens of one phase."""

    key: str  # e.g. "L3.q+k+v"
    k: int
    tokens: int
    density: float  # kept fraction
    natural_zero_fraction: float  # values that were exactly zero before pruning
    rows_needed: tuple[tuple[int, float], ...]  # (tile tokens, weight-row fraction of the union of masks)
    group_nnz: tuple[tuple[int, int, float], ...]  # (group size, kept in group, fraction of groups)

    def group_histogram(self, group_size: int) -> dict[int, float]:
        found = {kept: fraction for size, kept, fraction in self.group_nnz if size == group_size}
        if not found:
            raise NmsimError(f"trace input {self.key}: no group statistics for groups of {group_size}")
        return found


@dataclass(frozen=True)
class TraceData:
    path: Path
    model: str
    pattern: Pattern
    method: dict
    inputs: dict[tuple[str, int, str], InputStats]  # (phase, layer, projection) → statistics
    tables: dict[str, pd.DataFrame]  # stats/<name>.csv as read: inputs, group_nnz, weight_fetch (+ compression, ...)
    provenance: str = "measured"  # where the statistics come from: measured (trace), transplanted from a model, ...

    def table(self, name: str) -> pd.DataFrame:
        """One statistics table; an error names the file when the trace lacks it."""
        if name not in self.tables:
            raise NmsimError(f"trace {self.path}: missing stats/{name}.csv; compute the statistics again with "
                             f"`nmsim traces stats {self.path}`")
        return self.tables[name]

    @classmethod
    def open(cls, path: str | Path) -> TraceData:
        """Read a trace directory's statistics and manifest, checked: the manifest's own checksum, every
        ``stats/`` file against ``stats/checksums.json`` (which also names the manifest they were computed from),
        and the tables' invariants (:func:`nmsim.traces.checks.check_statistics`). Errors name the file and what
        is missing or wrong, and how to make it again."""
        path = Path(path)
        stats_dir = path / "stats" if (path / "stats").is_dir() else path
        manifest_file = next((p for p in (path / "full_manifest.json", path / "manifest.json",
                                          stats_dir.parent / "full_manifest.json") if p.is_file()), None)
        missing = [name for name in _TABLES if not (stats_dir / f"{name}.csv").is_file()]
        if manifest_file is None or missing:
            what = "a manifest (full_manifest.json or manifest.json)" if manifest_file is None else \
                ", ".join(f"{name}.csv" for name in missing)
            raise NmsimError(f"trace {path}: missing {what}; compute the statistics with `nmsim traces stats {path}` "
                             "or pick a committed trace under traces/")
        try:
            label = f"{stats_dir.relative_to(manifest_file.parent).as_posix()}/"
        except ValueError:
            label = f"{stats_dir}/"
        label = "" if label == "./" else label
        manifest = read_manifest_file(manifest_file)
        data = _checked_files(path, stats_dir, label, manifest, manifest_file)
        try:
            return cls._read(path, label, manifest, manifest_file, data)
        except (ValueError, KeyError, AttributeError, TypeError, pd.errors.ParserError) as exc:
            raise NmsimError(f"trace {path}: corrupted statistics or manifest ({type(exc).__name__}: {str(exc).strip()}); "
                             "restore it (git checkout) or capture it again with `nmsim traces build`") from None

    @classmethod
    def _read(cls, path: Path, label: str, manifest: dict, manifest_file: Path, data: dict[str, bytes]) -> TraceData:
        tables = {}
        for name, raw in data.items():
            try:
                tables[name] = pd.read_csv(io.BytesIO(raw))
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise NmsimError(f"trace {path}: {label}{name}.csv: not a readable CSV table "
                                 f"({str(exc).strip() or type(exc).__name__})") from None
        try:
            check_statistics(tables, manifest, label, manifest_file.name)
        except NmsimError as exc:
            raise NmsimError(f"trace {path}: invalid statistics: {exc}") from None
        rows_needed = {key: tuple(zip(group.tile_tokens.astype(int), group.weight_rows_needed_fraction))
                       for key, group in tables["weight_fetch"].groupby(["phase", "input"], sort=False)}
        histograms = {key: tuple(zip(group.group_size.astype(int), group.kept_in_group.astype(int),
                                     group.fraction_of_groups))
                      for key, group in tables["group_nnz"].groupby(["phase", "input"], sort=False)}
        inputs = {}
        for row in tables["inputs"].itertuples(index=False):
            stats = InputStats(
                key=row.input, k=int(row.k), tokens=int(row.tokens), density=float(row.density),
                natural_zero_fraction=float(row.natural_zero_fraction),
                rows_needed=tuple(sorted(rows_needed.get((row.phase, row.input), ()))),
                group_nnz=histograms.get((row.phase, row.input), ()),
            )
            for projection in row.projections.split("+"):
                inputs[(row.phase, int(row.layer), projection)] = stats
        method = manifest["method"]
        return cls(path, manifest.get("model", {}).get("name", "?"), parse_pattern(method["pattern"]),
                   method, inputs, tables, provenance=f"measured ({path.name})")

    def check_model(self, shape: ModelShape) -> None:
        """Raise unless this trace covers every layer and projection of ``shape`` with matching K."""
        for projection in ("q", "o", "gate" if "gate" in shape.projections else "up", "down"):
            k, _ = shape.projection_shape(projection)
            for layer in range(shape.num_layers):
                stats = next((self.inputs[key] for key in ((p, layer, projection) for p in ("prefill", "decode"))
                              if key in self.inputs), None)
                if stats is None or stats.k != k:
                    found = "nothing" if stats is None else f"K={stats.k}"
                    raise NmsimError(
                        f"trace {self.path} (model {self.model}) does not fit model {shape.name}: layer {layer} "
                        f"{projection} needs K={k}, the trace has {found}; capture a trace of this model with "
                        "`nmsim capture`")

    def for_gemm(self, gemm) -> InputStats:
        """The statistics of a GEMM's input (anything with ``phase``, ``layer`` and ``projection``) in its phase;
        prefill statistics stand in if a phase is missing."""
        for phase in (gemm.phase, "prefill", "decode"):
            found = self.inputs.get((phase, gemm.layer, gemm.projection))
            if found is not None:
                return found
        raise NmsimError(f"trace {self.path}: no statistics for layer {gemm.layer} {gemm.projection}")


def _checked_files(path: Path, stats_dir: Path, label: str, manifest: dict, manifest_file: Path) -> dict[str, bytes]:
    """The bytes of each statistics table (the required ones and the optional ones present), each checked against
    ``checksums.json``, whose manifest checksum must be the manifest's."""
    redo = f"recompute with `nmsim traces stats {path}` (a committed trace: restore it with git checkout)"
    record_file = stats_dir / CHECKSUMS
    if not record_file.is_file():
        raise NmsimError(f"trace {path}: {label}{CHECKSUMS} is missing, so the statistics are not covered by "
                         f"checksums; {redo}")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        files = record["files"] if record.get("format") == CHECKSUMS_FORMAT else None
        if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
            raise ValueError("not an nmsim statistics checksum file")
    except (ValueError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise NmsimError(f"trace {path}: {label}{CHECKSUMS}: unreadable ({exc}); {redo}") from None
    if record.get("manifest_sha256") != manifest.get("manifest_sha256"):
        raise NmsimError(f"trace {path}: {manifest_file.name} is not the manifest the statistics were computed from "
                         f"(its checksum differs from the one in {label}{CHECKSUMS}: edited or replaced); {redo}")
    names = [*_TABLES, *(n for n in _OPTIONAL_TABLES if (stats_dir / f"{n}.csv").is_file())]
    data = {}
    for name in names:
        entry = files.get(f"{name}.csv")
        if entry is None:
            raise NmsimError(f"trace {path}: {label}{name}.csv is not covered by {label}{CHECKSUMS}; {redo}")
        raw = (stats_dir / f"{name}.csv").read_bytes()
        if len(raw) != entry.get("bytes") or hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
            raise NmsimError(f"trace {path}: corrupted statistics: {label}{name}.csv: checksum mismatch (edited or "
                             f"damaged); {redo}")
        data[name] = raw
    for name in files:
        if name.removesuffix(".csv") not in names:
            raise NmsimError(f"trace {path}: {label}{name} is listed in {label}{CHECKSUMS} but missing; {redo}")
    return data


def committed_traces(patterns, model: str, root: Path | None = TRACE_ROOT) -> dict[Pattern, TraceData | None]:
    """The committed trace of ``model`` for each pattern (magnitude, no mitigation), or None where there is none
    (everywhere when ``root`` is None: the idealised answer)."""
    traces = {}
    for pattern in map(parse_pattern, patterns):
        directory = committed_trace_dir(model, pattern, root) if root is not None else None
        traces[pattern] = TraceData.open(directory) if directory is not None else None
    return traces
