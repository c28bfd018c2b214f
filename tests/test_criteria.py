"""Selection criteria on tiny hand-computed tensors, the registry, and causality."""

import math

import numpy as np
import pytest
import torch

from nmsim.errors import NmsimError
from nmsim.patterns import Pattern
from nmsim.sparsify.criteria import CRITERIA, LayerContext, get_criterion, register_criterion
from nmsim.sparsify.linear import sparsify_input
from nmsim.sparsify.mitigations import Mitigation


def score(name: str, x: torch.Tensor, layer: LayerContext | None = None) -> torch.Tensor:
    layer = layer if layer is not None else LayerContext("layer", torch.ones(1, x.shape[-1], dtype=x.dtype))
    return get_criterion(name).score(x, layer)


def test_builtin_criteria_are_registered_with_their_flags():
    assert {"magnitude", "amber", "wina", "clact", "clact-causal"} <= set(CRITERIA)
    flags = {name: (c.uses_layer, c.needs_calibration, c.looks_across_tokens) for name, c in CRITERIA.items()}
    assert flags["magnitude"] == (False, False, False)
    assert flags["amber"] == (True, False, False)
    assert flags["wina"] == (True, False, False)
    assert flags["clact"] == (False, False, True)
    assert flags["clact-causal"] == (True, True, False)
    assert get_criterion("magnitude").description == "|x|: keep the largest activations."


def test_magnitude_is_absolute_value():
    x = torch.tensor([[1.0, -2.0, 0.0], [-3.0, 4.0, -0.5]])
    assert torch.equal(score("magnitude", x), torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 0.5]]))


def test_wina_weights_by_column_l2_norm():
    weight = torch.tensor([[3.0, 0.0, 1.0], [4.0, 1.0, -1.0]])  # [O=2, K=3], column norms 5, 1, sqrt(2)
    layer = LayerContext("proj", weight)
    assert torch.allclose(layer.column_l2, torch.tensor([5.0, 1.0, math.sqrt(2.0)]))
    x = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.5, -1.0]])
    expected = torch.tensor([[5.0, 2.0, 3 * math.sqrt(2.0)], [0.0, 0.5, math.sqrt(2.0)]])
    assert torch.allclose(score("wina", x, layer), expected)
    assert torch.equal(layer.row_sum, torch.tensor([4.0, 4.0]))


def test_wina_changes_the_choice_against_magnitude():
    weight = torch.tensor([[10.0, 1.0, 1.0, 0.1]])
    layer = LayerContext("proj", weight)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    pruned_magnitude, *_ = sparsify_input(x, Pattern.nm(2, 4), get_criterion("magnitude"), Mitigation(), layer)
    pruned_wina, *_ = sparsify_input(x, Pattern.nm(2, 4), get_criterion("wina"), Mitigation(), layer)
    assert torch.equal(pruned_magnitude, torch.tensor([[0.0, 0.0, 3.0, 4.0]]))
    assert torch.equal(pruned_wina, torch.tensor([[1.0, 0.0, 3.0, 0.0]]))  # scores 10, 2, 3, 0.4


def test_clact_uses_batch_column_norms_and_token_norms():
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    # column norms over tokens: 3, sqrt(20); token norms: 5, 2
    expected = torch.tensor([[3 * 3 / 5, 4 * math.sqrt(20) / 5], [0.0, 2 * math.sqrt(20) / 2]])
    assert torch.allclose(score("clact", x), expected)


def test_clact_zero_token_scores_zero_not_nan():
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    scores = score("clact", x)
    assert torch.equal(scores[0], torch.zeros(2))
    assert torch.allclose(scores[1], torch.tensor([1.0, 1.0]) * 1.0 / math.sqrt(2.0))


def test_clact_causal_uses_calibrated_column_rms():
    layer = LayerContext("proj", torch.ones(3, 2), {"column_rms": torch.tensor([2.0, 0.5])})
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    expected = torch.tensor([[3 * 2 / 5, 4 * 0.5 / 5], [0.0, 2 * 0.5 / 2]])
    assert torch.allclose(score("clact-causal", x, layer), expected)


@pytest.mark.parametrize("stats", [None, {}, {"median_mean": torch.tensor(0.0)}])
def test_clact_causal_without_statistics_is_a_clear_error(stats):
    layer = LayerContext("model.layers.0.mlp.down_proj", torch.ones(3, 2), stats)
    with pytest.raises(NmsimError) as info:
        score("clact-causal", torch.ones(2, 2), layer)
    assert "model.layers.0.mlp.down_proj" in str(info.value)
    assert "'column_rms'" in str(info.value)


def test_causality_of_clact_causal_but_not_clact():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    layer = LayerContext("proj", torch.randn(4, 8, generator=gen), {"column_rms": torch.rand(8, generator=gen) + 0.1})
    changed = x.clone()
    changed[[0, 1, 3, 4]] = torch.randn(4, 8, generator=gen, dtype=torch.float64) * 10  # all tokens but t=2
    causal_before = score("clact-causal", x, layer)[2]
    causal_after = score("clact-causal", changed, layer)[2]
    assert torch.equal(causal_before, causal_after)
    batch_before = score("clact", x, layer)[2]
    batch_after = score("clact", changed, layer)[2]
    assert not torch.allclose(batch_before, batch_after)
    # The same token alone gives the same causal scores as inside a batch.
    assert torch.equal(score("clact-causal", x[2:3], layer)[0], causal_before)


def amber_weight(outlier: float) -> torch.Tensor:
    """[O=20, K=10] weights from a small grid with the minimum -2 repeated, plus one large entry at (0, 3)."""
    values = torch.tensor([-2.0, -1.5, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0])
    weight = values[torch.randint(len(values), (20, 10), generator=torch.Generator().manual_seed(3))]
    weight[0, 3] = outlier
    return weight


def test_amber_factor_definition_drops_outliers_and_normalises_by_min():
    weight = amber_weight(1000.0)
    factor = LayerContext("proj", weight).robust_column_factor
    # By hand (float64): the lone 1000 is above the 99.5 % quantile (199th of 200 values) and is dropped; the
    # bottom value -2 is repeated, so no value lies below the 0.5 % quantile. Standardise with the kept
    # values' mean and std, give the dropped weight 0, take column norms, divide by the smallest.
    assert int((weight == -2.0).sum()) >= 2 and weight[0, 3] == 1000.0
    w = weight.double().numpy()
    inside = np.ones_like(w, dtype=bool)
    inside[0, 3] = False
    kept = w[inside]
    standardized = np.where(inside, (w - kept.mean()) / kept.std(ddof=1), 0.0)
    norms = np.linalg.norm(standardized, axis=0)
    expected = norms / norms.min()
    assert factor.shape == (10,)
    assert np.allclose(factor.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert factor.min().item() == 1.0
    assert factor[3].item() < 1.5  # the outlier column is not inflated ...
    plain = LayerContext("proj", weight).column_l2
    assert (plain[3] / plain.min()).item() > 100  # ... while its plain column norm is dominated by it


def test_amber_factor_ignores_outlier_size_and_affine_rescaling():
    base = LayerContext("proj", amber_weight(1000.0)).robust_column_factor
    assert torch.allclose(LayerContext("proj", amber_weight(1e6)).robust_column_factor, base, rtol=1e-6)
    assert torch.allclose(LayerContext("proj", amber_weight(1000.0) * 7.0).robust_column_factor, base, rtol=1e-5)
    shifted = LayerContext("proj", amber_weight(1000.0) + 3.0).robust_column_factor
    assert torch.allclose(shifted, base, rtol=1e-5)


def test_amber_drops_the_top_half_percent_of_a_large_weight():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(100, 10, generator=gen)  # 1000 values: the 5 largest lie above the 99.5 % quantile
    spiked = weight.clone()
    top = weight.reshape(-1).argsort(descending=True)[:5]
    spiked.reshape(-1)[top] = torch.tensor([50.0, 60.0, 70.0, 80.0, 90.0])  # make them huge
    before = LayerContext("proj", weight).robust_column_factor
    after = LayerContext("proj", spiked).robust_column_factor
    assert torch.allclose(before, after, rtol=1e-6)


def test_amber_score_is_magnitude_times_factor():
    weight = amber_weight(1000.0)
    layer = LayerContext("proj", weight)
    x = torch.linspace(-3, 3, 20).reshape(2, 10)
    assert torch.allclose(score("amber", x, layer), x.abs() * layer.robust_column_factor)


@pytest.fixture
def restore_criteria():
    saved = dict(CRITERIA)
    yield
    CRITERIA.clear()
    CRITERIA.update(saved)


def test_register_criterion_is_usable_through_sparsify_input(restore_criteria):
    @register_criterion("test-last-wins", uses_layer=False)
    def last_wins(x, layer):
        """Prefer later channels (test only).

        More text that is not part of the description.
        """
        return torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x)

    criterion = get_criterion("test-last-wins")
    assert criterion.score is last_wins
    assert (criterion.uses_layer, criterion.needs_calibration, criterion.looks_across_tokens) == (False, False, False)
    assert criterion.description == "Prefer later channels (test only)."
    x = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]])
    pruned, shift, *_ = sparsify_input(x, Pattern.nm(2, 4), criterion, Mitigation(), LayerContext("p", torch.ones(1, 8)))
    assert shift is None
    assert torch.equal(pruned, torch.tensor([[0.0, 0.0, 7.0, 6.0, 0.0, 0.0, 3.0, 2.0]]))


def test_register_criterion_defaults_and_duplicates(restore_criteria):
    @register_criterion("test-default-flags")
    def no_doc(x, layer):
        return x

    assert get_criterion("test-default-flags").uses_layer is True
    assert get_criterion("test-default-flags").description == ""
    with pytest.raises(ValueError, match="already registered"):
        register_criterion("test-default-flags")(lambda x, layer: -x)
    with pytest.raises(ValueError, match="'magnitude' is already registered"):
        register_criterion("magnitude")(lambda x, layer: -x)
    assert get_criterion("magnitude").score(torch.tensor([-2.0]), None).item() == 2.0  # not replaced
    assert get_criterion("test-default-flags").score is no_doc


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(NmsimError) as info:
        get_criterion("nope")
    message = str(info.value)
    assert "unknown criterion 'nope'" in message
    for name in ("magnitude", "amber", "wina", "clact", "clact-causal"):
        assert name in message


def test_amber_drops_outliers_symmetrically():
    """A large negative outlier is dropped exactly like a large positive one."""
    w = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    factors = []
    for outlier in (1000.0, -1000.0):
        w_out = w.clone()
        w_out[0, 3] = outlier
        factors.append(LayerContext("l", w_out).robust_column_factor[3].item())
    assert factors[0] < 1.5 and factors[1] < 1.5
    assert LayerContext("l", torch.full((4, 3), 2.0)).robust_column_factor.tolist() == [1.0, 1.0, 1.0]
