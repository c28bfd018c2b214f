"""Strict YAML loading: duplicates, unknown keys, syntax errors, all with file, line and key path."""

import pytest

from nmsim.yaml_io import ConfigError, LinedDict, check_keys, load_yaml


def _write(tmp_path, text):
    path = tmp_path / "design.yaml"
    path.write_text(text)
    return path


def test_mappings_remember_lines(tmp_path):
    data = load_yaml(_write(tmp_path, "name: a\ncompute:\n  rows: 32\n  freq_GHz: 1.4\n"))
    assert isinstance(data, LinedDict) and data.lines == {"name": 1, "compute": 2}
    assert data["compute"].lines == {"rows": 3, "freq_GHz": 4} and data["compute"].line == 2
    assert data["compute"]["freq_GHz"] == 1.4


def test_duplicate_keys_are_rejected_with_both_lines(tmp_path):
    path = _write(tmp_path, "compute:\n  rows: 32\n  cols: 8\n  rows: 64\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == f"{path}:4: compute.rows: duplicate key (first defined on line 2)"


def test_syntax_errors_and_missing_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"design.yaml:2: <top level>: YAML syntax"):
        load_yaml(_write(tmp_path, "a: [1, 2\nb: 3\n"))
    with pytest.raises(ConfigError, match="nothing.yaml: <top level>: file not found"):
        load_yaml(tmp_path / "nothing.yaml")


def test_unknown_keys_name_the_path_and_suggest(tmp_path):
    path = _write(tmp_path, "memory:\n  dram:\n    bandwith_GBps: 100\n")
    dram = load_yaml(path)["memory"]["dram"]
    with pytest.raises(ConfigError) as info:
        check_keys(dram, path, "memory.dram", {"bandwidth_GBps", "latency_ns"})
    message = str(info.value)
    assert message.startswith(f"{path}:3: memory.dram.bandwith_GBps: unknown key; did you mean 'bandwidth_GBps'?")
    assert "Allowed here: bandwidth_GBps, latency_ns" in message
    with pytest.raises(ConfigError, match=r":2: memory.dram: missing required key\(s\): latency_ns"):
        check_keys(dram, path, "memory.dram", {"bandwith_GBps", "latency_ns"}, {"latency_ns"})
