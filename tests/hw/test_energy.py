"""Per-action energy: ERT numbers at the reference node, width and node scaling, and bad counts."""

import dataclasses
import math
import re
from pathlib import Path

import pytest

from nmsim.errors import NmsimError
from nmsim.hw.area import load_calibration
from nmsim.hw.die import design_area_levels
from nmsim.hw.energy import ActionCounts, gemm_energy, wire_mm
from nmsim.hw.spec import AcceleratorSpec
from nmsim.yaml_io import ConfigError

CAL = load_calibration()
SYSTOLIC = AcceleratorSpec.from_name("systolic-32x32-os")  # INT8, 45 nm: the Sparseloop ERT's node
ACT_8OF16 = AcceleratorSpec.from_name("act-8of16")  # FP16, 7 nm


def test_int8_macs_and_memory_at_the_reference_node():
    counts = ActionCounts(macs=1000, gated_macs=500, bytes_by_level=(("dram", 1024.0), ("scratchpad", 4096.0)))
    report = gemm_energy(counts, SYSTOLIC)
    mac = 0.2 + 0.1  # Horowitz, 45 nm: an 8-bit multiply and a 32-bit (INT32 accumulator) add
    assert report.component("mac").nominal_pJ == pytest.approx(1000 * mac + 500 * mac * 0.018 / 0.561)
    assert report.component("dram").nominal_pJ == pytest.approx(1024 * 8 * 8)  # 512 pJ / 64 bit = 8 pJ/bit
    # a 640 KiB scratchpad: log-log between Horowitz's 32 KB (20 pJ) and 1 MB (100 pJ) 64-bit reads
    t = math.log(640 / 32) / math.log(1024 / 32)
    per_bit = math.exp((1 - t) * math.log(20 / 64) + t * math.log(100 / 64))
    assert report.component("scratchpad").nominal_pJ == pytest.approx(4096 * 8 * per_bit)
    assert report.component("selector").nominal_pJ == 0
    # the DRAM bytes cross the die (the scratchpad is next to the array): 0.1 pJ/bit/mm over half the die's side
    assert report.component("wires").nominal_pJ == pytest.approx(1024 * 8 * 0.1 * wire_mm(SYSTOLIC))
    assert wire_mm(SYSTOLIC) == pytest.approx(math.sqrt(design_area_levels(SYSTOLIC).die.total_mm2) / 2)
    assert report.total_pJ == pytest.approx(sum(c.nominal_pJ for c in report.components))
    assert [c.kind for c in report.components] == ["compute", "selector", "memory", "memory", "wire"]


def test_selector_energy_counts_network_compares():
    # half_split of 16: 38 CEs + 8 max stages = 46 compares, each 0.0295 pJ × 16/32 at FP16, scaled 45 → 7 nm.
    report = gemm_energy(ActionCounts(macs=0, selector_groups=100, selector_group_size=16), ACT_8OF16)
    assert report.component("selector").nominal_pJ == pytest.approx(100 * 46 * 0.0295 * 16 / 32 * 7 / 40)


def test_fp16_mac_accumulates_in_fp32_and_gated_ratio():
    report = gemm_energy(ActionCounts(macs=10, gated_macs=10), dataclasses.replace(ACT_8OF16, technology_nm=45))
    # an FP16 multiply, 7/8 of a 25-bit add of the 8-wide tree, 1/8 of the FP32 accumulator add (Horowitz, 45 nm)
    fp16 = 1.1 + 7 / 8 * 0.1 * 25 / 32 + 0.9 / 8
    assert report.component("mac").nominal_pJ == pytest.approx(10 * fp16 + 10 * fp16 * 0.018 / 0.561, rel=1e-9)


def test_hbm_levels_use_the_hbm_energy_and_sram_grows_with_size():
    report = gemm_energy(ActionCounts(macs=0, bytes_by_level=(("hbm2", 1.0), ("l2", 1.0), ("shared_memory", 1.0))),
                         dataclasses.replace(ACT_8OF16, technology_nm=45))
    assert report.component("hbm2").nominal_pJ == pytest.approx(8 * 3.97)  # O'Connor et al., MICRO 2017
    assert report.component("l2").nominal_pJ > report.component("shared_memory").nominal_pJ  # 379 vs 164 KiB/SM


def test_a100_energy_per_fma_is_below_its_tdp_figure():
    # 400 W at 312 dense FP16 TFLOPS (156 T FMA/s): 2.56 pJ per FMA for everything the board does at TDP
    from nmsim.sim.simulate import simulate_gemm
    from nmsim.sim.usage import DENSE_USE
    from nmsim.sim.workload import Gemm

    spec = AcceleratorSpec.from_name("a100-80gb-sxm")
    result = simulate_gemm(Gemm(0, "q", "prefill", 4096, 4096, 4096), spec, DENSE_USE)
    per_fma = result.energy.total_pJ / 4096 ** 3
    tdp = 400 / 156e12 * 1e12
    # the model counts arithmetic, memory traffic and the wires between levels, not register files, clocks,
    # control or leakage: 0.80 pJ, 31 % of the TDP figure
    assert 0.05 * tdp < per_fma < 0.5 * tdp
    assert result.energy.component("wires").nominal_pJ > result.energy.component("l2").nominal_pJ
    # H100 SXM: 700 W at 989 dense FP16 TFLOPS (495 T FMA/s), 1.41 pJ per FMA
    h100 = simulate_gemm(Gemm(0, "q", "prefill", 4096, 4096, 4096), AcceleratorSpec.from_name("h100-sxm"), DENSE_USE)
    h100_per_fma = h100.energy.total_pJ / 4096 ** 3
    assert 0.05 * (700 / 494.7e12 * 1e12) < h100_per_fma < 0.5 * (700 / 494.7e12 * 1e12)
    assert h100_per_fma < per_fma  # a smaller node, HBM3, a smaller die


def test_energy_scales_linearly_with_the_node_except_dram():
    counts = ActionCounts(macs=1e6, bytes_by_level=(("hbm2", 1e3), ("l2", 1e3)))
    at_14, at_7 = (gemm_energy(counts, dataclasses.replace(ACT_8OF16, technology_nm=n)) for n in (14, 7))
    assert at_14.component("mac").nominal_pJ / at_7.component("mac").nominal_pJ == pytest.approx(2)
    assert at_14.component("l2").nominal_pJ / at_7.component("l2").nominal_pJ == pytest.approx(2)
    assert at_14.component("hbm2").nominal_pJ == at_7.component("hbm2").nominal_pJ == pytest.approx(1e3 * 8 * 3.97)
    # wires keep their energy per mm, but the die (and so the wires) shrinks with the node
    wires = at_14.component("wires").nominal_pJ / at_7.component("wires").nominal_pJ
    assert wires == pytest.approx(wire_mm(dataclasses.replace(ACT_8OF16, technology_nm=14))
                                  / wire_mm(dataclasses.replace(ACT_8OF16, technology_nm=7)))
    assert wires > 1


def test_off_chip_energy_follows_the_memory_technology():
    counts = ActionCounts(macs=0, bytes_by_level=(("hbm3", 1.0),))
    h100 = AcceleratorSpec.from_name("h100-sxm")
    assert h100.memory[0].technology == "hbm3" and ACT_8OF16.memory[0].technology == "hbm2"
    assert AcceleratorSpec.from_name("a100-80gb-sxm").memory[0].technology == "hbm2e"
    assert SYSTOLIC.memory[0].technology == "dram" and {m.technology for m in h100.memory[1:]} == {"sram"}
    assert gemm_energy(counts, h100).component("hbm3").nominal_pJ == pytest.approx(8 * 3.9)
    as_dram = dataclasses.replace(h100, memory=(dataclasses.replace(h100.memory[0], technology="dram"),
                                                *h100.memory[1:]))
    assert gemm_energy(counts, as_dram).component("hbm3").nominal_pJ == pytest.approx(8 * 8)


def test_memory_technology_is_checked(tmp_path):
    base = (Path(__file__).parents[2] / "hw_configs" / "h100-sxm.yaml").read_text(encoding="utf-8")
    for old, new, message in (
            ("{name: hbm3,", "{name: hbm3, technology: gddr6,", "memory[0].technology: 'gddr6' is not one of"),
            ("{name: l2,", "{name: l2, technology: hbm3,", "memory[1].technology: 'hbm3': only the outermost")):
        path = tmp_path / "design.yaml"
        path.write_text(base.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(message)):
            AcceleratorSpec.from_name(str(path))


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
