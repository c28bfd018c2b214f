"""The accuracy study: perplexity of a real model for a grid of pruning methods, as one tidy table.

Rows are written to disk (CSV, Markdown and optional JSON, atomically) as each finishes; a rerun of the same
grid skips rows already in the CSV, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numba
import pandas as pd
import torch
from tqdm.auto import tqdm

from nmsim import __version__
from nmsim.errors import NmsimError
from nmsim.io import atomic_write_text
from nmsim.llm.data import evaluation_windows, load_split
from nmsim.llm.models import DEFAULT_MODEL, load_model
from nmsim.llm.perplexity import perplexity
from nmsim.patterns import Pattern, parse_pattern
from nmsim.sparsify.calibration import load_or_calibrate
from nmsim.sparsify.criteria import get_criterion
from nmsim.sparsify.engine import SparsityConfig, sparsified
from nmsim.sparsify.learnable import LearnRecipe, load_or_train
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.targets import TargetSpec, make_targets
from nmsim.sparsify.weight_pruning import WeightPruningConfig, weight_pruned

log = logging.getLogger(__name__)

COLUMNS = [
    "model",
    "pattern",
    "density",
    "operand",
    "criterion",
    "mitigation",
    "targets",
    "seqlen_tokens",
    "tokens_evaluated",
    "perplexity",
    "delta_ppl_vs_dense",
    "delta_pct_vs_dense",
    "data",
]
KEY_COLUMNS = ["model", "pattern", "operand", "criterion", "mitigation", "targets", "seqlen_tokens", "tokens_evaluated",
               "data"]
NOT_APPLICABLE = "-"  # operand, criterion, mitigation and targets of the dense row

# The main job's grid (`nmsim run`): every headline pattern, the simplest criterion, each training-free fix.
DEFAULT_STUDY = {
    "patterns": ["2:4", "4:8", "8:16", "16:32", "unstructured:0.5"],
    "criteria": ["magnitude"],
    "mitigations": ["none", "median-shift", "variance"],
    "targets": ["all"],
    "max_tokens": 16384,
}


@dataclass(frozen=True)
class StudySettings:
    """Everything about an evaluation that is not the pruning method."""

    model: str = DEFAULT_MODEL
    data_dir: str | None = None
    seqlen: int = 512
    max_tokens: int | None = None  # None: the whole test split
    batch_size: int = 1
    calibration_windows: int = 16
    calibration_seed: int = 42
    learn_recipe: LearnRecipe = field(default_factory=LearnRecipe)  # for learnable mitigations


Method = SparsityConfig | WeightPruningConfig


def build_grid(
    patterns: list[str],
    criteria: list[str],
    mitigations: list[str],
    targets: list[TargetSpec],
    weight_patterns: list[str] = (),
    weight_methods: list[str] = (),
) -> list[Method]:
    """Dense first, then every activation pattern × criterion × mitigation × targets, then every weight pattern ×
    weight method × targets (no duplicates)."""
    grid: list[Method] = [SparsityConfig(Pattern.dense())]
    parsed = [parse_pattern(p) for p in patterns]
    for pattern, criterion, mitigation, target in itertools.product(parsed, criteria, mitigations, targets):
        if pattern.kind == "dense":
            continue
        config = SparsityConfig(pattern, criterion, parse_mitigation(mitigation), target)
        if config not in grid:
            grid.append(config)
    for pattern, method, target in itertools.product(map(parse_pattern, weight_patterns), weight_methods, targets):
        config = WeightPruningConfig(pattern, method, target)
        if config not in grid:
            grid.append(config)
    return grid


def row_labels(config: Method) -> dict[str, object]:
    """The method columns of a table row."""
    dense = config.pattern.kind == "dense"
    weight = isinstance(config, WeightPruningConfig)
    return {
        "pattern": str(config.pattern),
        "density": round(config.pattern.density, 6),
        "operand": NOT_APPLICABLE if dense else ("weight" if weight else "activation"),
        "criterion": NOT_APPLICABLE if dense else (config.method if weight else config.criterion),
        "mitigation": NOT_APPLICABLE if dense else ("none" if weight else str(config.mitigation)),
        "targets": NOT_APPLICABLE if dense else str(config.targets),
    }


def _with_deltas(rows: list[dict]) -> pd.DataFrame:
    """Attach Δ vs the dense row of the same model, seqlen, token count and data."""
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("delta_ppl_vs_dense", "delta_pct_vs_dense")])
    same = ["model", "seqlen_tokens", "tokens_evaluated", "data"]
    dense = table[table["pattern"] == "dense"].set_index(same)["perplexity"]
    base = table.set_index(same).index.map(lambda key: dense.get(key, math.nan))
    table["delta_ppl_vs_dense"] = (table["perplexity"] - base.to_numpy()).round(4)
    table["delta_pct_vs_dense"] = (100 * (table["perplexity"] / base.to_numpy() - 1)).round(2)
    return table[COLUMNS]


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_tables(rows: list[dict], out_prefix: Path, json_path: Path | None, meta: dict) -> pd.DataFrame:
    """Write ``<prefix>.csv`` and ``<prefix>.md`` (and JSON if asked) atomically; return the table."""
    table = _with_deltas(rows)
    atomic_write_text(out_prefix.with_suffix(".csv"), table.to_csv(index=False, lineterminator="\n"))
    title = "# Accuracy: WikiText-2 perplexity under N:M activation (and weight) pruning\n\n"
    details = "".join(f"- {k}: {v}\n" for k, v in meta.items())
    atomic_write_text(out_prefix.with_suffix(".md"), title + details + "\n" + _markdown(table))
    if json_path is not None:
        payload = {"meta": meta, "rows": json.loads(table.to_json(orient="records"))}
        atomic_write_text(json_path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return table


def read_rows(csv_path: Path) -> list[dict]:
    """Rows already finished (from a previous, possibly interrupted run)."""
    if not csv_path.exists():
        return []
    try:
        table = pd.read_csv(csv_path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise NmsimError(f"{csv_path}: cannot read the existing results table ({exc}); move it away to start over")
    if "operand" not in table.columns and "pattern" in table.columns:  # written before weight baselines existed
        table.insert(3, "operand", [NOT_APPLICABLE if p == "dense" else "activation" for p in table["pattern"]])
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise NmsimError(f"{csv_path}: not an nmsim accuracy table (missing columns {', '.join(missing)})")
    return table[[c for c in COLUMNS if not c.startswith("delta_")]].to_dict("records")


def _row_key(row: dict) -> tuple:
    return tuple(str(row[c]) for c in KEY_COLUMNS)


@contextmanager
def _pruned(lm, config: Method, settings: StudySettings, stats):
    """The model pruned as ``config`` says, for one evaluation (activation and weight rows share everything else)."""
    if isinstance(config, WeightPruningConfig):
        with weight_pruned(lm.model, config, stats):
            yield
        return
    learned = None
    if config.needs_training:
        learned = load_or_train(lm, config, settings.learn_recipe, data_dir=settings.data_dir, input_stats=stats)
    with sparsified(lm.model, config, stats, learned=learned, fold=True):
        yield


def _needs_input_stats(config: Method) -> bool:
    return config.needs_calibration or (isinstance(config, SparsityConfig) and config.needs_training
                                        and get_criterion(config.criterion).needs_calibration)


def run_study(
    grid: list[Method],
    settings: StudySettings,
    out_prefix: Path,
    json_path: Path | None = None,
    recompute: bool = False,
    command: str = "",
) -> pd.DataFrame:
    """Evaluate every configuration of ``grid`` not yet in ``<out_prefix>.csv``; return the full table.

    recompute: ignore rows already on disk and evaluate everything again (the table is rewritten row by row).
    """
    out_prefix = Path(out_prefix)
    split = load_split("test", settings.data_dir)
    rows = [] if recompute else read_rows(out_prefix.with_suffix(".csv"))
    lm = load_model(settings.model)
    windows = evaluation_windows(lm.token_ids(split), settings.seqlen, bos_id=lm.window_bos,
                                 max_tokens=settings.max_tokens)
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    meta = {
        "model": f"{lm.name} ({lm.source})",
        "data": f"{split.name} (sha256 of joined text {split.sha256})",
        "windows": f"{windows.shape[0]} x {settings.seqlen} tokens, BOS per window: {lm.bos_per_window}",
        "tokens_evaluated": tokens,
        "nmsim": __version__,
    }
    if any(isinstance(c, SparsityConfig) and c.needs_training for c in grid):
        recipe = settings.learn_recipe
        meta["learnable recipe"] = (f"{recipe.windows} calibration windows x {recipe.seqlen} tokens, "
                                    f"{recipe.steps_per_block} steps per block, lr {recipe.lr:g}, AdamW betas "
                                    f"({recipe.beta1}, {recipe.beta2}), {recipe.warmup_fraction:.0%} warm-up, clip "
                                    f"{recipe.clip_norm:g} (the paper: 256 windows x 512, one epoch)")
    if command:
        meta["command"] = command
    common = {"model": lm.name, "seqlen_tokens": settings.seqlen, "tokens_evaluated": tokens, "data": split.name}
    done = {_row_key(r) for r in rows}
    stats = None
    for index, config in enumerate(tqdm(grid, desc="accuracy grid", unit="row")):
        row = {**common, **row_labels(config)}
        label = (f"[{index + 1}/{len(grid)}] {row['operand']} {row['pattern']} {row['criterion']} {row['mitigation']} "
                 f"{row['targets']}")
        if _row_key(row) in done:
            log.info("%s: already done, skipped", label)
            continue
        if _needs_input_stats(config) and stats is None:
            stats = load_or_calibrate(lm, settings.data_dir, settings.seqlen, settings.calibration_windows,
                                      settings.calibration_seed)
        with _pruned(lm, config, settings, stats), tqdm(
                total=len(windows), desc=f"{row['operand']} {row['pattern']} {row['criterion']} {row['mitigation']}",
                unit="window", leave=False) as bar:
            result = perplexity(lm.model, windows, batch_size=settings.batch_size, on_batch=bar.update)
        row["perplexity"] = round(result.perplexity, 4)
        rows.append(row)
        done.add(_row_key(row))
        write_tables(rows, out_prefix, json_path, meta)
        log.info("%s: perplexity %.4f", label, row["perplexity"])
    return write_tables(rows, out_prefix, json_path, meta)


def targets_from_args(presets: list[str], layers: str | None, exclude_layers: str | None, prefill_only: bool):
    """TargetSpecs for each preset, with the same layer filters and phase."""
    phase = "prefill" if prefill_only else "all"
    return [make_targets(p, layers=layers, exclude_layers=exclude_layers, phase=phase) for p in presets]


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch and the selection kernel (default: all cores)."""
    if threads is not None:
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
