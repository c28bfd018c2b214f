"""The fused magnitude kernel and the radix median agree exactly with the general torch path."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmsim.patterns import parse_pattern
from nmsim.sparsify.selection_kernel import lower_median
from nmsim.sparsify import linear as engine
from nmsim.sparsify.criteria import LayerContext, get_criterion
from nmsim.sparsify.mitigations import parse_mitigation

LAYER = LayerContext("layer", torch.randn(4, 64), {"median_mean": torch.tensor(0.25)})


def _both_paths(x, pattern, mitigation, monkeypatch):
    args = (x, parse_pattern(pattern), get_criterion("magnitude"), parse_mitigation(mitigation), LAYER)
    assert engine._fused_path_applies(x, args[1], args[2])
    fused = engine.sparsify_input(*args, want_mask=True)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "_fused_path_applies", lambda *a: False)
        general = engine.sparsify_input(*args)
    return fused, general


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "8:16", "16:32", "3:8"])
@pytest.mark.parametrize("mitigation", ["none", "median-shift", "static-shift", "median-shift+variance", "variance"])
def test_fused_path_equals_general_path(pattern, mitigation, monkeypatch):
    generator = torch.Generator().manual_seed(3)
    for x in (torch.randn(33, 64, generator=generator) * 2 + 0.4,
              torch.randint(-2, 3, (9, 64), generator=generator).float()):  # many ties
        fused, general = _both_paths(x, pattern, mitigation, monkeypatch)
        assert torch.equal(fused.values, general.values)
        assert torch.equal(fused.keep, general.keep)
        assert (fused.shift is None) == (general.shift is None)
        if fused.shift is not None:
            assert torch.equal(fused.shift, general.shift)
        if mitigation.endswith("variance"):
            assert torch.equal(fused.scale, general.scale)


def test_fused_path_rejects_nan():
    x = torch.randn(2, 16)
    x[1, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        engine.sparsify_input(x, parse_pattern("2:4"), get_criterion("magnitude"), parse_mitigation("none"), LAYER)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(width=32, allow_nan=False), st.sampled_from([0.0, -0.0, 1.0, -1.0])),
        min_size=1, max_size=300,
    )
)
def test_radix_median_is_torch_lower_median(values):
    row = np.array(values, dtype=np.float32)
    scratch = np.empty(len(values), np.int64), np.empty(len(values), np.int64), np.empty(256, np.int64)
    assert lower_median(row, *scratch) == torch.from_numpy(row).median().item()
