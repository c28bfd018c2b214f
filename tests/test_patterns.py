"""Patterns: parsing every spelling, the mask rules (ties, padding, ±inf, NaN), and the compiled kernel."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nmsim import sorting_network
from nmsim.sparsify import selection_kernel
from nmsim.errors import NmsimError
from nmsim.patterns import Pattern, parse_pattern
from nmsim.sparsify.masks import keep_top_n, nm_mask, nm_mask_reference, pattern_mask, unstructured_mask

INF = float("inf")
NAN = float("nan")

# ---------------------------------------------------------------------------------------------------------
# parse_pattern
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, n, m",
    [
        ("2:4", 2, 4),
        ("8:16", 8, 16),
        ("16:32", 16, 32),
        ("1:4", 1, 4),
        ("2:8", 2, 8),
        ("4:4", 4, 4),
        (" 8:16 ", 8, 16),
        ("m4n2", 2, 4),
        ("m16n8", 8, 16),
        ("M16N8", 8, 16),
        ("m4n2_1d", 2, 4),
        ("prune 2 of 4", 2, 4),
        ("prune 1 of 4", 3, 4),
        ("prune 8 of 16", 8, 16),
        ("prune 2/4", 2, 4),
        ("prune_n=2,prune_m=4", 2, 4),
        ("prune_n=1, prune_m=4", 3, 4),
    ],
)
def test_parse_nm_spellings(text, n, m):
    pattern = parse_pattern(text)
    assert pattern == Pattern.nm(n, m)
    assert (pattern.kind, pattern.n, pattern.m) == ("nm", n, m)
    assert pattern.density == n / m
    assert str(pattern) == f"{n}:{m}"


def test_parse_dense_and_unstructured():
    dense = parse_pattern("dense")
    assert dense == Pattern.dense()
    assert dense.kind == "dense" and dense.density == 1.0 and str(dense) == "dense"
    assert parse_pattern(" DENSE ") == dense

    half = parse_pattern("unstructured:0.5")
    assert half == Pattern.unstructured(0.5)
    assert half.kind == "unstructured" and half.density == 0.5
    assert str(half) == "unstructured:0.5"

    thirty = parse_pattern("unstructured:30%")
    assert thirty.kind == "unstructured"
    assert thirty.density == pytest.approx(0.3, abs=1e-12)
    assert str(thirty) == "unstructured:0.3"

    assert parse_pattern("unstructured:1").density == 1.0
    assert str(parse_pattern("unstructured:100%")) == "unstructured:1"


@pytest.mark.parametrize("text", ["2:4", "8:16", "1:1", "dense", "unstructured:0.5", "unstructured:0.25"])
def test_str_is_canonical_and_round_trips(text):
    assert str(parse_pattern(text)) == text
    assert parse_pattern(str(parse_pattern(text))) == parse_pattern(text)


def test_canonical_forms_of_other_spellings():
    assert str(parse_pattern("m16n8")) == "8:16"
    assert str(parse_pattern("prune 8 of 16")) == "8:16"
    assert str(parse_pattern("prune_n=8,prune_m=16")) == "8:16"
    assert str(parse_pattern("unstructured:50%")) == "unstructured:0.5"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("0:4", "1 <= N <= M"),
        ("5:4", "1 <= N <= M"),
        ("8-16", "N:M"),
        ("", "unrecognised sparsity pattern"),
        ("abc", "unrecognised sparsity pattern 'abc'"),
        ("unstructured:0", "(0, 1]"),
        ("unstructured:1.5", "(0, 1]"),
        ("unstructured:150%", "(0, 1]"),
        ("prune 4 of 4", "can prune 0 to M-1"),
        ("0:0", "M must be at least 1"),
    ],
)
def test_parse_rejections_explain(text, fragment):
    with pytest.raises(NmsimError) as info:
        parse_pattern(text)
    assert fragment in str(info.value)


def test_unrecognised_spelling_lists_accepted_spellings():
    with pytest.raises(NmsimError) as info:
        parse_pattern("8-16")
    message = str(info.value)
    assert "'8-16'" in message
    for spelling in ("'N:M'", "'dense'", "unstructured:D", "m16n8", "prune 8 of 16"):
        assert spelling in message


def test_pattern_constructors_validate():
    with pytest.raises(NmsimError):
        Pattern.nm(3, 2)
    with pytest.raises(NmsimError):
        Pattern.unstructured(0.0)
    with pytest.raises(NmsimError):
        Pattern.unstructured(NAN)
    assert Pattern.unstructured(1.0).density == 1.0


# ---------------------------------------------------------------------------------------------------------
# Hand-computed masks
# ---------------------------------------------------------------------------------------------------------

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def kept(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask.reshape(-1)).reshape(-1).tolist()


@pytest.mark.parametrize("dtype", FLOATS)
def test_nm_mask_known_answer(dtype):
    x = torch.tensor([[0.1, -3, 2, 0.5, 7, -8, 0, 1]], dtype=dtype)
    assert kept(nm_mask(x.abs(), 2, 4)) == [1, 2, 4, 5]
    assert kept(nm_mask(x, 2, 4)) == [2, 3, 4, 7]  # signed scores: -3 and -8 are small
    assert kept(nm_mask(x.abs(), 1, 4)) == [1, 5]
    assert kept(nm_mask(x.abs(), 3, 4)) == [1, 2, 3, 4, 5, 7]
    assert kept(nm_mask(x.abs(), 4, 8)) == [1, 2, 4, 5]
    assert nm_mask(x, 2, 4).dtype == torch.bool and nm_mask(x, 2, 4).shape == x.shape


@pytest.mark.parametrize("dtype", FLOATS)
def test_ties_keep_lower_index(dtype):
    equal = torch.full((2, 8), 3.0, dtype=dtype)
    expected = torch.tensor([True, True, False, False] * 2).expand(2, 8)
    assert torch.equal(nm_mask(equal, 2, 4), expected)
    assert torch.equal(nm_mask_reference(equal, 2, 4), expected)
    # A tie at the threshold only: 5 is kept outright, the first of the three 1s fills the last slot.
    assert kept(nm_mask(torch.tensor([1.0, 5.0, 1.0, 1.0], dtype=dtype), 2, 4)) == [0, 1]
    assert kept(nm_mask(torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=dtype), 2, 4)) == [1, 2]
    # +0 and -0 are equal scores: lower index wins.
    assert kept(nm_mask(torch.tensor([-0.0, 0.0, 0.0, -0.0], dtype=dtype), 2, 4)) == [0, 1]
    assert kept(keep_top_n(torch.tensor([2.0, 7.0, 2.0, 2.0], dtype=dtype), 3)) == [0, 1, 2]


@pytest.mark.parametrize("dtype", FLOATS)
def test_padding_last_partial_group(dtype):
    scores = torch.arange(1, 11, dtype=dtype)  # K=10, 2:4 -> groups [1..4], [5..8], [9, 10]
    assert kept(nm_mask(scores, 2, 4)) == [2, 3, 6, 7, 8, 9]
    # Padding scores below every real value, even negative ones and -inf.
    low_tail = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8, -5, -6], dtype=dtype)
    assert kept(nm_mask(low_tail, 2, 4)) == [2, 3, 6, 7, 8, 9]
    inf_tail = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8, -INF, -INF], dtype=dtype)
    assert kept(nm_mask(inf_tail, 2, 4)) == [2, 3, 6, 7, 8, 9]
    # K=5 with 3:4: the last group has one real value and keeps it.
    five = torch.tensor([[4.0, 3, 2, 1, -INF]], dtype=dtype)
    assert kept(nm_mask(five, 3, 4)) == [0, 1, 2, 4]
    # A partial group longer than N keeps exactly N.
    seven = torch.tensor([0.0, 0, 0, 0, 1, 3, 2], dtype=dtype)
    assert kept(nm_mask(seven, 2, 4)) == [0, 1, 5, 6]
    # K smaller than M: one partial group.
    assert kept(nm_mask(torch.tensor([5.0, 9.0, 1.0], dtype=dtype), 2, 8)) == [0, 1]


@pytest.mark.parametrize("dtype", FLOATS)
def test_infinities_are_ordinary_values(dtype):
    def t(values):
        return torch.tensor(values, dtype=dtype)

    assert kept(nm_mask(t([1.0, INF, 2.0, 3.0]), 1, 4)) == [1]
    assert kept(nm_mask(t([-INF, 1.0, 2.0, 3.0]), 3, 4)) == [1, 2, 3]
    assert kept(nm_mask(t([-INF, -INF, -INF, 5.0]), 2, 4)) == [0, 3]  # -inf kept when needed, lower index
    assert kept(nm_mask(t([INF, INF, INF, 0.0]), 2, 4)) == [0, 1]
    assert kept(nm_mask(t([-INF, INF, -INF, -INF]), 3, 4)) == [0, 1, 2]
    assert kept(unstructured_mask(t([0.0, -INF, INF, 1.0]), 0.5)) == [2, 3]
    assert kept(keep_top_n(t([-INF, -INF]), 1)) == [0]


def test_unstructured_mask_known_answer():
    scores = torch.tensor([[5.0, 1, 4, 2, 3, 0]])
    assert kept(unstructured_mask(scores, 0.5)) == [0, 2, 4]
    assert kept(unstructured_mask(scores, 0.25)) == [0, 2]  # round(1.5) -> 2 (half rounds up)
    assert kept(unstructured_mask(scores, 0.01)) == [0]  # at least one
    assert kept(unstructured_mask(scores, 1.0)) == [0, 1, 2, 3, 4, 5]
    rows = torch.tensor([[1.0, 2, 3, 4], [4.0, 3, 2, 1]])
    assert torch.equal(unstructured_mask(rows, 0.5), torch.tensor([[False, False, True, True], [True, True, False, False]]))


def test_keep_top_n_limits():
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    assert torch.equal(keep_top_n(scores, 3), torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(keep_top_n(scores, 7), torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(keep_top_n(scores, 0), torch.zeros(1, 3, dtype=torch.bool))
    assert kept(keep_top_n(scores, 2)) == [0, 2]


def test_pattern_mask_dispatches():
    scores = torch.tensor([[0.1, 3, 2, 0.5, 7, 8, 0, 1]])
    assert torch.equal(pattern_mask(scores, parse_pattern("2:4")), nm_mask(scores, 2, 4))
    assert kept(pattern_mask(scores, parse_pattern("unstructured:0.25"))) == [4, 5]
    assert torch.equal(pattern_mask(scores, Pattern.dense()), torch.ones(1, 8, dtype=torch.bool))
    assert torch.equal(pattern_mask(scores, parse_pattern("4:4")), torch.ones(1, 8, dtype=torch.bool))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 4), (1, 1), (3, 80)])
def test_nan_scores_are_rejected_by_nm_mask(dtype, n, m):
    scores = torch.tensor([[1.0, NAN, 2.0, 3.0, 0.0]], dtype=dtype)
    with pytest.raises(ValueError, match="NaN"):
        nm_mask(scores, n, m)


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_scores_are_rejected_everywhere(dtype):
    scores = torch.tensor([[1.0, 2.0, NAN, 3.0]], dtype=dtype)
    with pytest.raises(ValueError, match="1 NaN score"):
        keep_top_n(scores, 2)
    with pytest.raises(ValueError, match="NaN"):
        unstructured_mask(scores, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        nm_mask_reference(scores, 2, 4)
    for pattern in ("2:4", "unstructured:0.5", "dense"):
        with pytest.raises(ValueError, match="NaN"):
            pattern_mask(scores, parse_pattern(pattern))
    # NaN in the padded tail of a kernel-sized group is still caught.
    with pytest.raises(ValueError, match="NaN"):
        nm_mask(torch.tensor([1.0, 2.0, 3.0, 4.0, NAN], dtype=dtype), 2, 4)


# ---------------------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------------------

# (n, m) pairs whose float32 kernel is compiled in these tests (compiling costs 0.3-2 s per pair).
KERNEL_PAIRS = [(1, 2), (2, 4), (3, 4), (1, 4), (2, 3), (3, 5), (4, 8), (6, 7), (8, 16), (1, 33)]
SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 0.5, INF, -INF]


ANY_N_M = st.integers(1, 64).flatmap(lambda m: st.tuples(st.integers(1, m), st.just(m)))
# The kernel path: the pre-chosen pairs, or N = M (no kernel involved).
KERNEL_N_M = st.sampled_from(KERNEL_PAIRS + [(5, 5), (64, 64)])
# Proper selections 1 <= n < m <= 64, for running the generated kernel source as Python.
PROPER_N_M = st.integers(2, 64).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m)))


@st.composite
def score_cases(draw, dtypes=tuple(FLOATS), n_m=None):
    """Random scores [lead..., K] with many ties, zeros and infinities, plus an (n, m)."""
    dtype = draw(st.sampled_from(dtypes))
    lead = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    k = draw(st.integers(1, 70))
    if n_m is None:
        n_m = KERNEL_N_M if dtype == torch.float32 else ANY_N_M
    n, m = draw(n_m)
    palette = draw(st.lists(st.sampled_from(SPECIAL) | st.integers(-4, 4).map(float), min_size=1, max_size=6))
    continuous = draw(st.floats(0.0, 1.0))  # share of values drawn from a normal distribution instead
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    shape = (*lead, k)
    picks = torch.tensor(palette, dtype=torch.float64)[torch.randint(len(palette), shape, generator=gen)]
    normal = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    values = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < continuous, normal, picks)
    return values.to(dtype), n, m


def assert_top_n_per_group(scores: torch.Tensor, keep: torch.Tensor, n: int, m: int) -> None:
    """Each group keeps min(n, real length) values, all >= every dropped one, ties won by lower index."""
    k = scores.shape[-1]
    pad = (-k) % m
    s = F.pad(scores.double().reshape(-1, k), (0, pad), value=-INF).reshape(-1, (k + pad) // m, m)
    kp = F.pad(keep.reshape(-1, k), (0, pad), value=False).reshape(s.shape)
    real = F.pad(torch.ones(1, k, dtype=torch.bool), (0, pad), value=False).reshape(1, -1, m)
    assert torch.equal(kp.sum(-1), real.sum(-1).clamp(max=n).expand(kp.shape[:-1]))
    index = torch.arange(m)
    beats = (s.unsqueeze(-1) > s.unsqueeze(-2)) | ((s.unsqueeze(-1) == s.unsqueeze(-2)) & (index[:, None] < index))
    violations = kp.unsqueeze(-1) & ~kp.unsqueeze(-2) & ~beats  # kept i, dropped j, and i does not beat j
    assert not violations.any()


@settings(max_examples=150, deadline=None)
@given(score_cases())
def test_nm_mask_properties(case):
    scores, n, m = case
    keep = nm_mask(scores, n, m)
    assert keep.dtype == torch.bool and keep.shape == scores.shape
    assert_top_n_per_group(scores, keep, n, m)  # (a) counts and (c) correct top-n with tie order
    assert torch.equal(keep, nm_mask_reference(scores, n, m))  # (b) kernel (float32) == torch path
    assert torch.equal(keep, nm_mask(scores.clone(), n, m))  # (d) deterministic
    if m > 1 and scores.shape[-1] % m == 0:  # every group is full: exactly n * groups kept per row
        assert torch.all(keep.sum(-1) == n * scores.shape[-1] // m)


@settings(max_examples=60, deadline=None)
@given(score_cases(dtypes=(torch.float32,)))
def test_kernel_matches_reference_on_float32(case):
    scores, n, m = case
    assert torch.equal(nm_mask(scores, n, m), nm_mask_reference(scores, n, m))


@settings(max_examples=80, deadline=None)
@given(score_cases(dtypes=(torch.float32,), n_m=PROPER_N_M))
def test_generated_kernel_logic_for_any_n_m(case):
    """The generated kernel source (run as Python, without compiling) for arbitrary 1 <= n < m <= 64."""
    scores, n, m = case
    k = scores.shape[-1]
    padded = F.pad(scores, (0, (-k) % m), value=-INF)
    flat = padded.contiguous().reshape(-1).numpy()
    keep = np.empty(flat.shape, dtype=np.bool_)
    selection_kernel._mask_kernel(n, m).py_func(flat, keep)
    keep = torch.from_numpy(keep).reshape(padded.shape)[..., :k]
    assert torch.equal(keep, nm_mask_reference(scores, n, m))


@settings(max_examples=100, deadline=None)
@given(score_cases(), st.floats(0.0, 1.0, exclude_min=True))
def test_unstructured_mask_properties(case, density):
    scores, _, _ = case
    k = scores.shape[-1]
    keep = unstructured_mask(scores, density)
    expected = max(1, int(density * k + 0.5))
    assert torch.all(keep.sum(-1) == expected)
    assert_top_n_per_group(scores, keep, expected, k)  # the whole row is one group
    assert torch.equal(keep, unstructured_mask(scores.clone(), density))


@pytest.mark.parametrize("n, m", KERNEL_PAIRS)
def test_kernel_matches_reference_on_large_random_input(n, m):
    gen = torch.Generator().manual_seed(n * 100 + m)
    palette = torch.tensor([0.0, -0.0, 1.0, -1.0, 2.0, INF, -INF])
    ties = palette[torch.randint(len(palette), (64, 3 * m + 1), generator=gen)]
    smooth = torch.randn(64, 5 * m + 3, generator=gen)
    for scores in (ties, smooth, ties.abs(), -smooth):
        keep = nm_mask(scores, n, m)
        assert torch.equal(keep, nm_mask_reference(scores, n, m))
        assert_top_n_per_group(scores, keep, n, m)


def test_kernel_support_rules():
    x32 = torch.zeros(4)
    assert selection_kernel.supports(x32, 2) and selection_kernel.supports(x32, 64)
    assert not selection_kernel.supports(x32, 1)
    assert not selection_kernel.supports(x32, 65)
    assert not selection_kernel.supports(x32.double(), 4)
    assert not selection_kernel.supports(x32.half(), 4)
    # Groups above the kernel limit use the torch path with the same rules.
    scores = torch.arange(130, dtype=torch.float32).flip(0)
    keep = nm_mask(scores, 3, 65)
    assert kept(keep) == [0, 1, 2, 65, 66, 67]


def test_kernel_input_is_not_modified_and_views_work():
    base = torch.tensor([[3.0, 9.0], [1.0, 8.0], [2.0, 7.0], [0.0, 6.0]])
    snapshot = base.clone()
    transposed = base.t()  # rows [3, 1, 2, 0] and [9, 8, 7, 6], not contiguous
    assert not transposed.is_contiguous()
    expected = torch.tensor([[True, False, True, False], [True, True, False, False]])
    assert torch.equal(nm_mask(transposed, 2, 4), expected)
    strided = torch.tensor([3.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0])[::2]  # [3, 1, 2, 0]
    assert kept(nm_mask(strided, 2, 4)) == [0, 2]
    with_grad = torch.tensor([0.5, 4.0, -1.0, 2.0], requires_grad=True)
    assert kept(nm_mask(with_grad, 2, 4)) == [1, 3]
    assert torch.equal(base, snapshot)


# ---------------------------------------------------------------------------------------------------------
# Sorting and selection networks
# ---------------------------------------------------------------------------------------------------------


def apply_network(values: np.ndarray, comparators) -> np.ndarray:
    """Apply descending comparators: the larger value goes to the lower wire. values: [B, wires]."""
    v = values.copy()
    for a, b in comparators:
        high, low = np.maximum(v[:, a], v[:, b]), np.minimum(v[:, a], v[:, b])
        v[:, a], v[:, b] = high, low
    return v


def network_inputs(m: int) -> np.ndarray:
    if m <= 12:  # 0-1 principle: all 2^m zero-one inputs suffice
        return ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(np.int64)
    rng = np.random.default_rng(m)
    perms = np.argsort(rng.random((400, m)), axis=1)
    zero_one = (rng.random((400, m)) < rng.random((400, 1))).astype(np.int64)
    ties = rng.integers(0, 4, (200, m))
    return np.concatenate([perms, zero_one, ties])


@pytest.mark.parametrize("m", range(1, 41))
def test_batcher_network_sorts(m):
    comparators = sorting_network.batcher_comparators(m)
    assert all(0 <= a < b < m for a, b in comparators)
    inputs = network_inputs(m)
    expected = -np.sort(-inputs, axis=1)
    assert np.array_equal(apply_network(inputs, comparators), expected)


def test_batcher_network_sizes():
    assert sorting_network.batcher_comparators(1) == []
    assert sorting_network.batcher_comparators(2) == [(0, 1)]
    assert len(sorting_network.batcher_comparators(4)) == 5
    assert len(sorting_network.batcher_comparators(8)) == 19
    assert len(sorting_network.batcher_comparators(16)) == 63


@pytest.mark.parametrize("m", [2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 24, 32, 40, 64])
def test_selection_network_picks_nth_largest(m):
    full = sorting_network.batcher_comparators(m)
    inputs = network_inputs(m) if m <= 40 else np.random.default_rng(m).integers(0, 5, (300, m))
    descending = -np.sort(-inputs, axis=1)
    ns = range(1, m + 1) if m <= 16 else sorted({1, 2, m // 4, m // 2, m - 1, m})
    for n in ns:
        selection = sorting_network.selection_comparators(n, m)
        assert set(selection) <= set(full)
        remaining = iter(full)  # a subsequence: same comparators in the same order (pairs may repeat)
        assert all(any(c == f for f in remaining) for c in selection)
        assert np.array_equal(apply_network(inputs, selection)[:, n - 1], descending[:, n - 1])
    assert len(sorting_network.selection_comparators(1, m)) <= len(full)
    assert sorting_network.selection_comparators(1, 2) == [(0, 1)]


def test_selection_network_prunes_comparators():
    # Finding the maximum of 8 needs only 7 comparators; the full sort needs 19.
    assert len(sorting_network.selection_comparators(1, 8)) == 7
    assert len(sorting_network.selection_comparators(1, 4)) == 3
    assert sorting_network.selection_comparators(2, 4) == sorting_network.batcher_comparators(4)
    assert len(sorting_network.selection_comparators(8, 16)) < len(sorting_network.batcher_comparators(16))
