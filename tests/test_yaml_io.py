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


def test_large_files_alias_bombs_and_deep_nesting_are_refused_before_building(tmp_path):
    from nmsim.yaml_io import MAX_FILE_BYTES

    big = _write(tmp_path, "a: 1\n" + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"the file is 4,194,310 bytes; .* limited to 4,194,304 bytes \(4 MiB\)"):
        load_yaml(big)
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(6)]
    with pytest.raises(ConfigError, match=r"design.yaml:\d: <top level>: more than 100,000 values once aliases"):
        load_yaml(_write(tmp_path, "\n".join(rows) + "\n"))
    with pytest.raises(ConfigError, match="more than 64 aliases"):
        load_yaml(_write(tmp_path, "a: &a 1\nb: [" + ", ".join(["*a"] * 65) + "]\n"))
    with pytest.raises(ConfigError, match=":1: <top level>: an alias refers to the value that holds it"):
        load_yaml(_write(tmp_path, "a: &a [1, *a]\n"))
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        load_yaml(_write(tmp_path, "a: " + "[" * 70 + "]" * 70 + "\n"))
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        load_yaml(_write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_bad_characters_and_values_name_file_and_line(tmp_path):
    path = _write(tmp_path, "name: a\nb: x\0y\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == f"{path}:2: <top level>: character U+0000 is not allowed in YAML (only printable text, " \
                              "tabs and line breaks)"
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:1: <top level>: not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_yaml(tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError, match=r":3: compute.when: cannot read this timestamp value"):
        load_yaml(_write(tmp_path, "compute:\n  rows: 1\n  when: !!timestamp soon\n"))


def test_duplicate_keys_carry_the_full_key_path(tmp_path):
    with pytest.raises(ConfigError, match=r":4: memory\[1\].name: duplicate key \(first defined on line 3\)"):
        load_yaml(_write(tmp_path, "memory:\n  - name: a\n  - name: b\n    name: c\n"))
    with pytest.raises(ConfigError, match=r":4: compute.units: duplicate key \(first defined on line 3\)"):
        load_yaml(_write(tmp_path, "name: x\ncompute:\n  units: 1\n  units: 2\n"))
