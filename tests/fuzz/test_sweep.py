"""Fuzz: mutated sweep files through ``nmsim sweep``.

A small valid sweep (two points, one phase, 16 tokens) gets one mutation: a value replaced by NaN, ±inf, -1, 0, a
huge number, a float, a string, a list or null (a sweep value or a top-level number); a key deleted, duplicated or
added; a NUL byte; the file cut at a random byte; a grid too large for the budget. Every run must end in a clean
refusal or in a table whose numbers are all finite.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SWEEP = """\
design: act-8of16
model: smollm2-135m
parameters:
  memory[0].bandwidth_GBps: [800, 1555]
  sparsity.selector_groups_per_cycle: [16]
patterns: [dense, 8:16]
phases: [decode]
batch_sizes: [1]
seq_tokens: 16
baseline: a100-dense
"""
FUZZ = settings(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ALWAYS = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("negative", -1), ("huge", 10**30),
          ("string", "fast"), ("list", [1, 2]), ("null", None)]
SOMETIMES = [("zero", 0), ("half", 0.5), ("float", 1e30), ("one", 1)]
# (key path in the sweep file, the key path the error names)
SLOTS = [(("parameters", "memory[0].bandwidth_GBps", 1), "memory[0].bandwidth_GBps"),
         (("parameters", "sparsity.selector_groups_per_cycle", 0), "sparsity.selector_groups_per_cycle"),
         (("batch_sizes", 0), "batch_sizes"), (("seq_tokens",), "seq_tokens")]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep_fuzz")


def _sweep(cli, path, work):
    return cli("sweep", path, "--workers", "1", "--out", work / "out" / "table")


def _check(outcome, work, needles=None):
    """``needles`` None: either ending; else a refusal naming them."""
    if needles is not None or outcome.code != 0:
        outcome.refused(*(needles or ()))
        return
    outcome.accepted()
    table = pd.read_parquet(work / "out" / "table.parquet")
    numbers = table.select_dtypes("number")
    assert len(table) and numbers.notna().all().all() and (numbers.abs() < math.inf).all().all(), table


@FUZZ
@given(slot=st.sampled_from(SLOTS), replacement=st.sampled_from(ALWAYS + SOMETIMES))
def test_a_value_replaced(cli, work, slot, replacement):
    (path, key), (label, value) = slot, replacement
    data = yaml.safe_load(SWEEP.replace("8:16", "'8:16'"))
    node = data
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    sweep = work / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(data, sort_keys=False))
    outcome = _sweep(cli, sweep, work)
    always = (label, value) in ALWAYS or key == "batch_sizes" and isinstance(value, float)
    _check(outcome, work, (str(sweep), key) if always else None)


@FUZZ
@given(data=st.data(), mutation=st.sampled_from(["delete", "duplicate", "unknown", "nul", "truncate"]))
def test_a_structural_mutation(cli, work, data, mutation):
    lines = SWEEP.splitlines(keepends=True)
    index = data.draw(st.integers(0, len(lines) - 1), label="line")
    sweep = work / f"sweep-{mutation}.yaml"
    needles = None
    if mutation == "delete":
        if lines[index].startswith("parameters:"):
            del lines[index:index + 3]
        else:
            del lines[index]
    elif mutation == "duplicate":
        lines.insert(index + 1, lines[index])
        needles = ("duplicate key",)
    elif mutation == "unknown":
        indent = lines[index][:len(lines[index]) - len(lines[index].lstrip())]
        lines.insert(index, f"{indent}bogus_key: 1\n")  # a parameter: not a list of values, then not a design key
        needles = ("bogus_key",) if indent else ("unknown key", "bogus_key")
    text = "".join(lines)
    if mutation == "nul":
        position = data.draw(st.integers(0, len(SWEEP)), label="offset")
        text = SWEEP[:position] + "\0" + SWEEP[position:]
        needles = (str(sweep), "U+0000")
    elif mutation == "truncate":
        text = SWEEP[:data.draw(st.integers(0, len(SWEEP) - 1), label="cut")]
    sweep.write_text(text)
    _check(_sweep(cli, sweep, work), work, needles)


def test_a_grid_beyond_the_budget_needs_yes_and_names_the_estimate(cli, work):
    sweep = work / "large.yaml"
    values = ", ".join(str(800 + v) for v in range(1000))
    sweep.write_text(SWEEP.replace("[800, 1555]", f"[{values}]").replace("[16]", "[4, 8, 16]"))
    line = _sweep(cli, sweep, work).refused("3,000 points", "6,000 cases", "estimated", "--yes", "SECONDS_PER_CASE")
    assert "budget of 10.0 min" in line
    huge = work / "huge.yaml"
    huge.write_text(SWEEP.replace("[16]", f"[{values}]").replace("[800, 1555]", f"[{values}, 1, 2]"))
    _sweep(cli, huge, work).refused("1,002,000 points", "at most 1,000,000")
