"""Regenerate tests/sim/golden_totals.json: whole-model totals of every design preset on its patterns.

    python scripts/golden_totals.py [OUT.json]    (default: tests/sim/golden_totals.json)

Every design preset (``nmsim.registry.design_names()``) runs dense and each pattern it supports, in prefill (batch 1
of 512 tokens) and in decode (batch 4), on smollm2-135m with the committed traces, against the a100-dense baseline.
A handful of named numbers per case (:data:`NUMBERS`) are kept, so that any change to the simulator engine shows
up in ``tests/sim/test_golden.py`` as a list of named numbers that moved; rerun this script when the change is
intended and commit the new file with it.

``tests/sim/test_golden.py`` imports this file (:func:`case_names`, :func:`design_numbers`), so the cases it checks
are the ones written here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nmsim import registry
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import Pattern
from nmsim.sim.cases import sweep
from nmsim.traces.reader import committed_traces

COMMAND = "python scripts/golden_totals.py"
GOLDEN_FILE = Path(__file__).resolve().parent.parent / "tests" / "sim" / "golden_totals.json"
MODEL = "smollm2-135m"
BASELINE = "a100-dense"
SEQ = 512
RUNS = (("prefill", 1), ("decode", 4))  # (phase, batch): prefill batch 1 of SEQ tokens, decode batch 4
NUMBERS = ("cycles", "time_us", "speedup_vs_dense_same_design", "speedup_vs_baseline", "offchip_bytes",
           "energy_uJ", "roofline_cycles", "utilization")


def design_patterns(spec: AcceleratorSpec) -> tuple[Pattern, ...]:
    """Dense and every pattern the design supports, in the preset's order."""
    return (Pattern.dense(), *spec.sparsity.patterns)


def case_name(design: str, pattern: Pattern | str, phase: str, batch: int) -> str:
    """``act-8of16 | 8:16 | prefill b1``."""
    return f"{design} | {pattern} | {phase} b{batch}"


def case_names(design: str) -> list[str]:
    """The cases of one design preset."""
    spec = AcceleratorSpec.from_name(design)
    return [case_name(design, pattern, phase, batch) for pattern in design_patterns(spec) for phase, batch in RUNS]


def all_case_names() -> list[str]:
    """Every case of every design preset: what the golden file must hold."""
    return [name for design in registry.design_names() for name in case_names(design)]


def design_numbers(design: str) -> dict[str, dict]:
    """The named numbers of every case of one design preset (one sweep per phase), by case name."""
    spec = AcceleratorSpec.from_name(design)
    baseline = AcceleratorSpec.from_name(BASELINE)
    shape = registry.model_shape(MODEL)
    patterns = design_patterns(spec)
    traces = committed_traces(patterns, MODEL)
    cases = {}
    for phase, batch in RUNS:
        table = sweep([spec], shape, baseline=baseline, patterns=patterns, phases=(phase,), batches=(batch,),
                      seq=SEQ, traces=traces)
        if len(table) != len(patterns):
            raise RuntimeError(f"{design} {phase} b{batch}: {len(table)} rows for {len(patterns)} patterns")
        for row in table.itertuples(index=False):
            name = case_name(design, row.pattern, row.phase, int(row.batch))
            cases[name] = {"trace": row.trace, **{key: float(getattr(row, key)) for key in NUMBERS}}
    expected = case_names(design)
    if sorted(cases) != sorted(expected):
        raise RuntimeError(f"{design}: simulated cases {sorted(cases)} are not the expected {sorted(expected)}")
    return cases


def golden() -> dict:
    """The whole golden file's content."""
    cases = {}
    for design in registry.design_names():
        cases.update(design_numbers(design))
    return {
        "generated_by": COMMAND,
        "setup": {"model": MODEL, "baseline": BASELINE, "traces": "committed (magnitude, no mitigation)",
                  "runs": [f"{phase} b{batch}" + (f" seq {SEQ}" if phase == "prefill" else "")
                           for phase, batch in RUNS],
                  "numbers": list(NUMBERS)},
        "cases": cases,
    }


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else GOLDEN_FILE
    data = golden()
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(data['cases'])} cases to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
