"""Where a run's mask statistics come from: measured, transplanted, or (asked for explicitly) idealised.

For a model and a pattern, :func:`statistics_for` returns, in this order:

1. **measured**: the model's own committed trace for the pattern (``traces/<model>_<pattern>_magnitude_none``);
2. **transplanted**: the committed profile of the traced model that stands in for it (``source``, by default
   :func:`nmsim.registry.statistics_source`: its registered ``statistics_from``, else Llama-like → SmolLM2-135M,
   Gemma-like → Gemma 3 270M), mapped onto its layers (:mod:`nmsim.traces.transplant`);
3. nothing: the caller refuses, or uses the idealised N/M answer only when asked (``--ideal``).

Every result carries its ``provenance`` (``measured (trace name)``, ``transplanted from smollm2-135m``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import TRACE_ROOT, TRACED_MODELS, ModelShape, committed_trace_dir, statistics_source, trace_name
from nmsim.traces.profile import PROFILE_FILE, read_profile
from nmsim.traces.reader import TraceData
from nmsim.traces.transplant import transplant

log = logging.getLogger(__name__)

IDEAL = "ideal"  # the provenance of the idealised N/M answer (every token of a tile keeps the same positions)


def profile_path(model: str, pattern: Pattern | str, root: Path | None = None) -> Path | None:
    """The committed profile of ``model`` pruned to ``pattern``, if there is one."""
    directory = committed_trace_dir(model, pattern, root)
    return directory / PROFILE_FILE if directory is not None and (directory / PROFILE_FILE).is_file() else None


def statistics_for(shape: ModelShape, pattern: Pattern | str, *, root: Path | None = TRACE_ROOT,
                   source: str | None = None) -> TraceData | None:
    """The mask statistics of ``shape`` pruned to ``pattern``: measured when the model has a committed trace (and no
    other ``source`` is asked for), else transplanted from ``source``'s committed profile; None when neither exists."""
    pattern = parse_pattern(pattern)
    if root is None:
        return None
    own = committed_trace_dir(shape.name, pattern, root)
    if own is not None and source in (None, shape.name):
        return TraceData.open(own)
    source = source or statistics_source(shape)
    if source not in TRACED_MODELS:
        raise NmsimError(f"statistics source {source!r}: not a traced model (traced: {', '.join(TRACED_MODELS)})")
    path = profile_path(source, pattern, root)
    if path is None:
        return None
    log.info("%s %s: mask statistics transplanted from %s (%s)", shape.name, pattern, source, path.parent.name)
    return transplant(read_profile(path), shape, origin=path.parent)


def missing_message(shape: ModelShape, pattern: Pattern, root: Path | None) -> str:
    """Why no statistics exist and how to get them."""
    return (f"no mask statistics for {shape.name} at {pattern}: no committed trace "
            f"({Path(root or TRACE_ROOT) / trace_name(shape.name, pattern)}) and no profile to "
            f"transplant from {statistics_source(shape)}; capture one with `nmsim traces build --model MODEL "
            f"--pattern {pattern}` and `nmsim traces profile DIR`, pick another source with --stats-from, or pass "
            "--ideal for the idealised N/M answer (it assumes every token of a tile keeps the same values)")
