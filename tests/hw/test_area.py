"""Datapath area: hand counts of hw_reference.md §5–7, the presets' ordering, ranges, node scaling and the
strict calibration file."""

import dataclasses
import math
import itertools
from pathlib import Path

import pytest

from nmsim.hw.area import (
    CALIBRATION_FILE,
    SPARSE_COMPONENTS,
    cell_um2,
    design_area,
    load_calibration,
    preset_area_markdown,
    slot_fan_in,
)
from nmsim.hw.spec import AcceleratorSpec, SparsitySpec
from nmsim.registry import DESIGNS_DIR
from nmsim.yaml_io import ConfigError
from nmsim.patterns import parse_pattern

CAL = load_calibration()
PRESETS = sorted(p.stem for p in DESIGNS_DIR.glob("*.yaml"))
DOC = Path(__file__).resolve().parents[2] / "docs" / "area_model.md"


def _patterns(*texts):
    return tuple(parse_pattern(t) for t in texts)


def _int8_45nm(*patterns, operand="activation", fmt="bitmask", hierarchical=False, groups=0):
    """The 32×32 INT8 systolic preset (45 nm, the MUX2 and Horowitz reference node) with N:M support."""
    base = AcceleratorSpec.from_name("systolic-32x32-os")
    sparsity = SparsitySpec(operand, _patterns(*patterns), hierarchical, fmt, "half_split", groups)
    return dataclasses.replace(base, name="int8-" + "-".join(patterns), sparsity=sparsity)


def _at(name, node=45):
    """A cell's µm² at ``node``, scaled from its own node by the logic density table."""
    return cell_um2(CAL, name, node)


def _per_mac_um2(report, component):
    return report.component(component).nominal_mm2 * 1e6 / report.macs


def test_overhead_grows_with_m_at_half_density():
    reports = [design_area(AcceleratorSpec.from_name(f"act-{m // 2}of{m}")) for m in (4, 8, 16, 32)]
    overheads = [r.overhead_pct for r in reports]
    assert overheads == sorted(overheads) and len(set(overheads)) == 4
    muxes = [r.component("operand_select_muxes").nominal_mm2 for r in reports]
    assert [b / a for a, b in itertools.pairwise(muxes)] == pytest.approx([2, 2, 2])  # M/2 MUX2 per MAC bit
    assert len({r.dense_mm2 for r in reports}) == 1
    assert len({r.component("extra_buffering").nominal_mm2 for r in reports}) == 1  # (M−N)/N = 1 value per MAC


def test_int8_mux_per_mac_matches_the_hand_count():
    # 8:16 at INT8: (M − N)·w = 8·8 MUX2 per MAC at 1.862 µm² (NanGate45, the design's own node).
    report = design_area(_int8_45nm("8:16"))
    assert _per_mac_um2(report, "operand_select_muxes") == pytest.approx(8 * 8 * 1.862)
    assert _per_mac_um2(report, "operand_select_muxes") / 282 == pytest.approx(0.42, abs=0.005)  # §7.4: 42%


def test_fp16_mux_to_multiplier_ratio_matches_the_reference():
    report = design_area(AcceleratorSpec.from_name("act-8of16"))
    multiplier_um2 = _at("multiplier_16bit", report.technology_nm)
    assert _per_mac_um2(report, "operand_select_muxes") / multiplier_um2 == pytest.approx(0.145, abs=0.001)


def test_dense_mac_golden_number():
    # 282 µm² multiplier (45 nm) + a 32-bit adder and 8 + 8 + 32 register bits from 40 nm, scaled by the logic
    # density from 40 to 45 nm (log-log between the table's 45 and 16 nm entries)
    report = design_area(AcceleratorSpec.from_name("systolic-32x32-os"))
    factor = CAL.logic_scaling.factor(40, 45)
    assert factor == pytest.approx((45 / 40) ** (math.log(28.88 / 3.33) / math.log(45 / 16)))
    expected = 282 + (278 + 48 * 5.98) * factor
    assert report.dense_mm2 * 1e6 / 1024 == pytest.approx(expected)
    assert [c.name for c in report.components] == ["mac_array"]
    assert (report.overhead_pct, report.overhead_low_pct, report.overhead_high_pct) == (0, 0, 0)


def test_union_fan_in_hand_checked():
    # Window of 8, four kept slots. 4:8 slot s reaches s..s+4: {0-4}, {1-5}, {2-6}, {3-7}.
    # 2:4 slot s sits in group s // 2 at local slot s % 2: {0,1,2}, {1,2,3}, {4,5,6}, {5,6,7}: inside the 4:8 sets,
    # so supporting 2:4 next to 4:8 costs no extra mux input: fan-in 5 = M − N + 1 per slot.
    assert slot_fan_in(_patterns("2:4", "4:8")) == (8, (5, 5, 5, 5))
    # 2:4 with 2:8: slots 0 and 1 serve both ({0-6} ∪ {0,1,2}, {1-7} ∪ {1,2,3}); slots 2 and 3 only 2:4.
    assert slot_fan_in(_patterns("2:4", "2:8")) == (8, (7, 7, 3, 3))
    assert slot_fan_in(_patterns("2:4", "4:8", "8:16")) == slot_fan_in(_patterns("8:16")) == (16, (9,) * 8)
    assert slot_fan_in(_patterns("1:2")) == (2, (2,))


def test_flexible_and_mixed_density_muxes():
    flexible, native = (design_area(AcceleratorSpec.from_name(n)) for n in ("act-flexible", "act-8of16"))
    muxes = [r.component("operand_select_muxes").nominal_mm2 for r in (flexible, native)]
    assert muxes[0] == muxes[1]
    # (6 + 6 + 2 + 2) MUX2 per 4 MACs and bit = 4 per MAC bit, at INT8.
    mixed = design_area(_int8_45nm("2:4", "2:8"))
    assert _per_mac_um2(mixed, "operand_select_muxes") == pytest.approx(4 * 8 * 1.862)
    assert _per_mac_um2(mixed, "extra_buffering") == pytest.approx(_at("register_bit") * 8)


def test_hierarchical_datapath_is_the_smallest_pattern():
    hierarchical, small, flexible = (design_area(AcceleratorSpec.from_name(n))
                                     for n in ("act-hierarchical", "act-2of4", "act-flexible"))
    for name in ("operand_select_muxes", "extra_buffering"):
        assert hierarchical.component(name).nominal_mm2 == small.component(name).nominal_mm2
    for name in ("metadata", "selection_network"):  # still sized for the 8:16 groups it selects and encodes
        assert hierarchical.component(name).nominal_mm2 == flexible.component(name).nominal_mm2
    assert small.overhead_pct < hierarchical.overhead_pct < flexible.overhead_pct


def test_metadata_registers_and_decoders():
    stages = CAL.metadata_pipeline_stages
    register, half_adder = _at("register_bit"), _at("half_adder")
    index = design_area(_int8_45nm("8:16", fmt="index"))  # 8·4 bits per 8 MACs, no decoder
    assert _per_mac_um2(index, "metadata") == pytest.approx(32 * stages * register / 8)
    bitmask = design_area(_int8_45nm("8:16", fmt="bitmask"))  # 16 bits + 16·4 half adders per 8 MACs
    assert _per_mac_um2(bitmask, "metadata") == pytest.approx((16 * stages * register + 64 * half_adder) / 8)
    enumerative = design_area(_int8_45nm("8:16", fmt="enumerative"))  # 14 bits, plus 16 adders of 14 bits
    adder_bit = _at("adder") / 32
    expected = (14 * stages * register + 64 * half_adder + 16 * 14 * adder_bit) / 8
    assert _per_mac_um2(enumerative, "metadata") == pytest.approx(expected)


def test_selector_is_activation_only_and_counts_instances():
    weight = design_area(AcceleratorSpec.from_name("nvidia-2of4"))
    assert "selection_network" not in [c.name for c in weight.components]
    unmodelled = design_area(_int8_45nm("8:16"))
    assert unmodelled.component("selection_network").nominal_mm2 == 0
    assert "not modelled" in unmodelled.component("selection_network").note
    # half_split of 16 at INT8: 38 CEs (comparator + 2·8 MUX2) and 8 max stages (comparator + 8 MUX2), 4 instances.
    report = design_area(_int8_45nm("8:16", groups=4))
    comparator = 71 * CAL.logic_scaling.factor(40, 45) * 8 / 32  # 32-bit Aladdin comparator at 40 nm → 8 bits, 45 nm
    per_instance = 38 * (comparator + 16 * 1.862) + 8 * (comparator + 8 * 1.862)
    assert report.component("selection_network").nominal_mm2 * 1e6 == pytest.approx(4 * per_instance)


@pytest.mark.parametrize("name", PRESETS)
def test_ranges_are_ordered(name):
    report = design_area(AcceleratorSpec.from_name(name))
    for c in report.components:
        assert 0 <= c.low_mm2 <= c.nominal_mm2 <= c.high_mm2
    assert report.total_low_mm2 <= report.total_mm2 <= report.total_high_mm2
    assert report.overhead_low_pct <= report.overhead_pct <= report.overhead_high_pct
    assert report.total_mm2 == pytest.approx(sum(c.nominal_mm2 for c in report.components))
    rows = report.rows()
    assert rows[-1]["component"] == "total" and rows[0]["pct_of_dense"] == pytest.approx(100)


def test_area_scales_with_published_logic_density():
    spec = AcceleratorSpec.from_name("act-8of16")
    at_16, at_7, at_4 = (design_area(dataclasses.replace(spec, technology_nm=node)) for node in (16, 7, 4))
    assert at_16.total_mm2 / at_7.total_mm2 == pytest.approx(91.2 / 28.88)  # TSMC N7 vs 16FF+ MTr/mm²
    assert at_7.total_mm2 / at_4.total_mm2 == pytest.approx(181.6 / 91.2)  # not the (7/4)² of node names
    assert at_16.overhead_pct == pytest.approx(at_7.overhead_pct)
    # the scaling ratio's own uncertainty (×1.25) widens the bounds beyond the dominant cell's (FP16 multiplier, ×1.4)
    assert at_7.total_high_mm2 / at_7.total_mm2 > CAL.area["multiplier_16bit"].high
    assert CAL.sram_scaling.factor(45, 7) == pytest.approx(0.027 / 0.346)  # SRAM shrinks less than logic
    assert CAL.sram_scaling.factor(45, 7) > CAL.logic_scaling.factor(45, 7)


def test_calibration_entries_carry_provenance():
    for entry in [*CAL.area.values(), *CAL.energy.values()]:
        assert entry.source and entry.date in ("2026-11-29", "2026-12-02") and entry.node_nm in (14, 40, 45)
    width = {tag: [e.high / e.low for e in [*CAL.area.values(), *CAL.energy.values()] if f"[{tag}]" in e.source]
             for tag in "VMD"}
    assert min(width["M"]) > max(width["V"]) and min(width["D"]) >= max(width["V"])
    # Derived entries agree with their derivations.
    assert CAL.area["multiplier_4bit"].value == pytest.approx(282 / 4)
    assert CAL.area["half_adder"].value == pytest.approx(278 / 32 / 2)
    assert CAL.area["bf16_multiplier"].value == pytest.approx(282 + 278 * 8 / 32, rel=1e-3)
    assert CAL.area["fp8_multiplier"].value == pytest.approx(70.5 + 278 * 5 / 32, rel=1e-3)
    assert CAL.energy["int4_multiply"].value == pytest.approx(0.2 * (4 / 8) ** 2)
    assert CAL.energy["bf16_multiply"].value == pytest.approx(0.2 + 0.1 * 8 / 32)
    assert CAL.energy_scaling.exponent == 1.0 and CAL.logic_scaling.nodes == (3, 45)


def _broken(tmp_path, old, new):
    text = CALIBRATION_FILE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "cells.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_calibration_unknown_key_names_the_path(tmp_path):
    path = _broken(tmp_path, "    area_um2: 1.862\n", "    area_um2: 1.862\n    aera_um2: 1.9\n")
    with pytest.raises(ConfigError, match=r"cells.yaml:\d+: area.mux2.aera_um2: unknown key; did you mean "
                                          r"'area_um2'") as info:
        load_calibration(path)
    assert info.value.key_path == "area.mux2.aera_um2"


def test_calibration_duplicate_key_names_the_key(tmp_path):
    path = _broken(tmp_path, "    area_um2: 1.862\n", "    area_um2: 1.862\n    area_um2: 1.9\n")
    with pytest.raises(ConfigError, match="area_um2: duplicate key") as info:
        load_calibration(path)
    assert info.value.line is not None


@pytest.mark.parametrize("old, new, message", [
    ("  half_adder:\n", "  half_addr:\n", "area.half_addr: unknown key"),
    ('32-bit adder, hwcomponents-library aladdin.py [D]"', 'adder"', "half_adder.source: needs a provenance tag"),
    ("uncertainty: [0.85, 1.3]", "uncertainty: [1.2, 1.4]", "area.mux2.uncertainty: need 0 < low <= 1 <= high"),
    ("exponent: 1.0", "exponent: 1.5", "node_scaling.energy.exponent: 1.5 lies outside"),
    ("[[45, 3.33], [16, 28.88]", "[[45, 3.33], [45, 28.88]", "node_scaling.logic.table: expected"),
    ("    stages: 2\n", "    stages: two\n", "datapath.metadata_pipeline_stages.stages: expected a positive integer"),
])
def test_calibration_semantic_errors(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message):
        load_calibration(_broken(tmp_path, old, new))


def test_calibration_missing_entry(tmp_path):
    path = _broken(tmp_path, "  sram_32KiB_read:\n", "  sram_32KiB_read_:\n")
    with pytest.raises(ConfigError, match="energy.sram_32KiB_read_: unknown key"):
        load_calibration(path)


def test_doc_table_is_current():
    table = preset_area_markdown(calibration=CAL)
    assert table in DOC.read_text(encoding="utf-8"), "regenerate the table in docs/area_model.md"
    assert table.count("\n") == len(PRESETS) + 1
    assert set(SPARSE_COMPONENTS) == {"operand_select_muxes", "metadata", "selection_network", "extra_buffering"}


def test_every_operand_width_has_cells():
    base = AcceleratorSpec.from_name("act-8of16")
    sizes = [design_area(dataclasses.replace(base, compute=dataclasses.replace(base.compute, value_bits=w)))
             for w in (4, 8, 16, 32)]
    per_mac = [r.dense_mm2 for r in sizes]
    assert per_mac == sorted(per_mac) and len(set(per_mac)) == 4
    muxes = [r.component("operand_select_muxes").nominal_mm2 for r in sizes]
    assert [m / muxes[0] for m in muxes] == pytest.approx([1, 2, 4, 8])  # linear in w


def _with_compute(name, **compute):
    spec = AcceleratorSpec.from_name(name)
    return dataclasses.replace(spec, compute=dataclasses.replace(spec.compute, **compute))


def test_fp16_products_accumulate_in_fp32_the_documented_way():
    at = {name: _at(name) for name in ("multiplier_16bit", "fp32_adder", "fp16_adder", "mux2", "comparator",
                                         "adder", "register_bit")}
    a100 = AcceleratorSpec.from_name("a100-dense")
    at_45 = dataclasses.replace(a100, technology_nm=45)
    one = design_area(dataclasses.replace(at_45, compute=dataclasses.replace(a100.compute, dot_product_width=1)))
    # a MAC per accumulator: the FP16 multiplier, a full FP32 adder and 16 + 16 + 32 register bits
    per_mac = at["multiplier_16bit"] + at["fp32_adder"] + 64 * at["register_bit"]
    assert _per_mac_um2(one, "mac_array") == pytest.approx(per_mac)
    eight = design_area(at_45)  # the preset: 8 products per adder tree and accumulator (A100 tensor cores)
    levels = 6  # ⌈log2(24 + 22)⌉ shifter levels for a 22-bit product aligned into the FP32 mantissa
    tree = (at["multiplier_16bit"] + 22 * levels * at["mux2"] + 7 / 8 * at["comparator"] * 6 / 32
            + at["fp32_adder"] / 8 + 7 / 8 * at["adder"] * (22 + 3) / 32 + (2 * 16 * 8 + 32) / 8 * at["register_bit"])
    assert _per_mac_um2(eight, "mac_array") == pytest.approx(tree)
    half = design_area(dataclasses.replace(at_45, compute=dataclasses.replace(a100.compute, dot_product_width=1,
                                                                               accumulator="fp16")))
    assert _per_mac_um2(half, "mac_array") == pytest.approx(per_mac - at["fp32_adder"] + at["fp16_adder"]
                                                            - 16 * at["register_bit"])
    assert _per_mac_um2(half, "mac_array") < _per_mac_um2(one, "mac_array")
    assert _per_mac_um2(eight, "mac_array") < _per_mac_um2(one, "mac_array")  # the tree shares the FP32 adder


def test_a_larger_mac_shrinks_the_sparse_overhead_but_keeps_its_order():
    integer_accumulator = {"act-8of16": 29.0}  # the old model: an FP16 MAC with a 32-bit integer adder
    shared = design_area(AcceleratorSpec.from_name("act-8of16")).overhead_pct
    full = design_area(_with_compute("act-8of16", dot_product_width=1)).overhead_pct
    assert full < shared < integer_accumulator["act-8of16"]
    for width in (1, 8, 16):
        overheads = [design_area(_with_compute(f"act-{m // 2}of{m}", dot_product_width=width)).overhead_pct
                     for m in (4, 8, 16, 32)]
        assert overheads == sorted(overheads) and len(set(overheads)) == 4


def test_value_type_and_accumulator_are_checked():
    from nmsim.hw.spec import load_accelerator

    base = Path(__file__).resolve().parents[2] / "hw_configs"
    for body, message in (("value_type: int8", "int8 is 8 bits, but value_bits is 16"),
                          ("accumulator: int32", "fp16 operands accumulate in fp16 or fp32, not int32")):
        path = Path(__file__).parent / "_bad_compute.yaml"
        path.write_text(f"base: {base / 'a100-dense.yaml'}\nname: bad\ncompute:\n  {body}\n")
        try:
            with pytest.raises(ConfigError, match=message):
                load_accelerator(path)
        finally:
            path.unlink()
