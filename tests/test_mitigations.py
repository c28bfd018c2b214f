"""Mitigations: parsing, the median and variance formulas, and sparsify_input putting them together."""

import math

import pytest
import torch

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.sparsify.masks import nm_mask
from nmsim.sparsify.criteria import LayerContext, get_criterion
from nmsim.sparsify.linear import sparsify_input
from nmsim.sparsify.mitigations import MITIGATION_NAMES, Mitigation, median_shift, parse_mitigation, variance_scale

MAGNITUDE = get_criterion("magnitude")

EXPECTED = {
    "none": Mitigation("none", False),
    "median-shift": Mitigation("median", False),
    "static-shift": Mitigation("static", False),
    "variance": Mitigation("none", True),
    "median-shift+variance": Mitigation("median", True),
    "static-shift+variance": Mitigation("static", True),
    "learnable": Mitigation("none", False, True),
    "median-shift+learnable": Mitigation("median", False, True),
    "variance+learnable": Mitigation("none", True, True),
}


def test_mitigation_names_are_the_expected_ones():
    assert set(MITIGATION_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", MITIGATION_NAMES)
def test_parse_every_name_and_round_trip(name):
    mitigation = parse_mitigation(name)
    assert mitigation == EXPECTED[name]
    assert str(mitigation) == name
    assert parse_mitigation(str(mitigation)) == mitigation
    assert mitigation.needs_calibration == (mitigation.shift == "static")


def test_parse_is_order_and_case_insensitive():
    assert parse_mitigation("variance+median-shift") == Mitigation("median", True)
    assert parse_mitigation(" Variance + Static-Shift ") == Mitigation("static", True)
    assert str(parse_mitigation("variance+median-shift")) == "median-shift+variance"
    assert parse_mitigation("MEDIAN-SHIFT") == Mitigation("median", False)
    assert str(Mitigation()) == "none"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("median-shift+static-shift", "unknown mitigation 'median-shift+static-shift'"),
        ("foo", "unknown mitigation 'foo'"),
        ("variance+variance", "unknown mitigation"),
        ("none+variance", "unknown mitigation"),
        ("", "empty mitigation"),
        ("+", "empty mitigation"),
    ],
)
def test_parse_rejections(text, fragment):
    with pytest.raises(NmsimError) as info:
        parse_mitigation(text)
    message = str(info.value)
    assert fragment in message
    for name in MITIGATION_NAMES:
        assert name in message  # the choices are listed


def test_median_shift_is_the_lower_median():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 3.0, 2.0], [-1.0, 10.0, 0.0, 0.0]])
    assert torch.equal(median_shift(x), torch.tensor([[2.0], [2.0], [0.0]]))
    assert torch.equal(median_shift(torch.tensor([[5.0, -1.0, 3.0]])), torch.tensor([[3.0]]))
    assert median_shift(torch.zeros(7, 6)).shape == (7, 1)


def test_variance_scale_hand_example():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    pruned = torch.tensor([[0.0, 0.0, 3.0, 4.0]], dtype=torch.float64)
    # Var(x) = 1.25; pruned mean 1.75, Var = (1.75² + 1.75² + 1.25² + 2.25²) / 4 = 3.1875 (population variances)
    v = variance_scale(x, pruned)
    assert v.shape == (1, 1)
    assert v.item() == pytest.approx(math.sqrt(1.25 / 3.1875), rel=1e-12)


def test_variance_scale_is_one_where_pruned_variance_is_zero():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0]])
    pruned = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    v = variance_scale(x, pruned)
    assert torch.all(torch.isfinite(v))
    assert v[0].item() == 1.0 and v[1].item() == 1.0
    assert v[2].item() == pytest.approx(math.sqrt(1.0 / 0.25))


def test_sparsify_input_median_shift_hand_example():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0, -6.0, 0.0, 5.0]])
    layer = LayerContext("proj", torch.ones(3, 8))
    pruned, shift, *_ = sparsify_input(x, Pattern.nm(2, 4), MAGNITUDE, parse_mitigation("median-shift"), layer)
    # sorted: -6 0 1 2 3 4 5 10 -> lower median 2; x - 2 = [-1 0 1 2 | 8 -8 -2 3]
    # group 1 magnitudes 1 0 1 2: keep 2 and the first tied 1 (index 0); group 2: keep 8 and -8
    assert torch.equal(shift, torch.tensor([[2.0]]))
    assert torch.equal(pruned, torch.tensor([[-1.0, 0.0, 0.0, 2.0, 8.0, -8.0, 0.0, 0.0]]))


def random_layer(tokens=6, k=16, out=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=gen, dtype=torch.float64) * 2 + 0.7
    weight = torch.randn(out, k, generator=gen, dtype=torch.float64)
    return x, weight, LayerContext("proj", weight)


@pytest.mark.parametrize("pattern", ["2:4", "8:16", "1:4"])
def test_median_shift_output_is_sparse_and_equals_the_dense_definition(pattern):
    x, weight, layer = random_layer()
    p = parse_pattern(pattern)
    pruned, shift, *_ = sparsify_input(x, p, MAGNITUDE, parse_mitigation("median-shift"), layer)
    assert shift.shape == (6, 1)
    assert torch.equal(shift, x.sort(dim=-1).values[:, 7:8])  # lower median of 16 values: the 8th smallest
    # The GEMM input is exactly N:M sparse: at most N non-zeros in every group of M.
    assert torch.all((pruned != 0).reshape(6, -1, p.m).sum(-1) <= p.n)
    assert torch.equal(pruned, torch.where(nm_mask((x - shift).abs(), p.n, p.m), x - shift, 0.0))
    sparse_gemm = pruned @ weight.T + shift * layer.row_sum
    dense_definition = (pruned + shift) @ weight.T
    assert torch.allclose(sparse_gemm, dense_definition, rtol=1e-12, atol=1e-12)
    # ... and it differs from plain pruning of the unshifted input.
    plain, _, *_ = sparsify_input(x, p, MAGNITUDE, Mitigation(), layer)
    assert not torch.allclose(sparse_gemm, plain @ weight.T)


@pytest.mark.parametrize("mitigation", ["variance", "median-shift+variance"])
def test_variance_correction_restores_per_token_variance(mitigation):
    x, _, layer = random_layer(seed=1)
    pruned, shift, *_ = sparsify_input(x, Pattern.nm(2, 4), MAGNITUDE, parse_mitigation(mitigation), layer)
    dense_var = x.var(dim=-1, correction=0)
    assert torch.allclose(pruned.var(dim=-1, correction=0), dense_var, rtol=1e-10)
    centered = x - shift if shift is not None else x
    plain = torch.where(nm_mask(centered.abs(), 2, 4), centered, 0.0)
    assert torch.allclose(pruned, plain * variance_scale(centered, plain))
    assert not torch.allclose(plain.var(dim=-1, correction=0), dense_var)  # without it the variance drops
    assert torch.all((pruned != 0).reshape(6, -1, 4).sum(-1) <= 2)


def test_static_shift_uses_the_calibrated_median_mean():
    layer = LayerContext("proj", torch.ones(2, 4, dtype=torch.float64), {"median_mean": torch.tensor(0.5)})
    x = torch.tensor([[1.0, 0.5, 2.0, -1.0]], dtype=torch.float64)
    pruned, shift, *_ = sparsify_input(x, Pattern.nm(2, 4), MAGNITUDE, parse_mitigation("static-shift"), layer)
    # x - 0.5 = [0.5, 0, 1.5, -1.5]: keep 1.5 and -1.5
    assert shift.dim() == 0 and shift.dtype == torch.float64 and shift.item() == 0.5
    assert torch.equal(pruned, torch.tensor([[0.0, 0.0, 1.5, -1.5]], dtype=torch.float64))
    # The median of this token is 0.5 as well, but a different token keeps the same static shift.
    other = torch.tensor([[10.0, 11.0, 12.0, 13.0]], dtype=torch.float64)
    _, other_shift, *_ = sparsify_input(other, Pattern.nm(2, 4), MAGNITUDE, parse_mitigation("static-shift"), layer)
    assert other_shift.item() == 0.5


def test_static_shift_without_statistics_is_a_clear_error():
    layer = LayerContext("model.layers.3.self_attn.o_proj", torch.ones(2, 4))
    with pytest.raises(NmsimError, match="median_mean"):
        sparsify_input(torch.ones(1, 4), Pattern.nm(2, 4), MAGNITUDE, parse_mitigation("static-shift"), layer)


def test_dense_pattern_prunes_nothing():
    x, _, layer = random_layer(seed=2)
    pruned, shift, *_ = sparsify_input(x, Pattern.dense(), MAGNITUDE, Mitigation(), layer)
    assert shift is None
    assert torch.equal(pruned, x)
    pruned, shift, *_ = sparsify_input(x, Pattern.dense(), MAGNITUDE, parse_mitigation("variance"), layer)
    assert torch.equal(pruned, x)  # nothing pruned, so the variance scale is exactly 1
    pruned, shift, *_ = sparsify_input(x, parse_pattern("4:4"), MAGNITUDE, Mitigation(), layer)
    assert torch.equal(pruned, x)


def test_unstructured_pattern_through_sparsify_input():
    x = torch.tensor([[0.1, -5.0, 2.0, 0.5, 3.0, -0.2]])
    layer = LayerContext("proj", torch.ones(1, 6))
    pruned, shift, *_ = sparsify_input(x, parse_pattern("unstructured:0.5"), MAGNITUDE, Mitigation(), layer)
    assert shift is None
    assert torch.equal(pruned, torch.tensor([[0.0, -5.0, 2.0, 0.0, 3.0, 0.0]]))
