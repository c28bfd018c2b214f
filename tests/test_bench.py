"""``nmsim bench``: every mode through the command line on a tiny case, the shared timing helper, and the defaults
(the full benchmarks)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from nmsim.bench import BenchResult, best_of
from nmsim.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
FORWARD_NAMES = ("dense", "8:16 magnitude none", "8:16 magnitude median-shift", "2:4 magnitude none",
                 "16:32 magnitude none")


def _table(out: str) -> list[BenchResult]:
    """The rows of the table ``nmsim bench`` prints (fixed columns: name, value, unit, ratio)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("benchmark "))
    header = lines[start]
    assert header.rstrip().endswith("value  unit    ratio")
    width = len(header) - len("  " + " " * 10 + "  unit  " + " " * 7)
    rows = []
    for line in lines[start + 1:]:
        if len(line) != len(header):  # a note after the table
            break
        ratio = line[width + 20:].strip()
        rows.append(BenchResult(line[:width].rstrip(), float(line[width + 2:width + 12]),
                                line[width + 14:width + 18].strip(), float(ratio) if ratio else None))
    assert rows, out
    return rows


def _run(capsys, *argv: str) -> tuple[list[BenchResult], str]:
    code = main(["bench", *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    return _table(out), out


def _row(rows: list[BenchResult], name: str) -> BenchResult:
    matches = [r for r in rows if r.name == name]
    assert matches, f"no line {name!r} in {[r.name for r in rows]}"
    return matches[0]


def _assert_positive(rows: list[BenchResult]) -> None:
    for r in rows:
        assert math.isfinite(r.value) and r.value > 0, r
        assert r.ratio is None or (math.isfinite(r.ratio) and r.ratio > 0), r


# --- the timing helper and the defaults ----------------------------------------------------------------------------
def test_best_of_runs_before_ahead_of_each_run_and_keeps_the_best():
    calls = []
    seconds = best_of(lambda: calls.append("work"), 3, before=lambda: calls.append("before"))
    assert calls == ["before", "work"] * 3
    assert 0 <= seconds < 1
    with pytest.raises(ValueError):
        best_of(lambda: None, 0)


def test_bench_package_imports_without_torch():
    code = "import sys, nmsim.bench; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_bench_defaults_are_the_full_benchmarks():
    from nmsim.bench.pipeline_speed import SWEEP, sweep_plan

    args = build_parser().parse_args(["bench"])
    assert args.what == "prune"
    assert (args.seqlen, args.windows, args.learn_windows, args.repeats) == (512, 2, 64, 3)
    assert args.designs is None and args.models is None and args.patterns is None  # every preset, model, pattern
    assert args.sweep_values == 4
    assert sweep_plan(args.sweep_values) == SWEEP and len(SWEEP.points()) == 64
    assert len(sweep_plan(1).points()) == 1


# --- the fast modes --------------------------------------------------------------------------------------------------
def test_bench_simulate_tiny(capsys):
    rows, out = _run(capsys, "simulate", "--repeats", "1", "--designs", "act-8of16,a100-dense",
                     "--models", "smollm2-135m")
    _assert_positive(rows)
    sweep = rows[0]
    assert sweep.name.startswith("sweep smollm2-135m: 2 designs x 6 patterns x prefill S=512 + decode, ")
    assert " model runs, " in sweep.name and sweep.name.endswith(" cores (goal < 2 s)") and sweep.unit == "s"
    assert sweep.ratio == pytest.approx(sweep.value / 2, abs=2e-3)
    assert rows[1].name.startswith("  same sweep in one process") and rows[1].unit == "s"
    assert rows[1].ratio == pytest.approx(rows[1].value / sweep.value, rel=1e-2)
    assert rows[2].name.startswith("  GEMM results per second") and rows[2].unit == "1/s"
    assert rows[3].name.startswith("  GEMM simulations per second") and rows[3].unit == "1/s"
    whole, validate = rows[4], rows[5]  # the mapper at scale: every preset, SmolLM2 and the 7-8B shape presets
    assert whole.name.startswith("whole-model sweep: 5 models x ") and whole.name.endswith("(goal < 10 s)")
    assert whole.ratio == pytest.approx(whole.value / 10, abs=2e-3)
    assert validate.name.startswith("nmsim validate's simulations") and validate.unit == "s"
    for design, pattern in (("act-8of16", "8:16"), ("systolic-32x32-os", "dense")):
        for seq in (128, 512, 2048, 8192):
            prefill = f"prefill smollm2-135m S={seq} on {design}, {pattern} (210 GEMMs, no trace)"
            assert _row(rows, prefill).unit == "ms"
    models = [r for r in rows if r.name.startswith("prefill ") and " S=512 " in r.name]
    assert len(models) == 4  # the sequence growth and the model-size growth (one model) on two designs each
    steps = [r for r in rows if r.name.startswith("  steps simulated of ")]
    assert len(steps) == 10 and all(0 < r.ratio <= 1 for r in steps)
    assert "SCALE-Sim side by side: skipped" in out


def test_bench_report_tiny(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # nmsim run reads the committed tables under reports/
    rows, _ = _run(capsys, "report", "--repeats", "1", "--designs", "act-8of16", "--patterns", "8:16",
                   "--sweep-values", "1")
    _assert_positive(rows)
    assert len(rows) == 3
    report = _row(rows, "report from committed inputs: act-8of16; patterns dense, 8:16, 6 target models end to "
                        "end, tables + figures + md/html (goal ≤ 30 s)")
    assert report.unit == "s" and report.ratio == pytest.approx(report.value / 30, abs=2e-3)
    serial = _row(rows, "sweep act-8of16, 1 points x prefill/decode x 2 batch sizes, 1 process")
    parallel = rows[2]
    assert parallel.name.startswith("  same sweep, ") and parallel.name.endswith(
        " local processes (ratio: serial / parallel)")
    assert parallel.ratio == pytest.approx(serial.value / parallel.value, rel=0.01, abs=2e-3)


# --- the modes that load the real model ------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_prune_tiny(capsys):
    rows, _ = _run(capsys, "prune", "--seqlen", "64", "--windows", "1", "--repeats", "1", "--threads", "1")
    _assert_positive(rows)
    forward = [_row(rows, f"forward {name} (64 tokens)") for name in FORWARD_NAMES]
    assert all(r.unit == "s" and r.ratio is not None for r in forward)
    assert forward[0].ratio == pytest.approx(1.0)
    assert forward[1].ratio == pytest.approx(forward[1].value / forward[0].value, rel=0.01, abs=2e-3)
    assert _row(rows, "model load, cold (GGUF dequantize + cache write)").ratio is None
    assert _row(rows, "model load, cached (safetensors)").ratio is None


@pytest.mark.slow
def test_bench_capture_tiny(capsys):
    rows, _ = _run(capsys, "capture", "--seqlen", "64", "--windows", "1", "--repeats", "1", "--threads", "1")
    _assert_positive(rows)
    assert len(rows) == 6
    for mitigation in ("none", "median-shift"):
        capture = _row(rows, f"capture 8:16 magnitude {mitigation} (64 tokens) vs run without")
        assert capture.unit == "s" and capture.ratio is not None
    bits = [r for r in rows if r.name == "  stored mask bits per activation element (limit 0.875)"]
    assert len(bits) == 2 and all(r.value == pytest.approx(1.0, abs=1e-3) for r in bits)  # bit-packed
    assert sum(r.name == "  trace bytes per token (masks, scalars, headers)" for r in rows) == 2


@pytest.mark.slow
def test_bench_calibrate_tiny(capsys):
    rows, _ = _run(capsys, "calibrate", "--seqlen", "64", "--learn-windows", "1", "--threads", "1")
    assert all(math.isfinite(r.value) for r in rows)
    total = _row(rows, "learnable calibration smollm2-135m 8:16, 1 windows x 64, 1 steps/block")
    per_block = _row(rows, "  per block (30 blocks)")
    assert total.value > 0 and per_block.value == pytest.approx(total.value / 30, abs=2e-3)
    assert 0 <= _row(rows, "  blocks whose held-out MSE fell").value <= 30
    assert _row(rows, "  mean held-out MSE reduction").unit == "%"


def test_bench_profile_tiny(capsys):
    rows, _ = _run(capsys, "profile", "--repeats", "1")
    _assert_positive(rows)
    fit, with_trace, with_profile = rows
    assert fit.name.startswith("fit the mask model to smollm2-135m_8of16_magnitude_none (240 inputs; goal < 30 s)")
    assert fit.ratio == pytest.approx(fit.value / 30, abs=2e-3)
    assert "measured trace" in with_trace.name and with_profile.name.startswith("  same with a transplanted profile")
    assert with_profile.ratio == pytest.approx(with_profile.value / with_trace.value, rel=0.02)
