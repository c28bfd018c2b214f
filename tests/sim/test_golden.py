"""Golden whole-model totals: every design preset × dense and its patterns × prefill b1 / decode b4 on smollm2-135m
with the committed traces (ZigZag-style). Any change to the simulator engine shows up here as the named numbers
that moved; when it is intended, regenerate ``golden_totals.json`` with ``python scripts/golden_totals.py``."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import pytest

from nmsim import registry

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "golden_totals.py"
GOLDEN_FILE = Path(__file__).with_name("golden_totals.json")
REL = 1e-9


def _load_script():
    spec = importlib.util.spec_from_file_location("golden_totals", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden_script = _load_script()
GOLDEN = json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]


@functools.cache
def _design_numbers(design: str) -> dict[str, dict]:
    """Every case of one design, simulated once for all the parametrised tests of that design."""
    return golden_script.design_numbers(design)


def _moved(old: dict, new: dict) -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(before, float) and isinstance(after, float):
            if after == pytest.approx(before, rel=REL):
                continue
            change = f" ({(after - before) / before:+.3%})" if before else ""
            lines.append(f"  {key}: {before!r} -> {after!r}{change}")
        elif before != after:
            lines.append(f"  {key}: {before!r} -> {after!r}")
    return lines


def test_golden_file_header():
    assert GOLDEN["generated_by"] == golden_script.COMMAND
    assert GOLDEN["setup"]["numbers"] == list(golden_script.NUMBERS)


def test_golden_cases_are_the_current_cases():
    """A new design preset or pattern must be added to the golden file (and a removed one taken out)."""
    current = set(golden_script.all_case_names())
    stored = set(CASES)
    missing, stale = sorted(current - stored), sorted(stored - current)
    assert not missing and not stale, (
        f"golden_totals.json is out of date: missing cases {missing}, stale cases {stale}; "
        f"rerun `{golden_script.COMMAND}`")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_totals(name):
    design = name.split(" | ")[0]
    if design not in registry.design_names():
        pytest.fail(f"{name}: design preset {design!r} no longer exists; rerun `{golden_script.COMMAND}`")
    computed = _design_numbers(design)
    if name not in computed:
        pytest.fail(f"{name}: no longer simulated (the preset's patterns changed); rerun `{golden_script.COMMAND}`")
    moved = _moved(CASES[name], computed[name])
    if moved:
        pytest.fail(f"{name}: golden numbers moved (old -> new):\n" + "\n".join(moved)
                    + f"\nIf the change is intended, rerun `{golden_script.COMMAND}` and commit "
                    "tests/sim/golden_totals.json.", pytrace=False)
