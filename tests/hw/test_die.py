"""Area at the core (SM) and die levels: the published die areas of the dense presets, the overhead ordering at
every level, node warnings, the strict die calibration."""

import dataclasses

import pytest

from nmsim.hw.die import DIE_FILE, AREA_LEVELS, design_area_levels, load_die_calibration
from nmsim.hw.spec import AcceleratorSpec
from nmsim.yaml_io import ConfigError

PUBLISHED_DIE_MM2 = {"a100-dense": 826, "h100-sxm": 814}  # A100 (GA100, TSMC N7) and H100 (GH100, TSMC 4N)


@pytest.mark.parametrize("name", sorted(PUBLISHED_DIE_MM2))
def test_dense_presets_land_on_their_published_die_area(name):
    area = design_area_levels(AcceleratorSpec.from_name(name))
    assert area.die.total_mm2 == pytest.approx(PUBLISHED_DIE_MM2[name], rel=0.10)
    assert area.die.low_mm2 < PUBLISHED_DIE_MM2[name] < area.die.high_mm2
    assert not area.warnings


def test_a100_components_follow_its_die_shot():
    # LLMCompass's A100 die-shot breakdown: cores 476.25 (calibrated), L2 119.31 (calibrated), interconnect 76.44,
    # memory PHY 58, memory control 31.77, off-chip PHY 20.95, other 40 mm².
    parts = {name: value for name, (value, _, _) in design_area_levels(AcceleratorSpec.from_name("a100-dense"))
             .die.components.items()}
    assert parts["cores"] == pytest.approx(476.25, rel=1e-3) and parts["caches"] == pytest.approx(119.31, rel=1e-3)
    assert parts["on_chip_interconnect"] == pytest.approx(76.44, rel=0.15)  # LLMCompass's per-core constant
    assert parts["memory_phy"] == pytest.approx(58, rel=0.10)
    assert parts["interconnect_phy"] == pytest.approx(20.95, rel=0.10)


def test_overhead_ordering_holds_at_every_level():
    areas = [design_area_levels(AcceleratorSpec.from_name(f"act-{m // 2}of{m}")) for m in (4, 8, 16, 32)]
    for level in AREA_LEVELS:
        overheads = [area.overhead_pct(level) for area in areas]
        assert overheads == sorted(overheads) and len(set(overheads)) == 4, level
    # the front end is a sliver of an SM and of the die: datapath % ≫ core % ≫ die %
    eight = areas[2]
    assert eight.overhead_pct("datapath") > 10 * eight.overhead_pct("core") > eight.overhead_pct("die") > 0
    dense = design_area_levels(AcceleratorSpec.from_name("a100-dense"))
    assert eight.die.total_mm2 - dense.die.total_mm2 == pytest.approx(eight.die.sparse_mm2)


def test_disabled_cores_take_die_area():
    spec = AcceleratorSpec.from_name("a100-dense")
    enabled = dataclasses.replace(spec, die=dataclasses.replace(spec.die, physical_cores=108))
    full, cut = design_area_levels(spec), design_area_levels(enabled)
    assert full.die.total_mm2 - cut.die.total_mm2 == pytest.approx(20 * full.core.total_mm2 + 20 * (
        full.die.components["on_chip_interconnect"][0] / 128), rel=1e-9)


def test_nodes_outside_the_calibration_warn():
    systolic = design_area_levels(AcceleratorSpec.from_name("systolic-32x32-os"))
    assert any("45 nm is outside" in warning for warning in systolic.warnings)
    assert any("no `die` section" in warning for warning in systolic.warnings)
    spec = AcceleratorSpec.from_name("a100-dense")
    assert design_area_levels(dataclasses.replace(spec, technology_nm=3)).warnings


def test_die_calibration_is_strict(tmp_path):
    text = DIE_FILE.read_text(encoding="utf-8")
    for old, new, message in (("    scales_as: sram\n", "    scales_as: dram\n", "scales_as: 'dram': choose"),
                              ("  die_other_mm2:\n", "  die_others_mm2:\n", "unknown key"),
                              ("[D]\"\n    date", "\"\n    date", "provenance tag")):
        path = tmp_path / "die.yaml"
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_die_calibration.__wrapped__(path)
