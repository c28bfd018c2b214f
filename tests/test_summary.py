"""Headline methods from a finished grid, and the study summary's ratios."""

import pytest

from nmsim.accuracy.study import write_tables
from nmsim.errors import NmsimError
from nmsim.sparsify.linear import SparsityConfig
from nmsim.sparsify.weight_pruning import WeightPruningConfig
from nmsim.accuracy.summary import headline_grid, matched_sparsity, ratio_table, summary_markdown


def _row(pattern, ppl, operand="activation", criterion="magnitude", mitigation="none"):
    dense = pattern == "dense"
    return {"model": "m", "pattern": pattern, "density": 1.0 if dense else 0.5, "operand": "-" if dense else operand,
            "criterion": "-" if dense else criterion, "mitigation": "-" if dense else mitigation,
            "targets": "-" if dense else "all", "seqlen_tokens": 512, "tokens_evaluated": 1022, "perplexity": ppl,
            "data": "d"}


ROWS = [_row("dense", 20.0), _row("2:4", 47.0), _row("2:4", 41.0, mitigation="variance"), _row("8:16", 26.0),
        _row("16:32", 24.0), _row("16:32", 23.0, mitigation="variance"), _row("8:16", 25.0, mitigation="variance"),
        _row("2:4", 60.0, "weight", "magnitude"), _row("2:4", 45.0, "weight", "wanda")]


@pytest.fixture
def table_path(tmp_path):
    write_tables(ROWS, tmp_path / "grid", None, {})
    return tmp_path / "grid.csv"


def test_headline_grid_takes_the_best_activation_method_per_pattern_and_every_weight_row(table_path):
    grid = headline_grid(table_path)
    assert grid[0].pattern.kind == "dense"
    activation = [c for c in grid[1:] if isinstance(c, SparsityConfig)]
    assert [(str(c.pattern), str(c.mitigation)) for c in activation] == [("2:4", "variance"), ("8:16", "variance"),
                                                                         ("16:32", "variance")]
    weights = [c for c in grid if isinstance(c, WeightPruningConfig)]
    assert [c.method for c in weights] == ["magnitude", "wanda"]


def test_ratios_follow_the_seed_definition(table_path):
    import pandas as pd

    ratios = ratio_table(pd.read_csv(table_path)).set_index("mitigation")
    assert ratios.loc["none", "ratio_2:4"] == round((47 - 20) / (24 - 20), 3)
    assert ratios.loc["variance", "ratio_8:16"] == round((25 - 20) / (23 - 20), 3)
    matched = matched_sparsity(pd.read_csv(table_path))
    assert matched.to_dict("records") == [{"pattern": "2:4", "best_activation": "magnitude / variance",
                                           "activation_ppl": 41.0, "best_weight": "wanda", "weight_ppl": 45.0,
                                           "activation_better": True}]


def test_summary_refuses_missing_tables_and_checks_the_claims(table_path, tmp_path):
    recipe = "- learnable recipe: 8 calibration windows x 512 tokens"
    table_path.with_suffix(".md").write_text(f"# header\n\n- windows: 2 x 512 tokens\n{recipe}\n- nmsim: 0\n")
    with pytest.raises(NmsimError, match=r"missing.csv: no such accuracy table"):
        summary_markdown([table_path, tmp_path / "missing.csv"])
    text = summary_markdown([table_path])
    assert f"- windows: 2 x 512 tokens\n{recipe}\n" in text and "- nmsim: 0" not in text
    assert "is 6.75 to 7.00 (median 6.88) over 2 methods" in text  # (47-20)/(24-20) and (41-20)/(23-20)
    assert "With the best method per pattern, the ratio to 16:32 is 7.00 for 2:4, 1.67 for 8:16." in text
    assert "best method per pattern: 7.00 (grid); above the seed's about 2.7" in text.split("## Across the tables")[1]
    assert "At 2:4, the best activation method (magnitude / variance, PPL 41.0) beats the best weight" in text
    assert "grid.csv: m, 1022 test tokens" in text
    with pytest.raises(NmsimError, match="missing.csv: no such accuracy table"):
        headline_grid(tmp_path / "missing.csv")


def test_the_summary_says_which_differences_are_beyond_noise(tmp_path):
    """Per-window NLLs with a shared window effect: 8:16 is uniformly worse than 16:32 on every window (beyond
    noise), the 2:4 weight row differs from the activation row by independent noise around no difference (within)."""
    import math

    import numpy as np
    import pandas as pd

    from nmsim.accuracy.table import window_frame

    rng = np.random.default_rng(0)
    shared = rng.normal(0.0, 0.3, 24)  # [W] how hard each window is, for every row
    means = {("dense", "activation"): 3.0, ("16:32", "activation"): 3.20, ("8:16", "activation"): 3.25,
             ("2:4", "activation"): 3.70, ("2:4", "weight"): 3.70}
    rows, frames = [], []
    for (pattern, operand), mean in means.items():
        noise = rng.normal(0.0, 0.2, 24) if pattern == "2:4" else rng.normal(0.0, 0.002, 24)
        nll = (mean + shared + noise) * 511
        row = _row(pattern, round(math.exp(nll.sum() / (24 * 511)), 4), operand,
                   "wanda" if operand == "weight" else "magnitude")
        rows.append({**row, "tokens_evaluated": 24 * 511})
        frames.append(window_frame(rows[-1], nll, 511))
    write_tables(rows, tmp_path / "grid", None, {}, pd.concat(frames))
    text = summary_markdown([tmp_path / "grid.csv"])
    noise = text.split("### Beyond noise? Paired bootstrap over the windows\n\n")[1].splitlines()
    assert noise[0].startswith("- 8:16 vs 16:32 (best activation method each): Δ perplexity +")
    assert noise[0].endswith("over 24 windows (8:16 activation magnitude / none minus 16:32 activation magnitude / "
                             "none): beyond noise.")
    assert noise[1].startswith("- Activation vs weight pruning at 2:4 (best each): Δ perplexity ")
    assert noise[1].endswith("(2:4 activation magnitude / none minus 2:4 weight wanda / none): within noise.")
    assert text == summary_markdown([tmp_path / "grid.csv"])  # seeded: the same intervals every time
