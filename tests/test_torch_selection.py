"""The torch selection path (CUDA and non-float32 dtypes) gives the compiled kernel's masks bit for bit."""

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nmsim.patterns import parse_pattern
from nmsim.sparsify import linear as engine
from nmsim.sparsify import selection_kernel, torch_selection
from nmsim.sparsify.criteria import LayerContext, get_criterion
from nmsim.sparsify.masks import keep_top_n, nm_mask, nm_mask_reference
from nmsim.sparsify.mitigations import parse_mitigation

INF = float("inf")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MASK_PAIRS = [(2, 4), (8, 16), (16, 32), (1, 4)]
FUSED_PAIRS = [(2, 4), (8, 16), (16, 32)]  # each compiles a kernel (2-5 s)
LAYER = LayerContext("layer", torch.randn(4, 64), {"median_mean": torch.tensor(0.25)})


@st.composite
def rows(draw, pairs=MASK_PAIRS, dtype=torch.float32):
    """(x [T, K], n, m) with K a multiple of m: smooth, heavily tied, mostly zero (±0) or ±inf-laden values."""
    n, m = draw(st.sampled_from(pairs))
    shape = (draw(st.integers(1, 5)), m * draw(st.integers(1, 4)))
    kind = draw(st.sampled_from(["normal", "ties", "zeros", "inf"]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    normal = torch.randn(shape, generator=gen) * 3
    ties = torch.randint(-3, 4, shape, generator=gen).float()
    if kind == "normal":
        x = normal
    elif kind == "ties":
        x = ties
    elif kind == "zeros":  # +0.0 and -0.0 in equal measure, a few other values
        x = torch.where(torch.rand(shape, generator=gen) < 0.8, torch.zeros(shape), ties)
        x = torch.where(torch.rand(shape, generator=gen) < 0.5, -x, x)
    else:
        infinities = torch.where(torch.rand(shape, generator=gen) < 0.5, INF, -INF)
        x = torch.where(torch.rand(shape, generator=gen) < 0.2, infinities, ties)
    return x.to(dtype), n, m


def _torch_path_everywhere(monkeypatch):
    """Send float32 CPU input down the torch path too (masks and the fused magnitude path)."""
    monkeypatch.setattr(selection_kernel, "supports", lambda scores, m: False)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=60, deadline=None)
@given(case=rows())
def test_masks_equal_kernel_and_reference(case, device):
    x, n, m = case
    for scores in (x, x.abs()):
        kernel = selection_kernel.keep_top_n_of_m(scores, n, m)
        torch_path = torch_selection.keep_top_n_of_m(scores.to(device), n, m)
        reference = keep_top_n(scores.reshape(*scores.shape[:-1], -1, m), n).reshape(scores.shape)
        assert torch_path.device.type == device
        assert torch.equal(torch_path.cpu(), kernel)
        assert torch.equal(kernel, reference)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shift", ["none", "median", "static"])
@settings(max_examples=25, deadline=None)
@given(case=rows(pairs=FUSED_PAIRS))
def test_fused_magnitude_path_equals_kernel(case, shift, device):
    x, n, m = case
    if shift == "median":  # a median of ±inf would make x − η NaN: outside the contract of both paths
        assume(bool(torch.isfinite(x.median(dim=-1).values).all()))
    static = -0.75  # exact in every dtype
    kernel = selection_kernel.prune_rows_by_magnitude(x, n, m, shift, static, with_mask=True)
    torch_path = torch_selection.prune_rows_by_magnitude(x.to(device), n, m, shift, static, with_mask=True)
    pruned, eta, keep = (t.cpu() for t in torch_path)
    assert torch.equal(keep, kernel[2])
    assert torch.equal(pruned, kernel[0])
    assert torch.equal(eta, kernel[1])
    assert pruned.dtype == eta.dtype == torch.float32 and torch_path[0].device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mitigation", ["none", "median-shift+variance", "static-shift+variance", "variance"])
def test_sparsify_input_on_the_torch_path(device, mitigation, monkeypatch):
    """The whole fused input pruning, variance correction included, through both paths."""
    gen = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(7, 64, generator=gen) * 2 + 0.3, torch.randint(-2, 3, (5, 64), generator=gen).float()])
    args = (parse_pattern("8:16"), get_criterion("magnitude"), parse_mitigation(mitigation), LAYER)
    kernel = engine.sparsify_input(x, *args, want_mask=True)
    with monkeypatch.context() as patch:
        if device == "cpu":
            _torch_path_everywhere(patch)
        assert engine._fused_path_applies(x.to(device), args[0], args[1])
        torch_path = engine.sparsify_input(x.to(device), *args, want_mask=True)
    assert torch.equal(torch_path.keep.cpu(), kernel.keep)
    if device == "cpu":  # same torch reductions on the same values: equal to the last bit
        assert torch.equal(torch_path.values, kernel.values)
    torch.testing.assert_close(torch_path.values.cpu(), kernel.values)
    if kernel.scale is not None:
        torch.testing.assert_close(torch_path.scale.cpu(), kernel.scale)


@pytest.mark.parametrize("device", DEVICES)
def test_padding_zeros_and_infinities_on_the_torch_path(device, monkeypatch):
    """K not a multiple of M, ±0.0 ties and ±inf: the torch path keeps what the kernel keeps."""
    cases = [
        (torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8, -5, -6]]), 2, 4),
        (torch.tensor([[4.0, 3, 2, 1, -INF]]), 3, 4),
        (torch.tensor([[0.0, 0, 0, 0, 1, 3, 2]]), 2, 4),
        (torch.tensor([[-0.0, 0.0, 0.0, -0.0, -0.0, 0.0]]), 2, 4),
        (torch.tensor([[-INF, -INF, -INF, 5.0, INF, INF, INF, 0.0]]), 2, 4),
        (torch.arange(37.0).reshape(1, -1) % 5, 8, 16),
    ]
    for scores, n, m in cases:
        kernel = nm_mask(scores, n, m)
        assert torch.equal(nm_mask(scores.to(device), n, m).cpu(), kernel)
        with monkeypatch.context() as patch:
            _torch_path_everywhere(patch)
            assert torch.equal(nm_mask(scores.to(device), n, m).cpu(), kernel)
        assert torch.equal(kernel, nm_mask_reference(scores, n, m))


def kept(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask.reshape(-1)).reshape(-1).tolist()


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_tie_rule(device):
    """bf16/fp16 scores are compared in their own dtype: values equal after rounding tie, the lower index wins."""
    x = torch.tensor([[1.0, -1.002, 1.001, 0.5]], device=device)  # |-1.002| > 1.001 > 1.0 in float32
    assert kept(nm_mask(x.abs(), 1, 4)) == [1]
    assert torch.tensor(1.002).bfloat16() == torch.tensor(1.0).bfloat16()  # all three round to 1.0 in bf16
    assert kept(nm_mask(x.abs().bfloat16(), 1, 4)) == [0]
    assert kept(nm_mask(x.abs().bfloat16(), 2, 4)) == [0, 1]
    pruned, _, keep = torch_selection.prune_rows_by_magnitude(x.bfloat16(), 1, 4, with_mask=True)
    assert kept(keep) == [0] and pruned.dtype == torch.bfloat16
    fp16 = torch.tensor([[1.0, 1.0004, 0.5, 0.25]], device=device)  # fp16 spacing at 1 is 2^-10
    assert kept(nm_mask(fp16, 1, 4)) == [1] and kept(nm_mask(fp16.half(), 1, 4)) == [0]
    # the median shift too is taken in bf16: η = lower median of the bf16 row, x − η rounded to bf16
    row = torch.tensor([[0.3, 1.001, 1.0, 0.2, 2.0, -1.0, 0.7, 0.1]], device=device).bfloat16()
    pruned, eta, keep = torch_selection.prune_rows_by_magnitude(row, 2, 4, "median", with_mask=True)
    assert eta.dtype == torch.bfloat16 and eta.item() == row.median().item()
    assert torch.equal(keep, nm_mask((row - eta[:, None]).abs(), 2, 4))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_other_dtypes_equal_the_reference(device, dtype, data):
    x, n, m = data.draw(rows(dtype=dtype))
    assume(bool(torch.isfinite(x.median(dim=-1).values).all()))
    scores = x.abs().to(device)
    assert torch.equal(nm_mask(scores, n, m).cpu(), nm_mask_reference(x.abs(), n, m))
    args = (parse_pattern(f"{n}:{m}"), get_criterion("magnitude"), parse_mitigation("median-shift"), LAYER)
    fused = engine.sparsify_input(x.to(device), *args, want_mask=True)
    centered = x - x.median(dim=-1, keepdim=True).values
    assert torch.equal(fused.keep.cpu(), nm_mask_reference(centered.abs(), n, m))
    assert fused.values.dtype == dtype


@pytest.mark.parametrize("device", DEVICES)
def test_nan_is_rejected_on_the_torch_path(device):
    x = torch.randn(2, 16, device=device, dtype=torch.bfloat16)
    x[1, 5] = float("nan")
    with pytest.raises(ValueError, match="1 NaN score"):
        nm_mask(x, 2, 4)
    with pytest.raises(ValueError, match="NaN in the linear input"):
        engine.sparsify_input(x, parse_pattern("2:4"), get_criterion("magnitude"), parse_mitigation("none"), LAYER)
