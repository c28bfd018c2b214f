"""The accuracy study: perplexity of a real model for a grid of pruning methods, as one tidy table
(:mod:`nmsim.accuracy.table`).

Rows are written to disk (CSV, Markdown and optional JSON, atomically) as each finishes; a rerun of the same
grid skips rows already in the CSV, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numba
import pandas as pd
import torch
from tqdm.auto import tqdm

from nmsim import __version__
from nmsim.errors import NmsimError
from nmsim.accuracy.table import (COLUMNS, KEY_COLUMNS, NOT_APPLICABLE, method_labels, read_rows,  # noqa: F401
                                  row_key, write_tables)
from nmsim.llm.data import evaluation_windows, load_split
from nmsim.llm.device import describe_placement, parse_dtype
from nmsim.llm.models import load_model
from nmsim.llm.perplexity import perplexity
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import DEFAULT_MODEL
from nmsim.sparsify.input_stats import load_or_calibrate
from nmsim.sparsify.criteria import get_criterion
from nmsim.sparsify.linear import SparsityConfig, sparsified
from nmsim.sparsify.learnable import LearnRecipe, load_or_train
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.targets import TargetSpec, make_targets
from nmsim.sparsify.weight_pruning import WeightPruningConfig, weight_pruned

log = logging.getLogger(__name__)

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
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (nmsim.llm.device); not part of a row's key
    dtype: str = "float32"  # float32, bfloat16 or float16: a column of every row, one per table


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
    if isinstance(config, WeightPruningConfig):
        return method_labels(config.pattern, "weight", config.method, "none", str(config.targets))
    return method_labels(config.pattern, "activation", config.criterion, str(config.mitigation), str(config.targets))


@contextmanager
def pruned(lm, config: Method, settings: StudySettings, stats):
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


def needs_input_stats(config: Method) -> bool:
    """Whether ``config`` (or the training of its learnable parameters) reads calibration statistics."""
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
    dtype = parse_dtype(settings.dtype)
    rows = [] if recompute else read_rows(out_prefix.with_suffix(".csv"))
    _check_settings(rows, {"seqlen_tokens": settings.seqlen, "data": split.name, "dtype": settings.dtype},
                    out_prefix.with_suffix(".csv"))
    lm = load_model(settings.model, dtype=dtype, device=settings.device)
    windows = evaluation_windows(lm.token_ids(split), settings.seqlen, bos_id=lm.window_bos,
                                 max_tokens=settings.max_tokens)
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    meta = {
        "model": f"{lm.name} ({lm.source})",
        "data": f"{split.name} (sha256 of joined text {split.sha256})",
        "windows": f"{windows.shape[0]} x {settings.seqlen} tokens, BOS per window: {lm.bos_per_window}",
        "tokens_evaluated": tokens,
        "dtype": settings.dtype,
        "device": describe_placement(lm.model),
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
    common = {"model": lm.name, "seqlen_tokens": settings.seqlen, "tokens_evaluated": tokens, "data": split.name,
              "dtype": settings.dtype}
    _check_settings(rows, common, out_prefix.with_suffix(".csv"))
    done = {row_key(r) for r in rows}
    stats = None
    for index, config in enumerate(tqdm(grid, desc="accuracy grid", unit="row")):
        row = {**common, **row_labels(config)}
        label = (f"[{index + 1}/{len(grid)}] {row['operand']} {row['pattern']} {row['criterion']} {row['mitigation']} "
                 f"{row['targets']}")
        if row_key(row) in done:
            log.info("%s: already done, skipped", label)
            continue
        if needs_input_stats(config) and stats is None:
            stats = load_or_calibrate(lm, settings.data_dir, settings.seqlen, settings.calibration_windows,
                                      settings.calibration_seed)
        with pruned(lm, config, settings, stats), tqdm(
                total=len(windows), desc=f"{row['operand']} {row['pattern']} {row['criterion']} {row['mitigation']}",
                unit="window", leave=False) as bar:
            result = perplexity(lm.model, windows, batch_size=settings.batch_size, on_batch=bar.update)
        row["perplexity"] = round(result.perplexity, 4)
        rows.append(row)
        done.add(row_key(row))
        write_tables(rows, out_prefix, json_path, meta)
        log.info("%s: perplexity %.4f", label, row["perplexity"])
    return write_tables(rows, out_prefix, json_path, meta)


def _check_settings(rows: list[dict], common: dict[str, object], csv_path: Path) -> None:
    """One table, one setting: refuse to add rows evaluated otherwise (model, window length, tokens, data, dtype) to
    a table whose rows, header and deltas describe another."""
    for row in rows:
        differ = [key for key, value in common.items() if str(row[key]) != str(value)]
        if differ:
            have = ", ".join(f"{key} {row[key]}" for key in differ)
            want = ", ".join(f"{key} {common[key]}" for key in differ)
            raise NmsimError(f"{csv_path}: its rows were evaluated with {have}; this run has {want}. Write these "
                             "rows to another table (--out PREFIX), or pass --recompute to start this one over")


def targets_from_args(presets: list[str], layers: str | None, exclude_layers: str | None, prefill_only: bool):
    """TargetSpecs for each preset, with the same layer filters and phase."""
    phase = "prefill" if prefill_only else "all"
    return [make_targets(p, layers=layers, exclude_layers=exclude_layers, phase=phase) for p in presets]


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch and the selection kernel (default: all cores)."""
    if threads is not None:
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
