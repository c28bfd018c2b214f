"""Fidelity to the dense model (KL divergence, top-1 and greedy agreement), the cached dense reference, and the paired
bootstrap of Δ perplexity."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import nmsim.accuracy.fidelity as fidelity
from nmsim.accuracy.bootstrap import paired_delta
from nmsim.accuracy.fidelity import (FidelityScorer, agreement_lengths, dense_reference, greedy_generate,
                                     kl_and_top1)
from nmsim.errors import NmsimError
from nmsim.llm.models import LoadedModel
from nmsim.llm.perplexity import perplexity


def test_kl_of_a_distribution_with_itself_is_zero_and_top1_agrees():
    logits = 3 * torch.randn(64, 2000, generator=torch.Generator().manual_seed(0))  # [T, V]
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.float16, 1e-4)):  # float16: the cached encoding
        kl, same = kl_and_top1(torch.log_softmax(logits, dim=-1).to(dtype), logits.argmax(dim=-1), logits + 5.0)
        assert kl.dtype == torch.float64 and kl.shape == (64,)
        assert kl.abs().max() < tolerance
        assert same.all()


def test_kl_matches_a_hand_computed_example():
    dense = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]).log()
    pruned = torch.tensor([[0.25, 0.5, 0.25], [0.2, 0.3, 0.5]]).log() + 1.0  # logits: any shift
    kl, same = kl_and_top1(dense, dense.argmax(dim=-1), pruned)
    # 0.5 ln(0.5/0.25) + 0.25 ln(0.25/0.5) + 0.25 ln 1 = 0.25 ln 2
    assert kl.tolist() == pytest.approx([0.25 * math.log(2), 0.0], abs=1e-7)
    assert same.tolist() == [False, True]
    zero = torch.tensor([[0.0, 1.0]]).log()  # p = 0 contributes nothing (0 ln 0 = 0), whatever q is there
    kl, _ = kl_and_top1(zero, torch.tensor([1]), torch.tensor([[-50.0, 0.0]]))
    assert kl.item() == pytest.approx(math.log1p(math.exp(-50.0)), abs=1e-7)


class _Counter(torch.nn.Module):
    """A toy causal LM: the next token is the last one + 1 (mod V); from position ``diverge_at`` on, + 2."""

    def __init__(self, vocab=50, diverge_at=None):
        super().__init__()
        self.vocab, self.diverge_at = vocab, diverge_at

    def forward(self, input_ids, use_cache=True, cache=None):
        past = cache or 0
        positions = past + torch.arange(input_ids.shape[1])
        step = torch.where(positions >= (self.diverge_at or 10**9), 2, 1)
        logits = torch.nn.functional.one_hot((input_ids + step) % self.vocab, self.vocab).float()
        return SimpleNamespace(logits=logits, cache=past + input_ids.shape[1])


def test_greedy_agreement_counts_the_tokens_before_the_first_divergence():
    prompts = torch.tensor([[1, 2, 3, 4], [7, 8, 9, 10]])
    dense = greedy_generate(_Counter(), prompts, 6)
    assert dense.tolist() == [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    assert agreement_lengths(dense, dense).tolist() == [6, 6]
    # the pruned toy goes its own way from position 6: the tokens it predicts at positions 3, 4 and 5 agree
    pruned = greedy_generate(_Counter(diverge_at=6), prompts, 6, reference=dense)
    assert pruned.shape[1] == 4  # stopped once every prompt had diverged
    assert agreement_lengths(dense, pruned).tolist() == [3, 3]
    assert agreement_lengths(dense, torch.tensor([[5, 6, 0, 8, 9, 10], [0] * 6])).tolist() == [2, 0]
    with pytest.raises(NmsimError, match="stopped after 2 of 6"):
        agreement_lengths(dense, dense[:, :2])


def _tiny_lm() -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LoadedModel("tiny", "test: random Llama", LlamaForCausalLM(config).eval(), None, False)


def test_the_dense_reference_is_built_once_resumes_and_scores_dense_as_dense(tmp_path, monkeypatch):
    lm = _tiny_lm()
    windows = torch.randint(0, 96, (3, 24), generator=torch.Generator().manual_seed(1))  # [W, S]
    prompts = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(2))  # [P, L]
    monkeypatch.setattr(fidelity, "reference_root", lambda: tmp_path / "clean")
    clean = dense_reference(lm, windows, prompts, 5)

    monkeypatch.setattr(fidelity, "reference_root", lambda: tmp_path / "resumed")
    forward, calls = lm.model.forward, []

    def interrupt_on_second_window(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    monkeypatch.setattr(lm.model, "forward", interrupt_on_second_window)
    with pytest.raises(KeyboardInterrupt):
        dense_reference(lm, windows, prompts, 5)
    assert [p.name for p in (tmp_path / "resumed").iterdir() if p.is_dir()] == [clean.directory.name + ".partial"]
    monkeypatch.setattr(lm.model, "forward", forward)
    resumed = dense_reference(lm, windows, prompts, 5)
    assert resumed.directory.name == clean.directory.name and resumed.directory.is_dir()
    assert np.array_equal(resumed.log_probs, clean.log_probs) and np.array_equal(resumed.top1, clean.top1)
    assert resumed.log_probs.shape == (3, 23, 96) and resumed.log_probs.dtype == np.float16

    built = []
    monkeypatch.setattr(fidelity, "_build", lambda *a: built.append(1))
    again = dense_reference(lm, windows, prompts, 5)  # from the cache
    assert built == [] and torch.equal(again.continuations, greedy_generate(lm.model, prompts, 5))

    scorer = FidelityScorer(again)
    result = perplexity(lm.model, windows, on_logits=scorer.add)
    assert result.window_nll.shape == (3,) and result.nll_sum == pytest.approx(result.window_nll.sum())
    assert np.abs(scorer.kl_sum).max() < 1e-4 and scorer.top1_matches.tolist() == [23, 23, 23]
    assert scorer.greedy(lm.model).tolist() == [5, 5]


def test_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """Windows' mean NLLs ~ N(3.3, 0.2²) for the base row; the other row adds N(0.1, 0.05²) per window, so the true
    Δ perplexity (equal-length windows, the perplexity of the expected mean NLL) is e^3.4 − e^3.3."""
    rng = np.random.default_rng(7)
    tokens = np.full(64, 511)
    truth = math.exp(3.4) - math.exp(3.3)
    covered = 0
    for _ in range(100):
        base = rng.normal(3.3, 0.2, 64)
        other = base + rng.normal(0.1, 0.05, 64)
        interval = paired_delta(base * tokens, other * tokens, tokens, seed=int(rng.integers(1 << 31)))
        assert interval.low <= interval.delta_ppl <= interval.high
        covered += interval.low <= truth <= interval.high
    assert 88 <= covered <= 100, covered


def test_bootstrap_is_deterministic_for_a_seed_and_pairs_the_windows():
    rng = np.random.default_rng(3)
    tokens = np.full(20, 511)
    base = rng.normal(3.0, 0.3, 20) * tokens
    other = base + 0.02 * tokens  # the same windows, uniformly worse: pairing leaves almost no noise
    first, again = paired_delta(base, other, tokens, seed=5), paired_delta(base, other, tokens, seed=5)
    assert first == again and first != paired_delta(base, other, tokens, seed=6)
    assert first.beyond_noise and 0 < first.low <= first.delta_ppl <= first.high
    assert first.delta_pct == pytest.approx(100 * (math.exp(0.02) - 1))
    unpaired = paired_delta(base, rng.permutation(other), tokens, seed=5)  # same totals, pairing broken
    assert unpaired.high - unpaired.low > 10 * (first.high - first.low)
    single = paired_delta(base[:1], other[:1], tokens[:1])
    assert math.isnan(single.low) and not single.beyond_noise
