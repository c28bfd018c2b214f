"""The learnable scale + shift: exact folding, the differentiable path, block training, persistence and resume."""

import pytest
import torch

from nmsim.errors import NmsimError
from nmsim.patterns import parse_pattern
from nmsim.sparsify import learnable
from nmsim.sparsify.linear import SparsityConfig, sparsified
from nmsim.sparsify.learnable import LearnRecipe, load_learned, train_scale_shift
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.targets import find_linear_sites
from tests.test_pruned_linear import IDS, tiny_llama


def _config(pattern="8:16", criterion="magnitude", mitigation="learnable"):
    return SparsityConfig(parse_pattern(pattern), criterion, parse_mitigation(mitigation))


def _random_learned(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {site.name: (0.2 * torch.randn(site.module.weight.shape[0], generator=generator),
                        0.1 * torch.randn(site.module.weight.shape[0], generator=generator))
            for site in find_linear_sites(model)}


@pytest.mark.parametrize("criterion, mitigation", [
    ("magnitude", "learnable"), ("magnitude", "median-shift+learnable"), ("magnitude", "variance+learnable"),
    ("amber", "median-shift+learnable"), ("wina", "learnable"),
])
def test_folded_equals_unfolded(criterion, mitigation):
    model = tiny_llama()
    learned = _random_learned(model)
    config = _config("2:4", criterion, mitigation)
    with torch.no_grad():
        with sparsified(model, config, learned=learned, fold=False):
            unfolded = model(IDS).logits
        with sparsified(model, config, learned=learned, fold=True):
            folded = model(IDS).logits
        with sparsified(model, config, learned={}):
            plain = model(IDS).logits
    assert torch.allclose(folded, unfolded, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(folded, plain, atol=1e-3)  # the parameters do act


def test_zero_parameters_change_nothing_and_learnable_needs_parameters():
    model = tiny_llama()
    zeros = {name: (torch.zeros_like(d), torch.zeros_like(b)) for name, (d, b) in _random_learned(model).items()}
    with torch.no_grad():
        with sparsified(model, _config(mitigation="none")):
            plain = model(IDS).logits
        with sparsified(model, _config(), learned=zeros):
            learned = model(IDS).logits
    assert torch.equal(plain, learned)
    with pytest.raises(NmsimError, match="needs learned parameters"):
        with sparsified(model, _config()):
            pass


def test_differentiable_path_has_the_same_forward_and_reaches_earlier_layers():
    model = tiny_llama()
    learned = {name: (d.requires_grad_(), b.requires_grad_()) for name, (d, b) in _random_learned(model).items()}
    config = _config("2:4", "magnitude", "median-shift+variance+learnable")
    with torch.no_grad(), sparsified(model, config, learned=learned):
        reference = model(IDS).logits
    with sparsified(model, config, learned=learned, differentiable=True):
        logits = model(IDS).logits
        logits.square().mean().backward()
    assert torch.allclose(logits, reference, atol=1e-5)
    first_q = learned["model.layers.0.self_attn.q_proj"][0]
    assert first_q.grad is not None and first_q.grad.abs().sum() > 0


def _tiny_windows(count, seqlen=16, seed=3):
    return torch.randint(0, 96, (count, seqlen), generator=torch.Generator().manual_seed(seed))


def test_block_training_persists_parameters_and_reports(tmp_path):
    # A random tiny model has almost no pruning error to remove; the real-model test below checks the MSE drop.
    model = tiny_llama()
    recipe = LearnRecipe(windows=6, seqlen=16, steps=40, lr=3e-3, heldout_windows=2)
    path = tmp_path / "learned.safetensors"
    learned, reports = train_scale_shift(model, _config("2:4"), recipe, _tiny_windows(8), path)
    assert [r.block for r in reports] == [0, 1]
    assert all(r.heldout_mse_pruned > 0 and r.heldout_mse_learned > 0 for r in reports)
    assert all(d.abs().sum() > 0 and b.abs().sum() > 0 for d, b in learned.values())  # they moved from zero
    assert set(learned) == {site.name for site in find_linear_sites(model)}
    loaded, meta = load_learned(path)
    assert meta["recipe"]["steps"] == 40 and meta["method"].startswith("2:4 magnitude learnable")
    for name, (d, b) in learned.items():
        assert torch.equal(loaded[name][0], d) and torch.equal(loaded[name][1], b)
    assert not path.with_name(path.name + ".partial").exists()
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was


def test_interrupted_training_resumes_at_the_next_block(tmp_path, monkeypatch):
    recipe = LearnRecipe(windows=4, seqlen=16, steps=10, lr=3e-3, heldout_windows=1)
    windows = _tiny_windows(5)
    full, _ = train_scale_shift(tiny_llama(), _config("2:4"), recipe, windows, tmp_path / "full.safetensors")

    path = tmp_path / "resumed.safetensors"
    calls = []
    original = learnable._train_block

    def failing_second_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(learnable, "_train_block", failing_second_block)
    with pytest.raises(KeyboardInterrupt):
        train_scale_shift(tiny_llama(), _config("2:4"), recipe, windows, path)
    assert path.with_name(path.name + ".partial").exists() and not path.exists()
    monkeypatch.setattr(learnable, "_train_block", original)
    trained = []
    monkeypatch.setattr(learnable, "_train_block", lambda *a, **k: (trained.append(1), original(*a, **k)))
    resumed, reports = train_scale_shift(tiny_llama(), _config("2:4"), recipe, windows, path)
    assert len(trained) == 1 and len(reports) == 2  # only the second block was trained again
    for name, (d, b) in full.items():
        assert torch.allclose(resumed[name][0], d) and torch.allclose(resumed[name][1], b)


def test_a_partial_file_of_another_method_is_not_resumed(tmp_path):
    recipe = LearnRecipe(windows=2, seqlen=16, steps=2, heldout_windows=0)
    path = tmp_path / "x.safetensors"
    train_scale_shift(tiny_llama(), _config("2:4"), recipe, _tiny_windows(2), path, max_blocks=1)
    path.rename(path.with_name(path.name + ".partial"))
    with pytest.raises(NmsimError, match="another method or recipe"):
        train_scale_shift(tiny_llama(), _config("8:16"), recipe, _tiny_windows(2), path)


def test_schedule_warms_up_then_decays_linearly():
    factor = learnable._schedule(100, 0.03)
    assert [round(factor(s), 4) for s in (0, 1, 2)] == [0.3333, 0.6667, 1.0]
    assert factor(3) == 1.0 and factor(51) == pytest.approx(49 / 97) and factor(99) == pytest.approx(1 / 97)


@pytest.mark.slow
def test_learnable_lowers_block_mse_on_the_real_model(smollm, tmp_path):
    from nmsim.llm.data import calibration_windows, load_split

    recipe = LearnRecipe(windows=4, seqlen=128, steps=24, lr=1e-3, heldout_windows=2)
    windows = calibration_windows(smollm.token_ids(load_split("calibration")), 6, 128, seed=0)
    _, reports = train_scale_shift(smollm.model, _config("8:16"), recipe, windows, tmp_path / "l.safetensors",
                                   max_blocks=4)
    assert len(reports) == 4
    assert all(r.heldout_mse_learned < r.heldout_mse_pruned for r in reports)


def test_gemma_blocks_train_too(tmp_path):
    from tests.test_pruned_linear import tiny_gemma

    recipe = LearnRecipe(windows=2, seqlen=16, steps=4, lr=3e-3, heldout_windows=1)
    learned, reports = train_scale_shift(tiny_gemma(), _config("2:4"), recipe, _tiny_windows(3), tmp_path / "g")
    assert len(reports) == 2 and len(learned) == 14
