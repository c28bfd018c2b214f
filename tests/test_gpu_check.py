"""scripts/gpu_check.sh on the CPU (GPU_CHECK_DEVICE=cpu): the script runs its steps end to end and writes its
summary, so it works the day a GPU is at hand (on the CPU, its "device" answers must equal the CPU's)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_steps_on_the_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "MAX_TOKENS": "512", "NMSIM_PYTHON": sys.executable,
           "BENCH_ARGS": "--windows 1 --repeats 1 --seqlen 128"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "gpu_check.md").read_text()
    assert summary.startswith("# GPU check: no GPU (a smoke run on the CPU)")
    perplexity = (tmp_path / "perplexity.md").read_text().splitlines()[2:]
    assert [line.split(" | ")[0] for line in perplexity] == ["| dense", "| 8:16"]
    assert all(line.split(" | ")[3] == "+0.000" for line in perplexity)  # the "device" fp32 is the CPU fp32
    masks = (tmp_path / "masks.md").read_text().splitlines()[2:]
    assert len(masks) == 5 * 3 * 5 and all(" | True" in line for line in masks)
    bench = (tmp_path / "bench_bf16.txt").read_text()
    assert "forward 8:16 magnitude none (128 tokens, bfloat16 on cpu)" in bench
    assert "model load" not in bench  # --no-load-times: the check times forwards only
    assert "not measured (no CUDA device" in (tmp_path / "measured_2of4.md").read_text()
