"""Per-action energy: ERT numbers at the reference node, width and node scaling, and bad counts."""

import dataclasses

import pytest

from nmsim.errors import NmsimError
from nmsim.hw.area import load_calibration
from nmsim.hw.energy import ActionCounts, gemm_energy
from nmsim.hw.spec import AcceleratorSpec

CAL = load_calibration()
SYSTOLIC = AcceleratorSpec.from_name("systolic-32x32-os")  # INT8, 45 nm: the Sparseloop ERT's node
ACT_8OF16 = AcceleratorSpec.from_name("act-8of16")  # FP16, 7 nm


def test_int8_macs_and_memory_at_the_reference_node():
    counts = ActionCounts(macs=1000, gated_macs=500, bytes_by_level=(("dram", 1024.0), ("scratchpad", 4096.0)))
    report = gemm_energy(counts, SYSTOLIC)
    assert report.component("mac").nominal_pJ == pytest.approx(1000 * 0.561 + 500 * 0.018)
    assert report.component("dram").nominal_pJ == pytest.approx(1024 * 8 * 8)  # 512 pJ / 64 bit = 8 pJ/bit
    assert report.component("scratchpad").nominal_pJ == pytest.approx(4096 * 8 * 285.7 / 256)
    assert report.component("selector").nominal_pJ == 0
    assert report.total_pJ == pytest.approx(sum(c.nominal_pJ for c in report.components))
    assert [c.kind for c in report.components] == ["compute", "selector", "memory", "memory"]


def test_selector_energy_counts_network_compares():
    # half_split of 16: 38 CEs + 8 max stages = 46 compares, each 0.0295 pJ × 16/32 at FP16, scaled 45 → 7 nm.
    report = gemm_energy(ActionCounts(macs=0, selector_groups=100, selector_group_size=16), ACT_8OF16)
    assert report.component("selector").nominal_pJ == pytest.approx(100 * 46 * 0.0295 * 16 / 32 * 7 / 40)


def test_fp16_mac_and_gated_ratio():
    report = gemm_energy(ActionCounts(macs=10, gated_macs=10), dataclasses.replace(ACT_8OF16, technology_nm=45))
    fp16 = 0.561 * 1640 / 282
    assert report.component("mac").nominal_pJ == pytest.approx(10 * fp16 + 10 * fp16 * 0.018 / 0.561, rel=1e-4)


def test_energy_scales_linearly_with_the_node_except_dram():
    counts = ActionCounts(macs=1e6, bytes_by_level=(("hbm2", 1e3), ("l2", 1e3)))
    at_14, at_7 = (gemm_energy(counts, dataclasses.replace(ACT_8OF16, technology_nm=n)) for n in (14, 7))
    assert at_14.component("mac").nominal_pJ / at_7.component("mac").nominal_pJ == pytest.approx(2)
    assert at_14.component("l2").nominal_pJ / at_7.component("l2").nominal_pJ == pytest.approx(2)
    assert at_14.component("hbm2").nominal_pJ == at_7.component("hbm2").nominal_pJ == pytest.approx(1e3 * 64)


def test_ranges_are_ordered():
    counts = ActionCounts(macs=1e6, gated_macs=1e6, selector_groups=1e4, selector_group_size=16,
                          bytes_by_level=(("hbm2", 1e5), ("l2", 1e5), ("shared_memory", 1e6)))
    report = gemm_energy(counts, ACT_8OF16)
    for c in report.components:
        assert 0 < c.low_pJ <= c.nominal_pJ <= c.high_pJ
    assert report.total_low_pJ <= report.total_pJ <= report.total_high_pJ
    assert report.rows()[-1]["energy_pJ"] == report.total_pJ


def test_bad_counts():
    with pytest.raises(NmsimError, match="does not have"):
        gemm_energy(ActionCounts(macs=1, bytes_by_level=(("hbm", 1.0),)), ACT_8OF16)
    with pytest.raises(NmsimError, match="no online selector"):
        gemm_energy(ActionCounts(macs=1, selector_groups=1, selector_group_size=4),
                    AcceleratorSpec.from_name("nvidia-2of4"))
    with pytest.raises(NmsimError, match="negative"):
        ActionCounts(macs=-1)
    with pytest.raises(NmsimError, match="group size"):
        ActionCounts(macs=1, selector_groups=3)
    with pytest.raises(NmsimError, match="repeat"):
        ActionCounts(macs=1, bytes_by_level=(("l2", 1.0), ("l2", 2.0)))
