"""A full disk, and what killed runs leave: every command ends in one ``nmsim: error:`` line naming the path and
the space, exits 2 and leaves the previous outputs whole; report folders recover from a SIGKILL at any point.

The full disk is simulated where every write goes (``nmsim.io._temporary``, which writes and syncs the temporary
file), so each test is cheap; the report stage runs with stand-in figures and text (its file handling is what is
tested, not the drawing).
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nmsim.io
from nmsim import pipeline
from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.io import DiskFullError, atomic_write_bytes
from nmsim.registry import model_shape
from nmsim.report import folder

sys.path.insert(0, str(Path(__file__).parent))
from fuzz.conftest import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SWEEP = """\
design: act-8of16
parameters:
  memory[0].bandwidth_GBps: [800]
phases: [decode]
batch_sizes: [1]
seq_tokens: 64
"""


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) → its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _disk_full_after(monkeypatch, successes: int = 0) -> list[int]:
    """Let ``successes`` writes through nmsim.io succeed, then fail every one as a full disk does."""
    real = nmsim.io._temporary
    calls = [0]

    def temporary(path, data):
        calls[0] += 1
        if calls[0] > successes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(nmsim.io, "_temporary", temporary)
    return calls


def _no_space_line(outcome, *needles) -> str:
    line = outcome.refused("no space left", *needles)
    assert "free there" in line and "to write" in line  # the estimate of the space needed, and what is free
    return line


# --- the report stage, cheaply ---------------------------------------------------------------------------------
@pytest.fixture
def cheap_report(monkeypatch):
    """report_stage with stand-in figures and text; returns a function writing the report ``target``."""
    from nmsim.report import figures, render

    def draw_all(tables, levels, directory):
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / "performance.png", b"\x89PNG stand-in" * 100)
        return [directory / "performance.png"]

    monkeypatch.setattr(figures, "draw_all", draw_all)
    monkeypatch.setattr(render, "report_markdown", lambda tables, context, written: "# report\n" + "\n".join(written))
    monkeypatch.setattr(render, "report_html", lambda markdown, directory, title: f"<h1>{title}</h1>")
    shape = model_shape("smollm2-135m")
    baseline = AcceleratorSpec.from_name("a100-dense")

    def write(target: Path, value: float = 1.0) -> Path:
        result = {"performance": pd.DataFrame({"design": ["a", "b"], "speedup": [value, 2 * value]}),
                  "area_summary": pd.DataFrame({"design": ["a"], "area_mm2": [value]})}
        return pipeline.report_stage(result, shape, baseline, target)

    return write


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".partial-" in p.name or p.name.endswith(".old"))


def test_a_full_disk_mid_report_removes_the_staging_folder_and_keeps_the_previous_report(tmp_path, monkeypatch,
                                                                                           cheap_report):
    target = cheap_report(tmp_path / "reports" / "small")
    before = _snapshot(tmp_path / "reports")
    _disk_full_after(monkeypatch, successes=2)  # the figure and the first table, then the disk is full
    with pytest.raises(DiskFullError) as caught:
        cheap_report(target, value=3.0)
    message = str(caught.value)
    assert message.startswith(f"{target}: no space left on the device")
    assert "the previous report is unchanged" in message and "free there" in message
    assert caught.value.needed_bytes > 1300  # at least the figure written before the disk filled
    assert _snapshot(tmp_path / "reports") == before and not _leftovers(tmp_path / "reports")


def test_run_on_a_full_disk_is_one_error_line(tmp_path, monkeypatch, cheap_report):
    """`nmsim run` as the user sees it (the stages before the report stand in)."""
    root = tmp_path / "reports"
    cheap_report(root / "small")
    before = _snapshot(root)
    monkeypatch.setattr(pipeline, "run", lambda request: cheap_report(request.out_root / request.name, 5.0))
    _disk_full_after(monkeypatch)
    outcome = run_cli("run", "--report-root", root, "--name", "small", "--accuracy")
    _no_space_line(outcome, str(root / "small"), "previous report is unchanged")
    assert _snapshot(root) == before


# --- the other commands ----------------------------------------------------------------------------------------
def test_simulate_json_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "run.json"
    out.write_text('{"previous": true}\n')
    _disk_full_after(monkeypatch)
    outcome = run_cli("simulate", "--hw", "act-8of16", "--model", "smollm2-135m", "--linear-only", "--json", out)
    _no_space_line(outcome, str(out), "previous file is unchanged")
    assert out.read_text() == '{"previous": true}\n' and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_sweep_on_a_full_disk_keeps_both_previous_tables(tmp_path, monkeypatch):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP)
    out = tmp_path / "out" / "tiny"
    run_cli("sweep", sweep, "--out", out, "--workers", "1").accepted()
    before = _snapshot(tmp_path / "out")
    assert set(before) == {"tiny.csv", "tiny.parquet"}
    _disk_full_after(monkeypatch)
    _no_space_line(run_cli("sweep", sweep, "--out", out, "--workers", "1"), "tiny.csv")
    assert _snapshot(tmp_path / "out") == before
    # into a folder that does not exist yet: no empty folder is left
    _no_space_line(run_cli("sweep", sweep, "--out", tmp_path / "new" / "deeper" / "t", "--workers", "1"))
    assert not (tmp_path / "new").exists()


def _hand_trace(path: Path) -> Path:
    """A two-token 2:4 trace with one input (as tests/test_traces.py builds it)."""
    from nmsim.traces.format import pack_mask, write_manifest, write_shard

    kept = np.array([[1, 1, 0, 0, 0, 1, 1, 0], [1, 0, 1, 0, 0, 1, 0, 1]], bool)
    path.mkdir()
    entry = write_shard(path, "prefill-00000.safetensors", {
        "token.sequence": np.array([0, 0], np.int32), "token.position": np.array([0, 1], np.int32),
        "L0.down.kept": pack_mask(kept), "L0.down.natural_zeros": np.array([1, 0], np.int32)}, {})
    write_manifest(path, {"format": "nmsim-trace", "format_version": 1, "complete": True,
                          "method": {"pattern": "2:4", "kept_all": False},
                          "inputs": [{"key": "L0.down", "layer": 0, "projections": ["down"], "k": 8}],
                          "shards": [{**entry, "phase": "prefill", "unit": 0, "tokens": 2}]})
    return path


def test_traces_stats_on_a_full_disk_writes_all_tables_or_none(tmp_path, monkeypatch):
    trace = _hand_trace(tmp_path / "trace")
    run_cli("traces", "stats", trace).accepted()
    before = _snapshot(trace)
    assert len([name for name in before if name.startswith("stats/")]) == 6  # five tables and checksums.json
    _disk_full_after(monkeypatch, successes=2)  # two of the six files would fit
    _no_space_line(run_cli("traces", "stats", trace), str(trace / "stats"), "previous files are unchanged")
    assert _snapshot(trace) == before
    _no_space_line(run_cli("traces", "stats", trace, "--out", tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()  # no empty statistics folder


def test_the_dense_reference_on_a_full_disk_is_one_error_and_leaves_no_staging(tmp_path, monkeypatch):
    """The eval cache: its memory-mapped arrays get their blocks up front, so a full disk is an error, never a
    SIGBUS later; the unfinished folder is removed."""
    import torch

    from nmsim.accuracy import fidelity

    class Model:
        def get_output_embeddings(self):
            return torch.nn.Linear(4, 32, bias=False)

    class Lm:
        model = Model()

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    directory = tmp_path / "reference" / "tiny-0123"
    directory.parent.mkdir()
    with pytest.raises(DiskFullError, match="no space left") as caught:
        fidelity._build(Lm(), torch.zeros(2, 9, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), 2, 1,
                        directory, {})
    assert caught.value.needed_bytes == 2 * 8 * 32 * 2 + 2 * 8 * 4
    assert "dense reference was removed" in str(caught.value) and not list(directory.parent.iterdir())


def test_the_gguf_conversion_cache_on_a_full_disk_is_one_error(tmp_path, monkeypatch):
    """safetensors wraps ENOSPC in its own exception type; it is still a full disk, and nothing half-cached stays."""
    import torch

    from nmsim.llm import models

    class Config:
        pass

    class Model(torch.nn.Linear):
        hf_quantizer = None
        config = Config()

        def save_pretrained(self, directory):
            (Path(directory) / "model.safetensors").write_bytes(b"half")
            raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr(models, "check_gguf", lambda path: "llama")  # a stand-in file, not a real GGUF
    monkeypatch.setattr(models, "_from_pretrained", lambda *a, **k: (Model(4, 4), None))
    with pytest.raises(DiskFullError, match=r"no space left.*\(80 B to write") as caught:
        models._load_gguf(gguf, dtype=torch.float32, use_cache=True, placement={})
    assert "nothing was cached" in str(caught.value)
    assert not list((tmp_path / "cache" / "models").iterdir())


def test_a_directory_where_a_file_goes_is_refused_and_leaves_nothing(tmp_path):
    outcome = run_cli("simulate", "--hw", "act-8of16", "--model", "smollm2-135m", "--linear-only", "--json", tmp_path)
    outcome.refused(str(tmp_path), "is a directory")
    assert not list(tmp_path.iterdir()) and not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))


def test_simulate_json_is_strict_json(tmp_path):
    from nmsim.sim.results import finite_json

    payload, where = finite_json({"a": [1.0, float("nan"), np.float64("inf")], "b": {"c": np.int64(3)}})
    assert payload == {"a": [1.0, None, None], "b": {"c": 3}} and where == ["a[1]", "a[2]"]
    out = tmp_path / "run.json"
    run_cli("simulate", "--hw", "act-8of16", "--model", "smollm2-135m", "--linear-only", "--json", out).accepted()
    import json

    json.loads(out.read_text(), parse_constant=lambda token: pytest.fail(f"bare {token} in the JSON"))


# --- what killed runs leave --------------------------------------------------------------------------------------
def test_a_rerun_removes_what_killed_runs_left_and_reports_get_ordinary_permissions(tmp_path, cheap_report):
    root = tmp_path / "reports"
    target = cheap_report(root / "small")
    (root / ".small.partial-dead1").mkdir()
    (root / ".small.partial-dead1" / "performance.csv").write_text("half")
    (root / ".small.old").mkdir()  # killed after the swap, before the old report was removed
    (root / ".other.partial-keep").mkdir()  # another report's: not this run's business
    cheap_report(target, 2.0)
    assert _leftovers(root) == [".other.partial-keep"]
    umask = os.umask(0)
    os.umask(umask)
    for directory in (target, target / "figures"):
        assert directory.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_swap_killed_between_its_renames_gives_the_previous_report_back(tmp_path, cheap_report, monkeypatch):
    root = tmp_path / "reports"
    target = cheap_report(root / "small")
    previous = _snapshot(target)
    target.rename(root / ".small.old")  # the first rename of the swap happened, the second never did
    (root / ".small.partial-x").mkdir()
    folder.tidy(target)  # what `nmsim run` does before any work
    assert _snapshot(target) == previous and not _leftovers(root)
    # the same state, then the rerun fails (a full disk): the previous report is back and whole
    target.rename(root / ".small.old")
    _disk_full_after(monkeypatch)
    with pytest.raises(DiskFullError, match="previous report is unchanged"):
        cheap_report(target, 4.0)
    assert _snapshot(target) == previous and not _leftovers(root)


_KILLED_RUN = """
import sys, time
from pathlib import Path
from nmsim.report.folder import staged
with staged(Path(sys.argv[1])) as staging:
    (staging / "table.csv").write_text("half written")
    print(staging, flush=True)
    time.sleep(60)
"""


def test_sigkill_mid_report_then_a_rerun_leaves_no_staging_folder(tmp_path, cheap_report):
    """A run killed while it stages holds the lock until it dies: a concurrent rerun waits instead of deleting a
    live run's staging folder, then removes it once the run is dead."""
    root = tmp_path / "reports"
    target = cheap_report(root / "small")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(target)], stdout=subprocess.PIPE, text=True,
                              env=env)
    staging = Path(killed.stdout.readline().strip())
    assert staging.is_dir() and staging.name.startswith(".small.partial-")
    rerun = threading.Thread(target=cheap_report, args=(target, 7.0))
    rerun.start()
    time.sleep(0.3)
    assert rerun.is_alive() and staging.is_dir()  # waits on the live run's lock; its folder is untouched
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    rerun.join(timeout=20)
    assert not rerun.is_alive()
    assert not staging.exists() and not _leftovers(root)
    assert "14" in (target / "performance.csv").read_text()  # the rerun's report (speedup 2 x 7)


# --- names joined to the report root -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".", ".hidden", "", " ", "a\\b", "x" * 201])
def test_run_refuses_a_name_that_is_not_one_plain_folder(tmp_path, name):
    outcome = run_cli("run", "--report-root", tmp_path / "reports", "--name", name)
    outcome.refused("--name", "one plain folder name")
    assert not (tmp_path / "reports").exists() and not (tmp_path / "escaped").exists()


def test_run_never_replaces_what_is_not_a_report(tmp_path, cheap_report):
    root = tmp_path / "reports"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(NmsimError, match="not an nmsim report"):
        cheap_report(root / "notes")
    (root / "file").write_text("keep me")
    with pytest.raises(NmsimError, match="not a report folder"):
        cheap_report(root / "file")
    assert (root / "notes" / "mine.txt").read_text() == "keep me" and (root / "file").read_text() == "keep me"
    assert not _leftovers(root)
    outcome = run_cli("run", "--report-root", root / "file", "--name", "x")
    outcome.refused("--report-root", "is a file")
