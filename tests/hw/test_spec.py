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
    assert names == ["a100-dense", "act-16of32", "act-2of4", "act-4of8", "act-8of16", "act-flexible",
                     "act-hierarchical", "nvidia-2of4", "systolic-32x32-os"]
    specs = {name: AcceleratorSpec.from_name(name) for name in names}
    assert specs["a100-dense"].compute.dense_macs_per_cycle == 432 * 256
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
