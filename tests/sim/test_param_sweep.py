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


def test_a_sweep_value_is_checked_like_a_design_number_and_names_the_sweep_line(tmp_path):
    from nmsim.sim.param_sweep import check_sweep

    path = _file(tmp_path, SWEEP.replace("[800, 3110]", "[800, .nan]"))
    with pytest.raises(ConfigError) as info:
        check_sweep(load_sweep(path))
    assert str(info.value).startswith(f"{path}:3: point {{'memory[0].bandwidth_GBps': nan, ")
    assert str(info.value).endswith("parameters.memory[0].bandwidth_GBps: nan is not a finite number (NaN and "
                                    "infinity are not allowed)")
    with pytest.raises(ConfigError, match=r"sweep.yaml:\d+: seq_tokens: expected an integer from 1 to 1,048,576"):
        load_sweep(_file(tmp_path, SWEEP.replace("seq_tokens: 128", f"seq_tokens: {10**12}")))
    with pytest.raises(ConfigError, match=r"batch_sizes: batch sizes must be integers from 1 to 65,536"):
        load_sweep(_file(tmp_path, SWEEP.replace("batch_sizes: [1, 4]", "batch_sizes: [1, 100000]")))


def test_a_sweep_beyond_the_budget_needs_yes_and_says_the_estimate(tmp_path, monkeypatch):
    from nmsim.sim import param_sweep

    plan = load_sweep(_file(tmp_path))  # 4 points x 2 patterns x 2 phases x 2 batch sizes
    cases, seconds = param_sweep.estimate_s(plan, workers=2)
    assert cases == 32 and seconds == pytest.approx(32 * param_sweep.SECONDS_PER_CASE / 2)
    monkeypatch.setattr(param_sweep, "SWEEP_BUDGET_S", 1.0)
    with pytest.raises(NmsimError, match=r"4 points, 32 cases .* estimated 4 s on 2 core\(s\) at 0.25 s per case "
                                         r"\(a documented constant.*above the budget of 1 s; pass --yes"):
        param_sweep.check_sweep(plan, workers=2)
    param_sweep.check_sweep(plan, workers=2, yes=True)
    assert main(["sweep", str(_file(tmp_path)), "--workers", "2", "--out", str(tmp_path / "out")]) == 2


def test_run_checks_every_sweep_point_in_its_inputs_stage(tmp_path, monkeypatch, capsys):
    from nmsim import pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("a stage after inputs ran")

    monkeypatch.setattr(pipeline.tables, "load_accuracy", no_work)
    bad = _file(tmp_path, SWEEP.replace("[4, 16]", "[4, 16.5]"))
    assert main(["run", "--sweep", str(bad), "--report-root", str(tmp_path / "reports")]) == 2
    assert "parameters.sparsity.selector_groups_per_cycle: expected int (a whole count" in capsys.readouterr().err
