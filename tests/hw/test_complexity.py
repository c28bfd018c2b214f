"""Selection-network and mux counts against the hand counts of hw_reference.md §6–7."""

import pytest

from nmsim.hw.complexity import select_muxes_per_group, selection_network
from nmsim.patterns import metadata_bits


@pytest.mark.parametrize(
    "m, bitonic, odd_even, half_split",
    [(4, (6, 3), (5, 3), (4, 2)), (8, (24, 6), (19, 6), (14, 4)), (16, (80, 10), (63, 10), (46, 7)),
     (32, (240, 15), (191, 15), (142, 11))],
)
def test_selection_networks_match_the_reference_counts(m, bitonic, odd_even, half_split):
    for kind, (size, depth) in (("bitonic", bitonic), ("odd_even", odd_even), ("half_split", half_split)):
        network = selection_network(m, kind)
        assert (network.comparators, network.depth) == (size, depth), kind
    assert selection_network(m, "rank").comparators == m * (m - 1) // 2


def test_half_split_with_odd_even_halves():
    # The reference's 136 for M = 32 uses the best-known 60-CE 16-sorter; Batcher's 16-sorter has 63 CEs.
    network = selection_network(32)
    assert (network.compare_exchanges, network.max_stages) == (2 * 63, 16)


def test_select_muxes_and_metadata_grow_with_m_at_half_density():
    muxes = [select_muxes_per_group(m // 2, m) for m in (4, 8, 16, 32)]
    assert muxes == [4, 16, 64, 256]
    assert [mux / (m // 2) for mux, m in zip(muxes, (4, 8, 16, 32))] == [2, 4, 8, 16]  # per MAC: M/2
    selectors = [selection_network(m).comparators / m for m in (4, 8, 16, 32)]
    assert selectors == sorted(selectors) and selectors[0] < selectors[-1]
    assert [metadata_bits(m, m // 2, "index") for m in (4, 8, 16, 32)] == [4, 12, 32, 80]
    assert [metadata_bits(m, m // 2, "enumerative") for m in (4, 8, 16, 32)] == [3, 7, 14, 30]
    assert metadata_bits(16, 4, "enumerative") == 11 and metadata_bits(8, 2, "index") == 6


def test_bad_networks():
    with pytest.raises(ValueError, match="unknown selection network"):
        selection_network(8, "bubble")
    with pytest.raises(ValueError, match="at least 2"):
        selection_network(1)
