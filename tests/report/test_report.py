"""The trade-off report from a small fixture: files, columns, sanity relations, determinism, clear failures."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from nmsim.accuracy.study import COLUMNS
from nmsim.cli import main
from nmsim.errors import NmsimError
from nmsim.pipeline import RunRequest
from nmsim.pipeline import run as build_report
from nmsim.report.pareto import pareto_front
from nmsim.registry import TRACE_ROOT

DESIGNS = ("a100-dense", "act-2of4", "act-8of16", "act-16of32", "act-hierarchical", "nvidia-2of4")
PATTERNS = ("dense", "2:4", "8:16", "16:32")
ACCURACY = [  # (pattern, operand, criterion, mitigation, perplexity): a made-up but ordered fixture
    ("dense", "-", "-", "-", 30.0),
    ("2:4", "activation", "magnitude", "none", 120.0),
    ("2:4", "activation", "amber", "variance", 100.0),
    ("8:16", "activation", "magnitude", "none", 60.0),
    ("16:32", "activation", "magnitude", "none", 55.0),
    ("2:4", "weight", "wanda", "none", 170.0),
]
TRADEOFF_COLUMNS = {"design", "pattern", "operand", "method", "perplexity", "delta_pct_vs_dense", "area_overhead_pct",
                    "area_mm2", "prefill_speedup", "prefill_roofline_speedup", "decode_b1_speedup",
                    "decode_b4_speedup", "decode_b16_speedup", "decode_b64_speedup",
                    "prefill_offchip_bytes_vs_dense", "prefill_energy_vs_dense", "decode_b1_energy_vs_dense",
                    "pareto_area", "pareto_speedup",
                    "source"}
FIGURES = ("accuracy_vs_area", "accuracy_vs_speedup", "speedup_by_pattern", "bytes_per_level", "area_breakdown",
           "layer_heatmap", "decode_weight_fetch", "sensitivity_8of16_vs_16of32", "validation")


def _accuracy_table(path: Path) -> Path:
    rows = [{"model": "smollm2-135m", "pattern": pattern, "density": 1.0 if pattern == "dense" else 0.5,
             "operand": operand, "criterion": criterion, "mitigation": mitigation,
             "targets": "-" if pattern == "dense" else "all", "seqlen_tokens": 512, "tokens_evaluated": 2044,
             "perplexity": ppl, "data": "fixture", "dtype": "float32"}
            for pattern, operand, criterion, mitigation, ppl in ACCURACY]
    dense = next(row["perplexity"] for row in rows if row["pattern"] == "dense")
    for row in rows:  # the deltas a real table carries (the reader checks them against the perplexities)
        row["delta_ppl_vs_dense"] = round(row["perplexity"] - dense, 4)
        row["delta_pct_vs_dense"] = round(100 * (row["perplexity"] / dense - 1), 2)
    pd.DataFrame(rows, columns=[c for c in COLUMNS if c in rows[0]]).to_csv(path, index=False)
    return path


def _request(tmp: Path, **changes) -> RunRequest:
    settings = {"name": "fixture", "designs": DESIGNS, "accuracy": (_accuracy_table(tmp / "acc.csv"),),
                "patterns": PATTERNS, "out_root": tmp / "reports", "command": "pytest", "target_models": ()}
    return RunRequest(**{**settings, **changes})


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[RunRequest, Path]:
    request = _request(tmp_path_factory.mktemp("report"))
    return request, build_report(request)


@pytest.fixture(scope="module")
def report(built) -> Path:
    return built[1]


def test_every_file_exists_and_every_figure_is_a_valid_image(report):
    for name in FIGURES:
        image = matplotlib.image.imread(report / "figures" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        root = ET.parse(report / "figures" / f"{name}.svg").getroot()
        assert root.tag.endswith("svg")
    for name in ("tradeoff", "performance", "accuracy", "area_summary", "area_components", "io_formats",
                 "decode_fetch", "layers", "sensitivity", "break_even", "inputs"):
        csv = pd.read_csv(report / f"{name}.csv")
        assert csv.shape == pd.read_parquet(report / f"{name}.parquet").shape and len(csv)
    markdown = (report / "report.md").read_text()
    assert "## Conclusion" in markdown and "8:16 vs 16:32" in markdown and "Hierarchical composition" in markdown
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES) and "<table>" in html


def test_tables_have_the_documented_columns_and_sane_values(report):
    trade = pd.read_csv(report / "tradeoff.csv")
    assert TRADEOFF_COLUMNS <= set(trade.columns)
    dense = trade[trade.pattern == "dense"]
    assert list(dense.design) == ["a100-dense"]
    assert (dense.prefill_speedup == 1.0).all() and (dense.area_overhead_pct == 0.0).all()
    assert dense.perplexity.iloc[0] == 30.0
    # the best activation method per pattern, and the weight row for the weight-sparse design
    row = trade.set_index(["design", "pattern"])
    assert row.loc[("act-2of4", "2:4"), "perplexity"] == 100.0
    assert row.loc[("act-2of4", "2:4"), "method"] == "amber + variance"
    assert row.loc[("nvidia-2of4", "2:4"), "perplexity"] == 170.0
    perf = pd.read_csv(report / "performance.csv")
    assert (perf[perf.pattern == "dense"].speedup_vs_dense_same_design == 1.0).all()
    assert set(perf.batch[perf.phase == "decode"]) == {1, 4, 16, 64}
    area = pd.read_csv(report / "area_summary.csv").set_index("design")
    assert area.loc["a100-dense", "area_overhead_pct"] == 0.0
    assert area.loc["act-2of4", "area_overhead_pct"] < area.loc["act-8of16", "area_overhead_pct"] \
        < area.loc["act-16of32", "area_overhead_pct"]
    fetch = pd.read_csv(report / "decode_fetch.csv")
    sparse = fetch[fetch.pattern == "8:16"].sort_values("batch_tokens")
    assert sparse.weight_rows_fraction.iloc[0] == pytest.approx(0.5)
    assert sparse.weight_rows_fraction.is_monotonic_increasing
    io = pd.read_csv(report / "io_formats.csv").set_index(["pattern", "metadata_format"])
    assert io.loc[("8:16", "bitmask"), "activation_bytes_vs_dense"] == pytest.approx((8 * 16 + 16) / (16 * 16))
    inputs = pd.read_csv(report / "inputs.csv")
    assert set(inputs.kind) >= {"nmsim", "design", "trace", "accuracy", "calibration", "timing"}
    assert inputs.sha256.str.len().ge(5).all()


def test_pareto_points_are_not_dominated(report):
    trade = pd.read_csv(report / "tradeoff.csv")
    for flag, x, sign, pool in (("pareto_speedup", "prefill_speedup", -1, trade),
                                ("pareto_area", "area_overhead_pct", 1, trade[trade.pattern != "dense"])):
        for point in pool[pool[flag]].itertuples():
            better = pool[(pool.perplexity <= point.perplexity) & (sign * pool[x] <= sign * getattr(point, x))
                          & ((pool.perplexity < point.perplexity) | (pool[x] != getattr(point, x)))]
            assert better.empty, (flag, point.design, point.pattern)
        assert (~pool[flag]).any() and pool[flag].any()


def test_pareto_front_on_a_hand_example():
    table = pd.DataFrame({"ppl": [1, 2, 3, 2, 1], "cost": [5, 2, 1, 3, 5]})
    assert pareto_front(table, minimize=["ppl", "cost"]) == [True, True, True, False, True]


def test_two_runs_give_byte_identical_files(built, tmp_path):
    request, report = built
    again = build_report(dataclasses.replace(request, out_root=tmp_path))
    assert _digests(again) == _digests(report)


def test_a_failed_run_leaves_the_previous_report_whole(tmp_path):
    first = build_report(_request(tmp_path))
    before = _digests(first)
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path("hw_configs/act-8of16.yaml").read_text().replace("selector_groups", "selector_groupz"))
    with pytest.raises(NmsimError, match=r"bad.yaml:\d+: sparsity.selector_groupz_per_cycle: unknown key"):
        build_report(_request(tmp_path, designs=(*DESIGNS, str(bad))))
    assert _digests(first) == before
    left = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert left == [".fixture.lock", "fixture"]  # no staging folder; the lock file of the report stays (flock)
    twin = tmp_path / "twin.yaml"
    twin.write_text("base: act-8of16\n")
    with pytest.raises(NmsimError, match=r"two designs are named 'act-8of16'"):
        build_report(_request(tmp_path, designs=(*DESIGNS, str(twin))))


def test_a_corrupted_trace_is_named(tmp_path):
    root = tmp_path / "traces"
    shutil.copytree(TRACE_ROOT / "smollm2-135m_8of16_magnitude_none", root / "smollm2-135m_8of16_magnitude_none")
    inputs = root / "smollm2-135m_8of16_magnitude_none" / "stats" / "inputs.csv"
    inputs.write_text(inputs.read_text().replace("0.5,", "7.5,", 1))
    with pytest.raises(NmsimError, match="smollm2-135m_8of16_magnitude_none: corrupted statistics"):
        build_report(_request(tmp_path, trace_root=root))


def test_a_missing_trace_stops_the_run_unless_the_ideal_answer_is_asked_for(tmp_path):
    root = tmp_path / "traces"
    shutil.copytree(TRACE_ROOT / "smollm2-135m_2of4_magnitude_none", root / "smollm2-135m_2of4_magnitude_none")
    request = _request(tmp_path, designs=("act-2of4", "act-8of16"), patterns=("dense", "2:4", "8:16"),
                       trace_root=root)
    with pytest.raises(NmsimError, match=r"no mask statistics for smollm2-135m at 8:16: no committed trace .*"
                                         r"smollm2-135m_8of16_magnitude_none.*nmsim traces build --model MODEL "
                                         r"--pattern 8:16"):
        build_report(request)
    assert not (tmp_path / "reports" / "fixture").exists()
    report = build_report(dataclasses.replace(request, allow_ideal=True))
    performance = pd.read_csv(report / "performance.csv")
    assert set(performance[performance.pattern == "8:16"].trace) == {"ideal"}
    assert set(performance[performance.pattern == "8:16"].statistics) == {"ideal"}
    assert set(performance[performance.pattern == "2:4"].trace) == {"smollm2-135m_2of4_magnitude_none"}
    trade = pd.read_csv(report / "tradeoff.csv")  # no dense design was given: the dense baseline joins as reference
    assert trade[trade.pattern == "dense"].design.tolist() == ["a100-dense"]


def test_a_pattern_no_design_supports_is_refused(tmp_path):
    with pytest.raises(NmsimError, match="pattern 4:8: none of the designs"):
        build_report(_request(tmp_path, designs=("a100-dense", "act-8of16"), patterns=("dense", "4:8", "8:16")))


def test_cli_reports_a_bad_design_with_exit_status_2(tmp_path, capsys):
    status = main(["run", "--designs", "no-such-design", "--report-root", str(tmp_path),
                   "--out", str(_accuracy_table(tmp_path / "acc.csv").with_suffix("")), "--patterns", "2:4",
                   "--mitigations", "none,median-shift,variance", "--accuracy"])
    assert status == 2
    assert "no-such-design" in capsys.readouterr().err
