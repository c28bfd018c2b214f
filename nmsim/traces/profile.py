"""Mask profiles: per layer and input, the statistics the simulator consumes and the statistical mask model fitted to
them, in one compact, versioned, checksummed JSON file (torch-free).

A profile is written from a trace's statistics (``nmsim traces profile DIR`` → ``DIR/profile.json``). Per phase and
input (``q+k+v``, ``o``, ``gate+up``, ``down`` of each layer) it holds: the measured weight-row union fraction for
tiles of T tokens, the kept-count distribution per aligned group of 4/8/16/32, density, natural zeros, and the
fitted :class:`~nmsim.traces.mask_model.MaskModel` (every candidate's parameters and error, and the chosen one).
The token order of a tile is stated: prefill tiles are consecutive positions of one window; decode tiles are
step-major (a tile of T tokens is T/B steps of the B sequences decoded together).

:func:`measured_statistics` turns a profile back into the simulator's statistics for its own model (the measured
values, exactly as the trace's); :mod:`nmsim.traces.transplant` maps one onto another model.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from nmsim.errors import NmsimError
from nmsim.io import atomic_write_text
from nmsim.patterns import Pattern, parse_pattern
from nmsim.traces import mask_model
from nmsim.traces.mask_model import MaskModel
from nmsim.traces.reader import InputStats, TraceData

FORMAT = "nmsim-mask-profile"
FORMAT_VERSION = 1
PROFILE_FILE = "profile.json"
ROLES = {"q+k+v": "qkv", "o": "o", "gate+up": "gate_up", "down": "down"}  # an input's projection role


@dataclass(frozen=True)
class InputProfile:
    """One input of one phase: measured statistics and the fitted model."""

    phase: str
    layer: int
    key: str  # e.g. "L3.q+k+v"
    projections: str  # e.g. "q+k+v"
    k: int
    tokens: int
    density: float
    natural_zero_fraction: float
    union: tuple[tuple[int, float], ...]  # (tile tokens, measured weight-row fraction)
    group_nnz: tuple[tuple[int, int, float], ...]  # (group size, kept in group, fraction of groups)
    fits: dict[str, dict]  # candidate → {"kappa", "rho", "mae"}
    chosen: str  # the candidate the simulator uses

    @property
    def role(self) -> str:
        return ROLES.get(self.projections, self.projections)

    @property
    def model(self) -> MaskModel:
        fit = self.fits[self.chosen]
        return MaskModel(self.density, fit["kappa"], fit["rho"])

    def statistics(self) -> InputStats:
        """The measured statistics, as the simulator reads them from a trace."""
        return InputStats(key=self.key, k=self.k, tokens=self.tokens, density=self.density,
                          natural_zero_fraction=self.natural_zero_fraction, rows_needed=self.union,
                          group_nnz=self.group_nnz)


@dataclass(frozen=True)
class Profile:
    model: str  # the model the trace was captured from
    num_layers: int
    pattern: Pattern
    method: dict
    source: dict  # trace name, token counts, capture settings, token order
    inputs: tuple[InputProfile, ...]

    def phase_inputs(self, phase: str) -> list[InputProfile]:
        return [entry for entry in self.inputs if entry.phase == phase]

    def fit_summary(self) -> dict[str, dict[str, float]]:
        """Per phase and candidate: the mean absolute error over the inputs (how well each candidate fits)."""
        summary = {}
        for phase in sorted({entry.phase for entry in self.inputs}):
            entries = self.phase_inputs(phase)
            summary[phase] = {name: sum(e.fits[name]["mae"] for e in entries) / len(entries)
                              for name in mask_model.CANDIDATES}
        return summary


def profile_from_trace(trace: TraceData) -> Profile:
    """Fit the statistical model to every input of a trace's statistics."""
    manifest = _manifest(trace.path)
    entries = []
    by_input = {(phase, stats.key): stats for (phase, _, _), stats in trace.inputs.items()}
    for row in trace.table("inputs").itertuples(index=False):
        stats = by_input[(row.phase, row.input)]
        density = float(stats.density)
        fits = mask_model.fit(density, stats.rows_needed) if stats.rows_needed else {
            name: (MaskModel(density), 0.0) for name in mask_model.CANDIDATES}
        errors = {name: error for name, (_, error) in fits.items()}
        entries.append(InputProfile(  # numbers as the file keeps them, so a profile read back equals this one
            phase=row.phase, layer=int(row.layer), key=row.input, projections=row.projections, k=int(row.k),
            tokens=int(row.tokens), density=_rounded(density),
            natural_zero_fraction=_rounded(float(stats.natural_zero_fraction)),
            union=tuple((int(t), _rounded(float(u))) for t, u in stats.rows_needed),
            group_nnz=tuple((int(g), int(j), _rounded(float(f))) for g, j, f in stats.group_nnz),
            fits=_rounded({name: {"kappa": model.kappa, "rho": model.rho, "mae": error}
                           for name, (model, error) in fits.items()}),
            chosen=mask_model.choose(errors) if trace.pattern.kind != "dense" else "independent"))
    capture = manifest.get("capture", {})
    source = {
        "trace": trace.path.name,
        "token_counts": manifest.get("token_counts", {}),
        "capture": capture,
        "token_order": {
            "prefill": "consecutive positions of one window",
            "decode": f"step-major: a tile of T tokens is T/{capture.get('decode_batch', '?')} steps of the "
                      f"{capture.get('decode_batch', '?')} sequences decoded together",
        },
    }
    layers = 1 + max(entry.layer for entry in entries)
    return Profile(trace.model, layers, trace.pattern, dict(trace.method), source, tuple(entries))


def _manifest(path: Path) -> dict:
    for name in ("full_manifest.json", "manifest.json"):
        if (path / name).is_file():
            return json.loads((path / name).read_text(encoding="utf-8"))
    return {}


# --- the file ------------------------------------------------------------------------------------------------------
def _body(profile: Profile) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": profile.model,
        "num_layers": profile.num_layers,
        "pattern": str(profile.pattern),
        "method": profile.method,
        "source": profile.source,
        "mask_model": {"candidates": list(mask_model.CANDIDATES), "fit_slack": mask_model.FIT_SLACK,
                       "fit_tolerance": mask_model.FIT_TOLERANCE,
                       "formula": "u(T) = 1 - B(a, b + 1 + (T-1) rho) / B(a, b), a = d kappa, b = (1-d) kappa "
                                  "(kappa null: 1 - (1-d)^(1 + (T-1) rho)); kept per aligned group: hypergeometric "
                                  "within the selection group",
                       "fit_summary_mae": profile.fit_summary()},
        "inputs": [{
            "phase": e.phase, "layer": e.layer, "key": e.key, "projections": e.projections, "k": e.k,
            "tokens": e.tokens, "density": e.density, "natural_zero_fraction": e.natural_zero_fraction,
            "union": [[t, u] for t, u in e.union], "group_nnz": [[g, j, f] for g, j, f in e.group_nnz],
            "fits": e.fits, "chosen": e.chosen,
        } for e in profile.inputs],
    }


def _rounded(value):
    """Floats to 7 significant digits (the statistics have 6): the file stays small and reads back exactly."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as JSON with the sha256 of its canonical body; atomic."""
    body = _rounded(_body(profile))
    document = {**body, "sha256": hashlib.sha256(_canonical(body).encode()).hexdigest()}
    inputs = document.pop("inputs")
    header = json.dumps(document, indent=1, sort_keys=True, allow_nan=False)
    lines = ",\n".join("  " + json.dumps(entry, sort_keys=True, separators=(",", ":"), allow_nan=False)
                       for entry in inputs)  # one line per input
    path = Path(path)
    atomic_write_text(path, header[:-2] + ',\n "inputs": [\n' + lines + "\n ]\n}\n")
    return path


def _problem(path: Path, what: str) -> NmsimError:
    return NmsimError(f"profile {path}: {what}; write it again with `nmsim traces profile TRACE_DIR` or restore it "
                      "(git checkout)")


def read_profile(path: str | Path) -> Profile:
    """Read and check a profile (format, version, checksum, values); one clear error if anything is off."""
    path = Path(path)
    if path.is_dir():
        path = path / PROFILE_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _problem(path, "missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _problem(path, f"not readable JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _problem(path, f"not an nmsim mask profile (format must be {FORMAT!r})")
    if document.get("format_version") != FORMAT_VERSION:
        raise _problem(path, f"format version {document.get('format_version')!r}, this nmsim reads {FORMAT_VERSION}")
    stated = document.pop("sha256", None)
    if stated != hashlib.sha256(_canonical(document).encode()).hexdigest():
        raise _problem(path, "checksum mismatch (the file was changed or truncated)")
    try:
        inputs = tuple(_entry(item) for item in document["inputs"])
        return Profile(str(document["model"]), int(document["num_layers"]), parse_pattern(document["pattern"]),
                       dict(document["method"]), dict(document["source"]), inputs)
    except (KeyError, TypeError, ValueError, NmsimError) as exc:
        raise _problem(path, f"malformed ({type(exc).__name__}: {exc})") from None


def _entry(item: dict) -> InputProfile:
    entry = InputProfile(
        phase=str(item["phase"]), layer=int(item["layer"]), key=str(item["key"]), projections=str(item["projections"]),
        k=int(item["k"]), tokens=int(item["tokens"]), density=float(item["density"]),
        natural_zero_fraction=float(item["natural_zero_fraction"]),
        union=tuple((int(t), float(u)) for t, u in item["union"]),
        group_nnz=tuple((int(g), int(j), float(f)) for g, j, f in item["group_nnz"]),
        fits={str(name): {"kappa": None if fit["kappa"] is None else float(fit["kappa"]), "rho": float(fit["rho"]),
                          "mae": float(fit["mae"])} for name, fit in item["fits"].items()},
        chosen=str(item["chosen"]),
    )
    numbers = [entry.density, entry.natural_zero_fraction, *(u for _, u in entry.union),
               *(f for _, _, f in entry.group_nnz)]
    if entry.phase not in ("prefill", "decode") or entry.k < 1 or entry.tokens < 0 or entry.chosen not in entry.fits \
            or any(not math.isfinite(v) or not 0.0 <= v <= 1.0 for v in numbers):
        raise ValueError(f"input {entry.key} ({entry.phase}): values out of range")
    return entry


# --- back to the simulator -----------------------------------------------------------------------------------------
def measured_statistics(profile: Profile, path: Path) -> TraceData:
    """The simulator's statistics for the profile's own model: its measured values, as the trace has them."""
    inputs = {}
    for entry in profile.inputs:
        stats = entry.statistics()
        for projection in entry.projections.split("+"):
            inputs[(entry.phase, entry.layer, projection)] = stats
    return TraceData(path, profile.model, profile.pattern, profile.method, inputs, {},
                     provenance=f"measured ({profile.source.get('trace', path.name)})")
