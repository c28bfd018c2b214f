"""Accelerator YAML: every preset loads; every mistake is named with file, line and key path."""

import pytest

from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec, load_accelerator
from nmsim.registry import DESIGNS_DIR
from nmsim.yaml_io import ConfigError
from nmsim.patterns import parse_pattern

SYSTOLIC = """name: tiny
technology_nm: 45
frequency_GHz: 1
compute:
  kind: systolic
  units: 1
  rows: 8
  cols: 8
  dataflow: ws
  value_bits: 8
sparsity:
  operand: activation
  patterns: [2:4, 8:16]
  metadata_format: bitmask
memory:
  - {name: dram, capacity_GiB: 1, bandwidth_GBps: 10, latency_ns: 100}
"""


def _load(tmp_path, text):
    path = tmp_path / "design.yaml"
    path.write_text(text)
    return load_accelerator(path)


def test_every_preset_loads_and_supports_what_it_says():
    names = sorted(p.stem for p in DESIGNS_DIR.glob("*.yaml"))
    assert names == ["a100-80gb-pcie", "a100-80gb-pcie-2of4", "a100-80gb-sxm", "a100-dense", "act-16of32",
                     "act-2of4", "act-4of8", "act-8of16", "act-flexible", "act-hierarchical", "h100-sxm",
                     "h100-sxm-2of4", "nvidia-2of4", "systolic-32x32-os"]
    specs = {name: AcceleratorSpec.from_name(name) for name in names}
    assert specs["a100-dense"].compute.dense_macs_per_cycle == 432 * 256
    # datasheet peaks: 312 dense FP16 TFLOPS (A100), 989.4 (H100 SXM) at the peak clock
    for name, tflops in (("a100-dense", 312), ("a100-80gb-pcie", 312), ("h100-sxm", 989.4)):
        spec = specs[name]
        assert 2 * spec.compute.dense_macs_per_cycle * spec.frequency_GHz / 1e3 == pytest.approx(tflops, rel=0.01)
    assert specs["a100-80gb-pcie"].memory[0].bandwidth_GBps == 1935
    # the L2 is 5,120 bytes per clock (whitepaper), about 7.2 TB/s at 1.41 GHz, not 5,120 GB/s
    assert specs["a100-dense"].memory[1].peak_bytes_per_cycle(1.41) * 1.41 == pytest.approx(7219, rel=1e-3)
    # presets that derive from a part keep its clock, tensor cores and memory: like for like
    for derived, base in (("act-8of16", "a100-dense"), ("nvidia-2of4", "a100-dense"), ("act-hierarchical",
                          "a100-dense"), ("a100-80gb-pcie-2of4", "a100-80gb-pcie"), ("h100-sxm-2of4", "h100-sxm")):
        assert (specs[derived].compute, specs[derived].memory, specs[derived].clock_GHz) == \
            (specs[base].compute, specs[base].memory, specs[base].clock_GHz)
    assert [str(p) for p in specs["act-flexible"].sparsity.patterns] == ["2:4", "4:8", "8:16"]
    assert specs["act-hierarchical"].sparsity.hierarchical
    assert specs["nvidia-2of4"].sparsity.operand == "weight"
    assert specs["systolic-32x32-os"].compute.dense_macs_per_cycle == 1024
    assert specs["a100-dense"].memory[0].capacity_bytes == 40 * 2**30
    specs["act-8of16"].check_supports(parse_pattern("8:16"))
    specs["act-8of16"].check_supports(parse_pattern("dense"))
    with pytest.raises(NmsimError, match="does not support 16:32; it supports 8:16"):
        specs["act-8of16"].check_supports(parse_pattern("16:32"))
    with pytest.raises(NmsimError, match=r"dense only"):
        specs["a100-dense"].check_supports(parse_pattern("2:4"))


def test_a_valid_custom_design(tmp_path):
    spec = _load(tmp_path, SYSTOLIC)
    assert (spec.compute.rows, spec.compute.dataflow, spec.frequency_GHz) == (8, "ws", 1.0)
    assert [str(p) for p in spec.sparsity.patterns] == ["2:4", "8:16"]  # not YAML 1.1 base-60 numbers


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("  rows: 8\n", "  row: 8\n", r":7: compute.row: unknown key; did you mean 'rows'\?"),
        ("  rows: 8\n", "", r":4: compute: a systolic needs rows"),
        ("  dataflow: ws\n", "  dataflow: rs\n", r":9: compute.dataflow: 'rs' is not one of os, ws, is"),
        ("  units: 1\n", "  units: one\n", r":6: compute.units: expected int, got 'one'"),
        ("  units: 1\n", "  units: 1\n  macs_per_unit_per_cycle: 4\n",
         r"compute.macs_per_unit_per_cycle: not a key of a systolic"),
        ("[2:4, 8:16]", "[2:4, 5:4]", r":13: sparsity.patterns: item 1: pattern 5:4: N must satisfy 1 <= N <= M"),
        ("[2:4, 8:16]", "[2:4, 4:4]", r"item 1: 4:4 is not a sparse N:M pattern \(need N < M\)"),
        ("[2:4, 8:16]", "[2:4, dense]", r"item 1: dense is not a sparse N:M pattern"),
        ("  operand: activation\n", "  operand: none\n", r":12: sparsity.operand: a sparse operand needs patterns"),
        ("  metadata_format: bitmask\n", "  metadata_format: bitmap\n", r"'bitmap' is not one of index, bitmask"),
        ("capacity_GiB: 1,", "capacity_GiB: 1, capacity_MiB: 2,", r"memory\[0\]: give exactly one of"),
        ("capacity_GiB: 1,", "capacity_GiB: -1,", r"memory\[0\].capacity_GiB: -1.0 is below the minimum 0"),
        ("name: tiny\n", "name: tiny\nname: other\n", r":2: name: duplicate key \(first defined on line 1\)"),
        ("frequency_GHz: 1\n", "", r"<top level>: missing required key\(s\): frequency_GHz"),
        # numbers: finite, integers for counts, in range (the bound in the message)
        ("frequency_GHz: 1\n", "frequency_GHz: .nan\n", r":3: frequency_GHz: nan is not a finite number"),
        ("frequency_GHz: 1\n", "frequency_GHz: .inf\n", r":3: frequency_GHz: inf is not a finite number"),
        ("capacity_GiB: 1,", "capacity_GiB: .inf,", r"memory\[0\].capacity_GiB: inf is not a finite number"),
        ("capacity_GiB: 1,", "capacity_GiB: 0,", r"memory\[0\].capacity_GiB: 0.0 is not positive"),
        ("capacity_GiB: 1,", "capacity_GiB: 2e6,", r"capacity_GiB: 2000000.0 is above 1.04858e\+06, the maximum"),
        ("bandwidth_GBps: 10,", "bandwidth_GBps: .nan,", r"memory\[0\].bandwidth_GBps: nan is not a finite"),
        ("latency_ns: 100}", "latency_ns: -.inf}", r"memory\[0\].latency_ns: -inf is not a finite number"),
        ("  units: 1\n", "  units: 576.5\n", r":6: compute.units: expected int \(a whole count.*got 576.5"),
        ("  units: 1\n", "  units: 1e30\n", r":6: compute.units: expected int \(a whole count.*got 1e\+30"),
        ("  units: 1\n", f"  units: {10**30}\n", r":6: compute.units: 10{30} is above 1,048,576, the maximum"),
        ("  units: 1\n", "  units: true\n", r":6: compute.units: expected int, got True"),
        ("  rows: 8\n", "  rows: 100000\n", r":7: compute.rows: 100000 is above 16,384, the maximum"),
        ("[2:4, 8:16]", "[2:4, 8:4096]", r"sparsity.patterns: item 1: 8:4096: M is above the maximum 1024"),
        ("[2:4, 8:16]", f"[2:4, '1:{'9' * 5000}']", r"sparsity.patterns: item 1: expected an N:M pattern"),
        ("{name: dram, capacity_GiB: 1,", "{name: dram, capacity_GiB: 1, efficiency: 1.5,",
         r"memory\[0\].efficiency: 1.5 is above 1, the maximum"),
    ],
)
def test_mistakes_are_named(tmp_path, old, new, message):
    assert old in SYSTOLIC
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, SYSTOLIC.replace(old, new))
    assert str(info.value).startswith(str(tmp_path / "design.yaml"))


def test_hierarchical_needs_several_patterns_and_unknown_presets_are_listed(tmp_path):
    with pytest.raises(ConfigError, match="sparsity.hierarchical: composing patterns needs at least two"):
        _load(tmp_path, SYSTOLIC.replace("[2:4, 8:16]", "[2:4]\n  hierarchical: true"))
    with pytest.raises(NmsimError, match="no such file or preset .*act-8of16"):
        AcceleratorSpec.from_name("tpu-v9")


def test_a_design_derives_from_a_base_and_overrides_key_by_key(tmp_path):
    (tmp_path / "part.yaml").write_text(BASE_PART)
    (tmp_path / "derived.yaml").write_text("base: part.yaml\nname: derived\ncompute: {units: 4, cores: 2}\n"
                                           "sparsity: {operand: weight, patterns: [2:4]}\n")
    spec = load_accelerator(tmp_path / "derived.yaml")
    assert (spec.name, spec.compute.units, spec.compute.cores, spec.compute.macs_per_unit_per_cycle) == \
        ("derived", 4, 2, 64)
    assert spec.sustained_frequency_GHz == 0.9 and spec.clock_GHz == 0.9 and spec.memory[1].efficiency == 0.5
    assert [str(p) for p in spec.sparsity.patterns] == ["2:4"]


def test_base_errors_name_the_file_and_key(tmp_path):
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\nname: loop\n")
    with pytest.raises(ConfigError, match=r"loop.yaml:1: base: .*a cycle"):
        load_accelerator(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: no-such-part\nname: orphan\n")
    with pytest.raises(ConfigError, match=r"orphan.yaml:1: base: .*no such file or preset"):
        load_accelerator(tmp_path / "orphan.yaml")


def test_a_design_may_name_the_tiles_its_library_offers(tmp_path):
    (tmp_path / "part.yaml").write_text(BASE_PART)
    (tmp_path / "tiles.yaml").write_text("base: part.yaml\nname: t\ncompute: {tile_shapes: [128x256/64x256]}\n")
    assert [str(t) for t in load_accelerator(tmp_path / "tiles.yaml").compute.tile_shapes] == ["128x256"]
    (tmp_path / "bad.yaml").write_text("base: part.yaml\nname: t\ncompute: {tile_shapes: [128x256/48x256]}\n")
    with pytest.raises(ConfigError, match=r"compute.tile_shapes: item 0: '128x256/48x256' is not block/warp"):
        load_accelerator(tmp_path / "bad.yaml")


@pytest.mark.parametrize("level, message", [
    ("{name: l2, capacity_MiB: 1, latency_ns: 1}", "exactly one of bandwidth_GBps"),
    ("{name: l2, capacity_MiB: 1, bandwidth_GBps: 1, bandwidth_bytes_per_cycle: 8, latency_ns: 1}",
     "exactly one of bandwidth_GBps"),
    ("{name: l2, capacity_MiB: 1, bandwidth_GBps: 1, efficiency: 1.5, latency_ns: 1}", "above 1"),
])
def test_memory_bandwidth_keys_are_checked(tmp_path, level, message):
    l2 = "  - {name: l2, capacity_MiB: 4, bandwidth_bytes_per_cycle: 256, efficiency: 0.5, latency_ns: 10}"
    (tmp_path / "part.yaml").write_text(BASE_PART.replace(l2, f"  - {level}"))
    with pytest.raises(ConfigError, match=message):
        load_accelerator(tmp_path / "part.yaml")


BASE_PART = """name: part
technology_nm: 7
frequency_GHz: 1.0
sustained_frequency_GHz: 0.9
compute: {kind: tensor_core, units: 8, cores: 4, macs_per_unit_per_cycle: 64, value_bits: 16}
memory:
  - {name: dram, capacity_GiB: 1, bandwidth_GBps: 100, efficiency: 0.9, latency_ns: 100}
  - {name: l2, capacity_MiB: 4, bandwidth_bytes_per_cycle: 256, efficiency: 0.5, latency_ns: 10}
  - {name: smem, capacity_KiB: 512, bandwidth_bytes_per_cycle: 512, latency_ns: 1, double_buffered: true}
"""


def test_memory_level_names_repeat_with_file_and_line(tmp_path):
    text = SYSTOLIC + "  - {name: dram, capacity_KiB: 64, bandwidth_GBps: 100, latency_ns: 1}\n"
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert str(info.value) == (f"{tmp_path / 'design.yaml'}:17: memory[1].name: 'dram' is already the name of "
                               "memory[0] (line 16); each level needs its own name")


def test_every_design_number_is_finite_and_bounded():
    """Every numeric key the schema reads goes through the one getter, with a finite upper bound."""
    import inspect
    import re

    from nmsim.hw import spec

    source = inspect.getsource(spec)
    numeric = re.findall(r'r\.get\("(\w+)", (?:int|float)([^)]*)\)', source)
    assert len(numeric) > 20
    for key, rest in numeric:
        assert "maximum=" in rest or "choices=" in rest, f"{key} has no upper bound"
