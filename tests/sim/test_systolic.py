"""Dense systolic cycles equal SCALE-Sim 3.0.0's on every pinned GEMM, array shape and dataflow."""

import json
from pathlib import Path

import pytest

from nmsim.errors import NmsimError
from nmsim.sim.systolic import dense_systolic_cycles

GOLDEN = json.loads((Path(__file__).with_name("scalesim_golden.json")).read_text())["cases"]


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"{c['dataflow']}-{c['rows']}x{c['cols']}-"
                                                      f"{c['m']}x{c['k']}x{c['n']}")
def test_dense_cycles_equal_scalesim(case):
    assert case["stall_cycles"] == 0
    cycles = dense_systolic_cycles(case["m"], case["k"], case["n"], case["rows"], case["cols"], case["dataflow"])
    assert cycles.total_cycles == case["total_cycles"]


def test_the_issue_anchor_and_the_fold_structure():
    cycles = dense_systolic_cycles(128, 576, 1536, 32, 32, "os")
    assert (cycles.folds, cycles.cycles_per_fold, cycles.total_cycles) == (4 * 48, 32 + 32 + 576 - 2, 122_495)
    assert cycles.utilization == pytest.approx(128 * 576 * 1536 / (122_495 * 32 * 32))
    ws = dense_systolic_cycles(128, 1024, 1024, 128, 128, "ws")  # hw_reference.md: 64 folds x 510 - 1
    assert ws.total_cycles == 32_639


def test_bad_dataflow_or_shape():
    with pytest.raises(NmsimError, match="dataflow 'rs'"):
        dense_systolic_cycles(8, 8, 8, 4, 4, "rs")
    with pytest.raises(NmsimError, match="at least 1"):
        dense_systolic_cycles(0, 8, 8, 4, 4, "os")
