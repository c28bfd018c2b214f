"""Weight-pruning baselines: Wanda against a hand-computed example, magnitude per layer, restoration."""

import pytest
import torch

from nmsim.errors import NmsimError
from nmsim.patterns import parse_pattern
from nmsim.sparsify.weight_pruning import WeightPruningConfig, weight_mask, weight_pruned
from tests.test_pruned_linear import IDS, tiny_llama


def test_wanda_matches_a_hand_computed_example():
    weight = torch.tensor([[1.0, -2.0, 3.0, 0.5, 4.0, -1.0, 0.1, 2.0],
                           [0.2, 0.3, -0.4, 0.1, 1.0, 1.0, -1.0, 1.0]])
    norms = torch.tensor([4.0, 1.0, 0.5, 2.0, 0.1, 3.0, 10.0, 1.0])
    # scores |W|·‖X‖: row 0 = [4, 2, 1.5, 1, 0.4, 3, 1, 2]; row 1 = [0.8, 0.3, 0.2, 0.2, 0.1, 3, 10, 1]
    # 2:4 keeps the two largest of each group of four (ties go to the lower index):
    expected = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1],
                             [1, 1, 0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(weight_mask(weight, parse_pattern("2:4"), "wanda", norms), expected)
    # magnitude alone differs: row 0 keeps |W| = 2, 3 in the first group
    assert weight_mask(weight, parse_pattern("2:4"), "magnitude")[0, :4].tolist() == [False, True, True, False]


def test_unstructured_magnitude_is_per_layer_and_wanda_per_row():
    weight = torch.tensor([[5.0, 4.0, 3.0, 2.0], [0.1, 0.2, 0.3, 0.4]])
    half = parse_pattern("unstructured:0.5")
    assert weight_mask(weight, half, "magnitude").tolist() == [[True, True, True, True], [False] * 4]
    assert weight_mask(weight, half, "wanda", torch.ones(4)).tolist() == [[True, True, False, False],
                                                                         [False, False, True, True]]


@pytest.mark.parametrize("pattern", ["2:4", "8:16"])
def test_weight_pruned_keeps_n_per_group_along_k_and_restores(pattern):
    model = tiny_llama()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = WeightPruningConfig(parse_pattern(pattern), "magnitude")
    parsed = parse_pattern(pattern)
    with torch.no_grad():
        dense = model(IDS).logits
        with weight_pruned(model, config) as layers:
            assert layers == 2 * 7
            w = model.model.layers[1].mlp.down_proj.weight
            kept = (w != 0).reshape(w.shape[0], -1, parsed.m).sum(-1)
            assert torch.equal(kept, torch.full_like(kept, parsed.n))
            pruned = model(IDS).logits
        restored = model(IDS).logits
    assert not torch.allclose(pruned, dense)
    assert torch.equal(restored, dense)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_bad_weight_configs():
    with pytest.raises(NmsimError, match="unknown weight-pruning method"):
        WeightPruningConfig(parse_pattern("2:4"), "sparsegpt")
    with pytest.raises(NmsimError, match="not dense"):
        WeightPruningConfig(parse_pattern("dense"))
    with pytest.raises(NmsimError, match="calibration statistics"):
        with weight_pruned(tiny_llama(), WeightPruningConfig(parse_pattern("2:4"), "wanda")):
            pass


@pytest.mark.slow
def test_weight_and_activation_rows_share_one_evaluation_path(tmp_path, monkeypatch):
    from nmsim.accuracy import study as accuracy

    calls = []
    real = accuracy.perplexity

    def spy(model, windows, **kwargs):
        calls.append(windows)
        return real(model, windows, **kwargs)

    monkeypatch.setattr(accuracy, "perplexity", spy)
    targets = accuracy.targets_from_args(["all"], None, None, False)
    grid = accuracy.build_grid(["2:4"], ["magnitude"], ["none"], targets, ["2:4"], ["magnitude", "wanda"])
    table = accuracy.run_study(grid, accuracy.StudySettings(max_tokens=512, fidelity=False), tmp_path / "t")
    assert list(table.operand) == ["-", "activation", "weight", "weight"]
    assert list(table.criterion) == ["-", "magnitude", "magnitude", "wanda"]
    assert len(calls) == 4 and all(torch.equal(c, calls[0]) for c in calls)  # same windows, same function
    assert table.tokens_evaluated.nunique() == 1
    dense, activation, weight_magnitude, wanda = table.perplexity
    assert dense < activation and dense < wanda < weight_magnitude  # Wanda beats plain magnitude on weights
