"""Roofline: ideal N:M halves compute, metadata bytes match hand counts, decode weights scale with the union."""

import pytest

from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import parse_pattern
from nmsim.sim.roofline import roofline
from nmsim.sim.workload import Gemm

PREFILL = Gemm(0, "gate", "prefill", m=4096, k=576, n=1536)
DECODE = Gemm(0, "gate", "decode", m=1, k=576, n=1536)


def test_dense_design_and_dense_pattern_agree():
    dense = roofline(PREFILL, AcceleratorSpec.from_name("a100-dense"), parse_pattern("dense"))
    same = roofline(PREFILL, AcceleratorSpec.from_name("act-8of16"), parse_pattern("dense"))
    assert dense == same
    assert dense.compute_cycles == 4096 * 576 * 1536 / (432 * 256)
    assert dense.bytes_total == 2 * (4096 * 576 + 576 * 1536 + 4096 * 1536)


@pytest.mark.parametrize("design, pattern", [("act-2of4", "2:4"), ("act-8of16", "8:16"), ("act-16of32", "16:32"),
                                             ("nvidia-2of4", "2:4")])
def test_ideal_half_density_halves_compute(design, pattern):
    spec = AcceleratorSpec.from_name(design)
    dense = roofline(PREFILL, spec, parse_pattern("dense"))
    sparse = roofline(PREFILL, spec, parse_pattern(pattern))
    assert sparse.compute_cycles == dense.compute_cycles / 2


def test_activation_bytes_match_hand_counts():
    spec = AcceleratorSpec.from_name("act-8of16")  # bitmask metadata, fp16 values
    cost = roofline(PREFILL, spec, parse_pattern("8:16"))
    groups = 576 // 16
    assert cost.activation_bytes == 4096 * groups * (8 * 16 + 16) / 8  # 8 values + a 16-bit mask per group
    assert cost.activation_bytes / (4096 * 576 * 2) == 0.5625
    weights = roofline(PREFILL, AcceleratorSpec.from_name("nvidia-2of4"), parse_pattern("2:4"))
    assert weights.weight_bytes == 1536 * (576 // 4) * (2 * 16 + 2 * 2) / 8  # 2 values + two 2-bit indices


def test_decode_weight_bytes_equal_dense_times_the_union_fraction():
    spec = AcceleratorSpec.from_name("act-8of16")
    dense = roofline(DECODE, spec, parse_pattern("dense"))
    sparse = roofline(DECODE, spec, parse_pattern("8:16"), weight_rows_fraction=0.5)
    assert sparse.weight_bytes == dense.weight_bytes * 0.5
    assert sparse.bound == "memory" and sparse.cycles < dense.cycles


def test_unsupported_pattern_stops_with_the_design_named():
    with pytest.raises(NmsimError, match="'act-2of4' .* does not support 8:16"):
        roofline(PREFILL, AcceleratorSpec.from_name("act-2of4"), parse_pattern("8:16"))
