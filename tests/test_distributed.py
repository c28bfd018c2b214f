"""The accuracy grid on Dask workers: the same table as a serial run, written as rows finish, and resumable."""

import logging

import pytest

from nmsim.accuracy.fidelity import GreedySettings
from nmsim.accuracy.study import StudySettings, build_grid, run_study
from nmsim.cli import main
from nmsim.sparsify.targets import make_targets


@pytest.mark.slow
def test_a_grid_on_two_local_dask_workers_equals_a_serial_run_and_resumes(tmp_path, caplog):
    """Two worker processes, each loading the embedded model once; an interrupted run (here: one that stopped
    after the first two rows) resumes from its table like a local one, and the finished files are byte for byte
    the serial run's (table, Markdown, per-window sidecar)."""
    grid = build_grid(["2:4", "8:16"], ["magnitude"], ["none"], [make_targets("all")])
    # 2 windows of 128 tokens; a small greedy set (the metric, not its size, is under test here)
    settings = StudySettings(seqlen=128, max_tokens=256, greedy=GreedySettings(prompts=2, prompt_tokens=32, tokens=4))
    serial = run_study(grid, settings, tmp_path / "serial")
    run_study(grid[:2], settings, tmp_path / "spread", workers=2)
    with caplog.at_level(logging.INFO, logger="nmsim.accuracy.study"):
        spread = run_study(grid, settings, tmp_path / "spread", workers=2)
    assert sum("already done, skipped" in r.message for r in caplog.records) == 2  # dense and 2:4 magnitude
    assert len(spread) == len(grid) == 3 and spread.kl_mean_nats.iloc[1:].gt(0).all()
    for suffix in (".csv", ".windows.csv"):
        assert (tmp_path / f"spread{suffix}").read_bytes() == (tmp_path / f"serial{suffix}").read_bytes(), suffix
    markdown = (tmp_path / "spread.md").read_text().replace("spread.windows.csv", "serial.windows.csv")
    assert markdown == (tmp_path / "serial.md").read_text()  # the header names its own sidecar
    assert serial.equals(spread)


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path, capsys):
    assert main(["eval", "--patterns", "2:4", "--max-tokens", "1024", "--scheduler", "no-such-scheme://x",
                 "--out", str(tmp_path / "t")]) == 2
    assert "cannot reach the Dask scheduler at no-such-scheme://x" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
