"""Traces: capture round trip, every corruption case, resume, and statistics against hand-computed cases."""

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nmsim.cli import main
from nmsim.llm.models import LoadedModel
from nmsim.patterns import metadata_bits, parse_pattern
from nmsim.sparsify.linear import SparsityConfig
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.targets import make_targets
from nmsim.traces import capture as capture_module
from nmsim.traces.capture import CaptureSettings, capture_trace
from nmsim.traces.format import (
    MANIFEST,
    Trace,
    TraceError,
    pack_mask,
    read_manifest,
    unpack_mask,
    write_manifest,
    write_shard,
)
from nmsim.traces.stats import compute_statistics

sys.path.insert(0, str(Path(__file__).parent))
from test_pruned_linear import tiny_llama  # noqa: E402


class _Tokenizer:
    eos_token_id = 0


SETTINGS = CaptureSettings(prefill_windows=2, seqlen=16, decode_prompts=4, decode_batch=2, prompt_tokens=6,
                           decode_steps=3, values_tokens=2)


def _capture(out, pattern="2:4", mitigation="none", settings=SETTINGS):
    lm = LoadedModel("tiny", "random", tiny_llama(), _Tokenizer(), False)
    generator = torch.Generator().manual_seed(5)
    windows = torch.randint(1, 96, (settings.prefill_windows, settings.seqlen), generator=generator)
    prompts = torch.randint(1, 96, (settings.decode_prompts, settings.prompt_tokens), generator=generator)
    config = SparsityConfig(parse_pattern(pattern), mitigation=parse_mitigation(mitigation))
    return capture_trace(lm, config, out, prefill_windows=windows, decode_prompts=prompts, settings=settings,
                         data={"name": "random", "sha256": "0"})


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    return _capture(tmp_path_factory.mktemp("trace") / "t", "2:4", "median-shift+variance")


def test_mask_packing_round_trips():
    mask = np.random.default_rng(0).random((5, 37)) > 0.5
    packed = pack_mask(mask)
    assert packed.shape == (5, 5) and packed.dtype == np.uint8
    assert np.array_equal(unpack_mask(packed, 37), mask)
    assert pack_mask(np.array([[True] + [False] * 7]))[0, 0] == 1  # bit 0 = position 0


def test_capture_round_trip_and_contents(trace_dir):
    trace = Trace.open(trace_dir)
    manifest = trace.manifest
    assert manifest["complete"] and manifest["token_counts"] == {"prefill": 32, "decode": 12}
    assert [i.key for i in trace.inputs][:4] == ["L0.q+k+v", "L0.o", "L0.gate+up", "L0.down"]
    assert len(trace.inputs) == 8
    shards = list(trace.shards())
    assert [e["file"] for e, _ in shards] == ["prefill-00000.safetensors", "prefill-00001.safetensors",
                                             "decode-00000.safetensors", "decode-00001.safetensors"]
    _, first = shards[0]
    assert first["token.sequence"].tolist() == [0] * 16 and first["token.position"].tolist() == list(range(16))
    _, decode = shards[2]
    assert decode["token.sequence"].tolist() == [0, 1] * 3  # step-major: both prompts at each step
    assert decode["token.position"].tolist() == [6, 6, 7, 7, 8, 8]
    for site in trace.inputs:
        kept = unpack_mask(first[f"{site.key}.kept"], site.k)
        assert (kept.reshape(16, -1, 4).sum(-1) == 2).all()  # exactly 2 of every 4
        dense = first[f"{site.key}.dense_values"].astype(np.float32)
        pruned = first[f"{site.key}.pruned_values"].astype(np.float32)
        shift, scale = first[f"{site.key}.shift"][:2, None], first[f"{site.key}.scale"][:2, None]
        assert dense.shape == (2, site.k)
        assert np.all(pruned[~kept[:2]] == 0)
        np.testing.assert_allclose(pruned[kept[:2]], ((dense - shift) * scale)[kept[:2]], rtol=2e-2, atol=2e-2)
    assert "L0.down.dense_values" not in shards[1][1]  # values only for the first tokens of each phase


def test_dense_capture_stores_no_masks(tmp_path):
    trace = Trace.open(_capture(tmp_path / "d", "dense"))
    _, arrays = next(trace.shards())
    assert trace.manifest["method"]["kept_all"] and not any(name.endswith(".kept") for name in arrays)
    stats = compute_statistics(trace)
    assert (stats.inputs["density"] == 1.0).all()
    assert (stats.weight_fetch["weight_rows_needed_fraction"] == 1.0).all()
    assert set(stats.compression["metadata_format"]) == {"none"}


def test_interrupted_capture_resumes_to_the_same_trace(tmp_path, monkeypatch, trace_dir):
    written = []
    real_write = capture_module.write_shard

    def stop_after_two(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(1)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(capture_module, "write_shard", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        _capture(tmp_path / "r", "2:4", "median-shift+variance")
    with pytest.raises(TraceError, match="completeness"):
        Trace.open(tmp_path / "r")
    monkeypatch.setattr(capture_module, "write_shard", real_write)
    _capture(tmp_path / "r", "2:4", "median-shift+variance")
    resumed, whole = read_manifest(tmp_path / "r"), read_manifest(trace_dir)
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in whole["shards"]]
    with pytest.raises(Exception, match="different settings"):
        _capture(tmp_path / "r", "4:8")


def _copy(trace_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(trace_dir, target)
    return target


def _rewrite_manifest(path, change):
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, check",
    [
        (lambda p: (p / MANIFEST).unlink(), "presence"),
        (lambda p: (p / MANIFEST).write_text((p / MANIFEST).read_text()[:100]), "manifest JSON"),
        (lambda p: _rewrite_manifest(p, lambda m: m.update(format="someone-else")), "format"),
        (lambda p: _rewrite_manifest(p, lambda m: m.update(format_version=2)), "version"),
        (lambda p: _rewrite_manifest(p, lambda m: m["token_counts"].update(prefill=999)), "manifest checksum"),
        (lambda p: (p / "decode-00001.safetensors").unlink(), "presence"),
        (lambda p: (p / "prefill-00001.safetensors").write_bytes((p / "prefill-00001.safetensors").read_bytes()[:-9]),
         "size"),
        (lambda p: _flip_byte(p / "prefill-00000.safetensors", 5000), "sha256"),
    ],
)
def test_every_corruption_is_detected_with_file_and_check(trace_dir, tmp_path, damage, check, capsys):
    copy = _copy(trace_dir, tmp_path)
    damage(copy)
    with pytest.raises(TraceError, match=check) as info:
        Trace.open(copy).verify()
    assert str(copy) in str(info.value)
    assert main(["traces", "verify", str(copy)]) == 2
    assert "check failed" in capsys.readouterr().err


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_resigned_shard_with_wrong_contents_is_caught(trace_dir, tmp_path):
    copy = _copy(trace_dir, tmp_path)
    manifest = read_manifest(copy)
    entry = write_shard(copy, "prefill-00000.safetensors", {"token.sequence": np.zeros(3, np.int32)}, {})
    manifest["shards"][0].update(entry)
    write_manifest(copy, manifest)
    with pytest.raises(TraceError, match="contents"):
        Trace.open(copy).verify()
    (copy / "prefill-00000.safetensors").write_bytes(b"not a safetensors file at all")
    manifest["shards"][0].update(bytes=29, sha256=__import__("hashlib").sha256(b"not a safetensors file at all")
                                 .hexdigest())
    write_manifest(copy, manifest)
    with pytest.raises(TraceError, match="safetensors container"):
        Trace.open(copy).verify()


def _hand_trace(tmp_path, pattern="2:4"):
    """Two tokens of one sequence, one input with K = 8, masks written by hand."""
    kept = np.array([[1, 1, 0, 0, 0, 1, 1, 0], [1, 0, 1, 0, 0, 1, 0, 1]], bool)
    path = tmp_path / "hand"
    path.mkdir()
    entry = write_shard(path, "prefill-00000.safetensors", {
        "token.sequence": np.array([0, 0], np.int32), "token.position": np.array([0, 1], np.int32),
        "L0.down.kept": pack_mask(kept), "L0.down.natural_zeros": np.array([1, 0], np.int32)}, {})
    manifest = {"format": "nmsim-trace", "format_version": 1, "complete": True,
                "method": {"pattern": pattern, "kept_all": False},
                "inputs": [{"key": "L0.down", "layer": 0, "projections": ["down"], "k": 8}],
                "shards": [{**entry, "phase": "prefill", "unit": 0, "tokens": 2}]}
    write_manifest(path, manifest)
    return Trace.open(path)


def test_statistics_match_hand_computed_values(tmp_path):
    stats = compute_statistics(_hand_trace(tmp_path))
    row = stats.inputs.iloc[0]
    assert row["density"] == 0.5 and row["natural_zero_fraction"] == 1 / 16
    fetch = stats.weight_fetch.set_index("tile_tokens")["weight_rows_needed_fraction"]
    assert fetch[1] == 0.5 and fetch[2] == 6 / 8  # union of the two masks: positions 0,1,2,5,6,7
    groups4 = stats.group_nnz[stats.group_nnz["group_size"] == 4].set_index("kept_in_group")["fraction_of_groups"]
    assert groups4.to_dict() == {2: 1.0}
    groups8 = stats.group_nnz[stats.group_nnz["group_size"] == 8].set_index("kept_in_group")["fraction_of_groups"]
    assert groups8.to_dict() == {4: 1.0}
    token = stats.agreement[stats.agreement["relation"] == "token"].iloc[0]
    assert token["kept_overlap"] == 2 / 4  # token 1 keeps 0,2,5,7; token 0 kept 0 and 5 of them
    compression = stats.compression.set_index(["metadata_format", "value_dtype"])["bytes_per_token"]
    # per 2:4 group: 2 values + index 2 x 2 bits | bitmask 4 bits | enumerative ceil(log2 6) = 3 bits
    assert compression[("index", "fp16")] == 2 * (32 + 4) / 8
    assert compression[("bitmask", "int8")] == 2 * (16 + 4) / 8
    assert compression[("enumerative", "bf16")] == 2 * (32 + 3) / 8


def test_metadata_bits_formulas():
    assert metadata_bits(16, 8, "index", True) == 32
    assert metadata_bits(16, 8, "bitmask", True) == 16
    assert metadata_bits(16, 8, "enumerative", True) == math.ceil(math.log2(12870)) == 14
    assert metadata_bits(32, 16, "enumerative", True) == 30
    assert metadata_bits(16, 3, "index", False) == 3 * 4 + 5  # a variable count needs 5 bits for 0..16


def test_unstructured_traces_use_variable_count_groups(tmp_path):
    stats = compute_statistics(_hand_trace(tmp_path, "unstructured:0.5"))
    compression = stats.compression.set_index(["metadata_format", "value_dtype"])["bytes_per_token"]
    assert stats.compression["group_size"].iloc[0] == 16
    # K = 8 in one group of 16: 4 values, index 4x4 bits + 5 count bits
    assert compression[("index", "fp16")] == (4 * 16 + 4 * 4 + 5) / 8


def test_shard_write_read_round_trip_is_exact_and_deterministic(tmp_path):
    from nmsim.traces.format import read_shard

    rng = np.random.default_rng(1)
    arrays = {
        "token.sequence": np.arange(5, dtype=np.int32),
        "L0.q.kept": pack_mask(rng.random((5, 20)) > 0.5),
        "L0.q.dense_values": rng.standard_normal((2, 20)).astype(np.float16),
        "L0.q.shift": rng.standard_normal(5).astype(np.float32),
    }
    first = write_shard(tmp_path, "a.safetensors", arrays, {"phase": "prefill"})
    second = write_shard(tmp_path, "b.safetensors", dict(reversed(list(arrays.items()))), {"phase": "prefill"})
    assert first["sha256"] == second["sha256"]  # same content, same bytes, whatever the insertion order
    back = read_shard(tmp_path, first)
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array)


def test_captures_that_would_record_nothing_are_refused(tmp_path):
    with pytest.raises(Exception, match="select no pruned linear input"):
        _capture(tmp_path / "none", settings=CaptureSettings(prefill_windows=1, seqlen=8, decode_prompts=0,
                                                             layers=frozenset({7})))
    lm = LoadedModel("tiny", "random", tiny_llama(), _Tokenizer(), False)
    config = SparsityConfig(parse_pattern("2:4"), targets=make_targets("all", phase="prefill"))
    with pytest.raises(Exception, match="prefill-only"):
        capture_trace(lm, config, tmp_path / "p", prefill_windows=torch.ones(1, 8, dtype=torch.long),
                      decode_prompts=torch.ones(2, 4, dtype=torch.long), settings=SETTINGS, data={})


@pytest.mark.slow
def test_traces_build_and_index_commands_on_a_tiny_capture(tmp_path, monkeypatch, capsys):
    """`nmsim traces build` end to end on the real model (tiny capture settings): statistics, manifest, profile and
    raw sample under ROOT/<name>, then `nmsim traces index` lists it."""
    from nmsim.cli import main
    from nmsim.traces import committed
    from nmsim.traces.capture import CaptureSettings
    from nmsim.traces.profile import read_profile

    tiny = CaptureSettings(prefill_windows=1, seqlen=32, decode_prompts=1, decode_batch=1, prompt_tokens=16,
                           decode_steps=2, values_tokens=0)
    monkeypatch.setattr(committed, "FULL", tiny)
    monkeypatch.setattr(committed, "SAMPLE", dataclasses.replace(tiny, values_tokens=1))
    root = tmp_path / "traces"
    root.mkdir()
    assert main(["traces", "build", "--pattern", "m16n8", "--root", str(root), "--threads", "2"]) == 0
    trace = root / "smollm2-135m_8of16_magnitude_none"
    for name in ("inputs", "group_nnz", "weight_fetch", "compression", "agreement"):
        assert (trace / "stats" / f"{name}.csv").is_file()
    assert (trace / "full_manifest.json").is_file() and (trace / "sample" / "manifest.json").is_file()
    profile = read_profile(trace)
    assert str(profile.pattern) == "8:16" and len(profile.inputs) == 2 * 30 * 4
    assert main(["traces", "verify", str(trace / "sample")]) == 0
    index = (root / "README.md").read_text()
    assert "## smollm2-135m" in index and "smollm2-135m_8of16_magnitude_none | 8:16 | magnitude | none" in index
    assert "within the 40 MB traces budget" in index


# --- checked statistics, checked masks, capture cleanup (issue 18) ------------------------------------------------
COMMITTED_816 = Path(__file__).parents[1] / "traces" / "smollm2-135m_8of16_magnitude_none"


def _committed_copy(tmp_path):
    """The committed 8:16 trace's statistics and manifest (not its raw sample) in ``tmp_path``."""
    target = tmp_path / COMMITTED_816.name
    shutil.copytree(COMMITTED_816 / "stats", target / "stats")
    shutil.copy(COMMITTED_816 / "full_manifest.json", target)
    return target


def _resign(directory, manifest_change=None):
    """Recompute the checksums an editor would: the manifest's own (after ``manifest_change``) and stats/."""
    from nmsim.traces.format import manifest_text
    from nmsim.traces.stats import CHECKSUMS, checksums_text

    manifest_file = directory / "full_manifest.json"
    if not manifest_file.is_file():
        manifest_file = directory / MANIFEST
    manifest = json.loads(manifest_file.read_text())
    if manifest_change is not None:
        manifest_change(manifest)
        manifest_file.write_text(manifest_text(manifest))
        manifest = json.loads(manifest_file.read_text())
    files = {p.name: p.read_bytes() for p in sorted((directory / "stats").glob("*.csv"))}
    (directory / "stats" / CHECKSUMS).write_text(checksums_text(files, manifest))


def _edit_csv(directory, name, change):
    import pandas as pd

    path = directory / "stats" / f"{name}.csv"
    table = pd.read_csv(path)
    table = change(table)
    path.write_text(table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))


def test_statistics_are_checksummed_and_bound_to_their_manifest(trace_dir, tmp_path):
    from nmsim.errors import NmsimError
    from nmsim.traces.reader import TraceData

    copy = _copy(trace_dir, tmp_path)
    assert main(["traces", "stats", str(copy)]) == 0
    assert set(json.loads((copy / "stats" / "checksums.json").read_text())["files"]) == {
        f"{n}.csv" for n in ("inputs", "group_nnz", "weight_fetch", "compression", "agreement")}
    assert TraceData.open(copy).pattern == parse_pattern("2:4")
    assert main(["traces", "verify", str(copy)]) == 0
    fetch = copy / "stats" / "weight_fetch.csv"
    original = fetch.read_bytes()
    fetch.write_text(fetch.read_text().replace(",0.5\n", ",0.01\n", 1))
    with pytest.raises(NmsimError, match=r"stats/weight_fetch.csv: checksum mismatch \(edited or damaged\); "
                                         r"recompute with `nmsim traces stats"):
        TraceData.open(copy)
    assert main(["traces", "verify", str(copy)]) == 2
    fetch.write_bytes(original)
    _rewrite_manifest(copy, lambda m: None)  # re-serialised, same content: still the same manifest
    TraceData.open(copy)
    manifest = read_manifest(copy)
    manifest["method"]["criterion"] = "edited"
    write_manifest(copy, manifest)  # a re-signed manifest no longer matches the one the statistics name
    with pytest.raises(NmsimError, match="is not the manifest the statistics were computed from"):
        TraceData.open(copy)
    (copy / "stats" / "checksums.json").unlink()
    with pytest.raises(NmsimError, match="stats/checksums.json is missing"):
        TraceData.open(copy)


def _set(table, column, value, row=0):
    table[column] = table[column].astype(object)
    table.loc[row, column] = value
    return table


@pytest.mark.parametrize("name, change, manifest_change, needles", [
    ("weight_fetch", lambda t: _set(t, "weight_rows_needed_fraction", 0.01), None,
     ["stats/weight_fetch.csv line 2", "weight_rows_needed_fraction"]),
    ("weight_fetch", lambda t: t.iloc[:0], None, ["stats/weight_fetch.csv", "no rows"]),
    (None, None, lambda m: m.pop("method"), ["full_manifest.json", "method.pattern"]),
    (None, None, lambda m: m["method"].update(pattern="dense", kept_all=True, density=1.0),
     ["stats/inputs.csv line 2", "density 0.5", "dense"]),
    (None, None, lambda m: m["method"].update(pattern="2:4"), ["stats/group_nnz.csv", "keeps exactly 2 of 4"]),
    ("group_nnz", lambda t: _set(t, "fraction_of_groups", 0.2), None, ["stats/group_nnz.csv", "sums to"]),
    ("group_nnz", lambda t: _set(t, "kept_in_group", 9), None, ["stats/group_nnz.csv line 2", "exceeds group_size"]),
    ("group_nnz", lambda t: t.drop(index=3), None, ["stats/group_nnz.csv"]),
    ("inputs", lambda t: __import__("pandas").concat([t, t.iloc[[4]]]), None, ["stats/inputs.csv", "duplicated"]),
    ("inputs", lambda t: _set(t, "tokens", -5), None, ["stats/inputs.csv line 2 column tokens", "at least 1"]),
    ("inputs", lambda t: _set(t, "natural_zero_fraction", -0.1), None, ["natural_zero_fraction", "[0, 1]"]),
    ("inputs", lambda t: _set(t, "natural_zero_fraction", 5.0), None,
     ["stats/inputs.csv line 2 column natural_zero_fraction", "5"]),
    ("inputs", lambda t: _set(_set(t, "projections", "q+k+x"), "input", "L0.q+k+x"), None, ["projections", "q+k+x"]),
    ("weight_fetch", lambda t: _set(t, "tile_tokens", -4, 2), None, ["tile_tokens", "at least 1"]),
    ("inputs", lambda t: _set(t, "density", float("nan")), None, ["density", "not a finite number"]),
    ("compression", lambda t: t.drop(columns="ratio_to_dense"), None, ["stats/compression.csv", "ratio_to_dense"]),
])
def test_statistics_invariants_are_checked_on_read(tmp_path, name, change, manifest_change, needles):
    """Edits whose checksums were recomputed still fail the invariants, each naming the file (and row, column)."""
    from nmsim.errors import NmsimError
    from nmsim.traces.reader import TraceData

    copy = _committed_copy(tmp_path)
    if name is not None:
        _edit_csv(copy, name, change)
    _resign(copy, manifest_change)
    with pytest.raises(NmsimError) as info:
        TraceData.open(copy)
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize("change, check", [
    (lambda m: m["method"].update(pattern="1:2", density=0.5), r"pattern check failed: L0.q\+k\+v: token 0 keeps"),
    (lambda m: m["method"].update(pattern="dense", density=1.0, kept_all=True), "pattern check failed"),
    (lambda m: m["method"].update(kept_all=True), "kept_all"),
    (lambda m: m["token_counts"].update(prefill=33), "token counts check failed"),
    (lambda m: m["shards"][0].update(tokens=15), "contents check failed"),
    (lambda m: m["shards"][0].update({k: m["shards"][1][k] for k in ("file", "bytes", "sha256")}),
     "token coordinates are not positions 0-15 of prefill window 0"),  # another unit's shard under this entry
])
def test_verify_checks_the_manifest_against_the_shards(trace_dir, tmp_path, change, check):
    copy = _copy(trace_dir, tmp_path)
    manifest = read_manifest(copy)
    change(manifest)
    write_manifest(copy, manifest)  # edited with a recomputed checksum
    with pytest.raises(TraceError, match=check):
        Trace.open(copy).verify()
    assert main(["traces", "verify", str(copy)]) == 2


def test_capture_records_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not the suite's 1: the manifest must say what the capture ran with
    try:
        directory = _capture(tmp_path / "t")
    finally:
        torch.set_num_threads(before)
    assert {s["torch_threads"] for s in read_manifest(directory)["shards"]} == {2}
    assert Trace.open(directory).torch_threads == [2]


def test_a_capture_that_fails_before_its_first_shard_leaves_nothing(tmp_path, monkeypatch):
    from nmsim.errors import NmsimError

    out = tmp_path / "t"
    with pytest.raises(NmsimError, match=r"has decoder layers 0-1, not 5"):
        _capture(out, settings=dataclasses.replace(SETTINGS, layers=frozenset({5})))
    assert not out.exists()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(capture_module, "write_shard", broken)
    with pytest.raises(OSError):
        _capture(out)
    assert not out.exists()
    monkeypatch.undo()
    # a manifest-only folder (a capture killed before its first shard) does not block other settings
    other = dataclasses.replace(SETTINGS, seqlen=8)
    header = {"format": "nmsim-trace", "format_version": 1, "capture": other.describe()}
    capture_module._start_or_resume(out, header)
    assert _capture(out) == out and Trace.open(out).verify() > 0


def test_output_paths_that_are_files_are_refused(trace_dir, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    assert main(["capture", "--out", str(file)]) == 2
    assert main(["traces", "stats", str(trace_dir), "--out", str(file)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(f"--out {file}: is a file; it must be a folder" in e for e in errors)


def test_traces_stats_on_a_full_disk_leaves_no_directory(trace_dir, tmp_path, monkeypatch, capsys):
    import errno

    import nmsim.io

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(nmsim.io, "_temporary", full)
    out = tmp_path / "new" / "stats"
    assert main(["traces", "stats", str(trace_dir), "--out", str(out)]) == 2
    assert "no space left on the device" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_prompt_tokens_matter_only_with_decode(tmp_path, monkeypatch):
    from nmsim.errors import NmsimError
    from nmsim.llm import data
    from nmsim.traces.capture import run_capture

    config = SparsityConfig(parse_pattern("2:4"))
    settings = CaptureSettings(prefill_windows=1, seqlen=64, decode_prompts=2, prompt_tokens=128)
    with pytest.raises(NmsimError, match=r"--prompt-tokens 128: .* at most --seqlen 64"):
        run_capture(config, tmp_path / "t", settings)

    def reached(*args, **kwargs):
        raise RuntimeError("past the argument checks")

    monkeypatch.setattr(data, "load_split", reached)
    with pytest.raises(RuntimeError, match="past the argument checks"):
        run_capture(config, tmp_path / "t", dataclasses.replace(settings, decode_prompts=0))
