"""Fuzz: mutated accelerator YAML files (from the presets) through ``nmsim simulate``.

Each case is a preset with one mutation: a numeric leaf replaced by NaN, ±inf, -1, 0, a huge number, a float
where an integer may be meant, a string, a list or null; a key deleted, duplicated or added; a NUL byte; the file
cut at a random byte. Every run must end in a clean refusal (exit 2, one error line) or a correct result: exit 0
and strict JSON whose numbers are all finite. Mutations the schema must always refuse also name the key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmsim.yaml_io import load_yaml

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ("a100-dense", "systolic-32x32-os", "act-8of16", "h100-sxm")
SIMULATE = ("--model", "smollm2-135m", "--seq", "16", "--generate", "1")
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Replacements of a numeric leaf: (label, value, always refused).
ALWAYS = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("negative", -1), ("huge", 10**30),
          ("huge float", 1e300), ("string", "fast"), ("list", [1, 2]), ("null", None), ("mapping", {"a": 1})]
SOMETIMES = [("zero", 0), ("half", 576.5), ("float", 1e30), ("tiny", 1e-12), ("one", 1)]


def _text(name: str) -> str:
    return (ROOT / "hw_configs" / f"{name}.yaml").read_text()


def _tree(name: str):
    """The preset as plain dicts and lists, read as nmsim reads it (YAML 1.2: 8:16 stays a string)."""
    def plain(node):
        if isinstance(node, dict):
            return {key: plain(value) for key, value in node.items()}
        return [plain(value) for value in node] if isinstance(node, list) else node

    return plain(load_yaml(ROOT / "hw_configs" / f"{name}.yaml"))


def _leaves(node, path=()):
    """(path, value) of every int or float leaf (not bools)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def _set(data, path, value):
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value


def _dotted(path) -> str:
    """The key path an error names: list items of a value (patterns, tiles) count as the key."""
    if len(path) > 1 and isinstance(path[-1], int) and path[-2] in ("patterns", "tile_shapes"):
        path = path[:-1]
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def _strict_finite(text: str):
    """Parse strict JSON (NaN or Infinity is an error) and assert every number is finite."""
    def refuse(token):
        raise AssertionError(f"bare {token} in the JSON")

    data = json.loads(text, parse_constant=refuse)
    for path, value in _leaves(data):
        assert math.isfinite(value), (path, value)
    return data


def _simulate(cli, design: Path, out: Path):
    return cli("simulate", "--hw", design, *SIMULATE, "--json", out)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("design_fuzz")


def _accepted_or_refused(outcome, out: Path):
    if outcome.code == 0:
        outcome.accepted()
        _strict_finite(out.read_text())
    else:
        outcome.refused()


@FUZZ
@given(data=st.data(), preset=st.sampled_from(PRESETS),
       replacement=st.sampled_from(ALWAYS + SOMETIMES))
def test_a_numeric_leaf_replaced(cli, work, data, preset, replacement):
    tree = _tree(preset)
    leaves = sorted(_leaves(tree), key=lambda leaf: str(leaf[0]))
    path, _ = data.draw(st.sampled_from(leaves), label="leaf")
    label, value = replacement
    _set(tree, path, value)
    design = work / f"{preset}.yaml"
    design.write_text(yaml.safe_dump(tree, sort_keys=False))
    out = work / "out.json"
    out.unlink(missing_ok=True)
    outcome = _simulate(cli, design, out)
    if (label, value) in ALWAYS:
        outcome.refused(str(design), _dotted(path))
    else:
        _accepted_or_refused(outcome, out)


@FUZZ
@given(data=st.data(), preset=st.sampled_from(PRESETS),
       mutation=st.sampled_from(["delete", "duplicate", "unknown", "nul", "truncate"]))
def test_a_structural_mutation(cli, work, data, preset, mutation):
    text = _text(preset)
    lines = text.splitlines(keepends=True)
    keyed = [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith(("#", "- {"))
             and not line.rstrip().endswith(":") and line.strip()]
    design = work / f"{preset}-{mutation}.yaml"
    needles: tuple[str, ...] = ()
    if mutation == "delete":
        tree = _tree(preset)
        paths = sorted({p[:depth] for p, _ in _leaves(tree) for depth in range(1, len(p) + 1)
                        if not isinstance(p[depth - 1], int)}, key=str)
        path = data.draw(st.sampled_from(paths), label="key")
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
        design.write_text(yaml.safe_dump(tree, sort_keys=False))
    elif mutation == "duplicate":
        index = data.draw(st.sampled_from(keyed), label="line")
        lines.insert(index + 1, lines[index])
        design.write_text("".join(lines))
        needles = ("duplicate key",) if "{" not in lines[index] else ()
    elif mutation == "unknown":
        index = data.draw(st.sampled_from(keyed), label="line")
        indent = lines[index][:len(lines[index]) - len(lines[index].lstrip())]
        lines.insert(index + 1, f"{indent}bogus_key_GHz: 1\n")
        design.write_text("".join(lines))
        needles = ("unknown key", "bogus_key_GHz") if not indent.lstrip(" ") else ()
    elif mutation == "nul":
        position = data.draw(st.integers(0, len(text)), label="offset")
        design.write_text(text[:position] + "\0" + text[position:])
        needles = (str(design), "U+0000")
    else:
        raw = text.encode()
        design.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1), label="cut")])
    out = work / "out.json"
    out.unlink(missing_ok=True)
    outcome = _simulate(cli, design, out)
    if needles:
        outcome.refused(*needles)
    else:
        _accepted_or_refused(outcome, out)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_simulates_to_strict_finite_json(cli, work, preset):
    out = work / f"{preset}.json"
    outcome = _simulate(cli, ROOT / "hw_configs" / f"{preset}.yaml", out)
    outcome.accepted()
    _strict_finite(out.read_text())
