"""The measured estimator's code path: its operand is a real 2:4 activation, and without a GPU it says why."""

import pytest
import torch

from nmsim.sim import measured
from nmsim.sim.workload import Gemm


def test_sparse_activation_keeps_two_of_every_four_along_k():
    activation = measured.sparse_activation(64, 128, seed=3)
    assert activation.dtype == torch.float16
    kept = (activation != 0).reshape(64, 32, 4).sum(-1)
    assert torch.equal(kept, torch.full_like(kept, 2))
    assert torch.equal(activation, measured.sparse_activation(64, 128, seed=3))  # seeded


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_without_a_gpu_the_estimator_says_why():
    reason = measured.unavailable_reason()
    assert reason is not None and "CUDA" in reason
    with pytest.raises(RuntimeError, match="no CUDA device"):
        measured.measure_gemm(Gemm(0, "q", "prefill", 128, 576, 576))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (Ampere or newer)")
def test_measured_speedup_on_a_gpu():
    result = measured.measure_gemm(Gemm(0, "gate", "prefill", 4096, 4096, 4096))
    assert result.padded_shape == (4096, 4096, 4096)
    assert 0.3 < result.speedup < 2.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_cli_measure_without_a_gpu_leaves_the_column_empty_and_says_why(capsys):
    from nmsim.cli import main

    assert main(["simulate", "--hw", "act-2of4", "--model", "smollm2-135m", "--measure", "--seq", "64"]) == 0
    assert "measured column: no CUDA device" in capsys.readouterr().out
