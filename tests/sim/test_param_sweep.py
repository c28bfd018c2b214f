"""Parameter sweeps: the file format, the grid, and the same table serially, on local processes and on Dask."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.hw.spec import AcceleratorSpec
from nmsim.yaml_io import ConfigError
from nmsim.sim.param_sweep import load_sweep, run_sweep

SWEEP = """\
design: act-8of16
parameters:
  memory[0].bandwidth_GBps: [800, 3110]
  sparsity.selector_groups_per_cycle: [4, 16]
phases: [prefill, decode]
batch_sizes: [1, 4]
seq_tokens: 128
"""


def _file(tmp_path: Path, text: str = SWEEP) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_the_grid_is_the_product_in_file_order(tmp_path):
    plan = load_sweep(_file(tmp_path))
    assert plan.points() == [
        {"memory[0].bandwidth_GBps": 800, "sparsity.selector_groups_per_cycle": 4},
        {"memory[0].bandwidth_GBps": 800, "sparsity.selector_groups_per_cycle": 16},
        {"memory[0].bandwidth_GBps": 3110, "sparsity.selector_groups_per_cycle": 4},
        {"memory[0].bandwidth_GBps": 3110, "sparsity.selector_groups_per_cycle": 16},
    ]
    spec = AcceleratorSpec.from_name("act-8of16", plan.points()[-1])
    assert spec.memory[0].bandwidth_GBps == 3110 and spec.sparsity.selector_groups_per_cycle == 16


@pytest.mark.parametrize(("text", "message"), [
    (SWEEP + "batch: 2\n", r"sweep.yaml:\d+: batch: unknown key; did you mean 'batch_sizes'"),
    (SWEEP.replace("design: act-8of16\n", ""), "missing required key"),
    (SWEEP.replace("[800, 3110]", "800"), r"parameters.memory\[0\].bandwidth_GBps: expected a non-empty list"),
    (SWEEP + "phases2: x\n", "unknown key"),
    (SWEEP.replace("phases: [prefill, decode]", "phases: [prefill, train]"), "allowed: prefill, decode"),
])
def test_bad_sweep_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(_file(tmp_path, text))


def test_bad_points_and_unsupported_patterns_stop_before_any_work(tmp_path):
    bad_path = SWEEP.replace("memory[0].bandwidth_GBps", "memory[0].bandwidth")
    with pytest.raises(NmsimError, match=r"point .*memory\[0\]\.bandwidth: unknown key; did you mean 'bandwidth_GBps'"):
        run_sweep(load_sweep(_file(tmp_path, bad_path)), workers=1)
    bad_value = SWEEP.replace("[800, 3110]", "[800, -1]")
    with pytest.raises(NmsimError, match="bandwidth_GBps: -1.0 is below the minimum"):
        run_sweep(load_sweep(_file(tmp_path, bad_value)), workers=1)
    unsupported = SWEEP + "patterns: [dense, 2:4]\n"
    with pytest.raises(NmsimError, match="does not support 2:4"):
        run_sweep(load_sweep(_file(tmp_path, unsupported)), workers=1)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> pd.DataFrame:
    return run_sweep(load_sweep(_file(tmp_path_factory.mktemp("sweep"))), workers=1)


def test_rows_follow_the_grid_and_parameters_take_effect(serial):
    assert len(serial) == 4 * 2 * 2 * 2  # points x (dense, 8:16) x phases x batch sizes
    assert list(serial.columns[:3]) == ["point", "memory[0].bandwidth_GBps", "sparsity.selector_groups_per_cycle"]
    assert list(serial.point) == sorted(serial.point)
    sparse = serial[(serial.pattern == "8:16") & (serial.phase == "decode") & (serial.batch == 1)]
    slow, fast = sparse[sparse["memory[0].bandwidth_GBps"] == 800], sparse[sparse["memory[0].bandwidth_GBps"] == 3110]
    assert (slow.time_us.to_numpy() > fast.time_us.to_numpy()).all()  # decode is bandwidth bound
    area = sparse.groupby("sparsity.selector_groups_per_cycle").area_overhead_pct.first()
    assert area[4] < area[16]  # a faster selector costs area
    assert (serial[serial.pattern == "dense"].speedup_vs_dense_same_design == 1.0).all()


def test_local_processes_give_the_serial_table(serial, tmp_path):
    assert run_sweep(load_sweep(_file(tmp_path)), workers=2).equals(serial)


def test_a_dask_cluster_gives_the_serial_table(serial, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        table = run_sweep(load_sweep(_file(tmp_path)), scheduler=cluster.scheduler_address)
    assert table.equals(serial)


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    with pytest.raises(NmsimError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_sweep(load_sweep(_file(tmp_path)), scheduler="tcp://127.0.0.1:9")


def test_cli_writes_one_table(tmp_path, serial):
    out = tmp_path / "out" / "grid"
    assert main(["sweep", str(_file(tmp_path)), "--workers", "1", "--out", str(out)]) == 0
    written = pd.read_parquet(out.with_suffix(".parquet"))
    assert written.shape == serial.shape
    assert len(pd.read_csv(out.with_suffix(".csv"))) == len(serial)
