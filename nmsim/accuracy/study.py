"""The accuracy study: perplexity of a real model for a grid of pruning methods, as one tidy table
(:mod:`nmsim.accuracy.table`), with each pruned row's fidelity to the dense model (:mod:`nmsim.accuracy.fidelity`:
KL divergence, top-1 and greedy agreement, from one dense reference computed once per run and cached).

Rows are written to disk (CSV, Markdown and optional JSON, and the per-window sidecar, all or none) as each
finishes; a rerun of the same grid skips rows already in the CSV, so an interrupted study resumes where it stopped.
Each write merges into the table on disk under its lock (:func:`nmsim.accuracy.table.merge_tables`), so runs of
other grids writing the same table at the same time keep each other's rows.
"""

from __future__ import annotations

import itertools
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
from nmsim.accuracy.bootstrap import RESAMPLES, SEED
from nmsim.accuracy.fidelity import FidelityScorer, GreedySettings, dense_reference, greedy_prompts
from nmsim.accuracy.table import (COLUMNS, KEY_COLUMNS, NOT_APPLICABLE, merge_tables, method_labels,  # noqa: F401
                                  read_rows, read_windows, row_key, row_windows, window_frame, windows_path,
                                  write_tables)
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
    fidelity: bool = True  # KL, top-1 and greedy agreement with dense (False: perplexity only, no dense reference)
    greedy: GreedySettings = field(default_factory=GreedySettings)


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


class Evaluation:
    """What every row of one study shares: the model on its device, the evaluation windows, and the calibration
    statistics and dense reference, each made when a row first needs it (one per process: a Dask worker keeps
    its own, :mod:`nmsim.accuracy.distributed`)."""

    def __init__(self, settings: StudySettings):
        self.settings = settings
        self.split = load_split("test", settings.data_dir)
        self.lm = load_model(settings.model, dtype=parse_dtype(settings.dtype), device=settings.device)
        self.windows = evaluation_windows(self.lm.token_ids(self.split), settings.seqlen, bos_id=self.lm.window_bos,
                                          max_tokens=settings.max_tokens)  # [W, S]
        self.tokens = self.windows.shape[0] * (self.windows.shape[1] - 1)
        self.stats = None
        self.reference = None

    def common(self) -> dict[str, object]:
        """The columns every row of this evaluation shares."""
        return {"model": self.lm.name, "seqlen_tokens": self.settings.seqlen, "tokens_evaluated": self.tokens,
                "data": self.split.name, "dtype": self.settings.dtype}

    def meta(self, grid: list[Method], out_prefix: Path, command: str) -> dict[str, object]:
        """The table's Markdown header: model, data, windows, precision, device, methods' recipes."""
        settings, lm, windows = self.settings, self.lm, self.windows
        meta = {
            "model": f"{lm.name} ({lm.source})",
            "data": f"{self.split.name} (sha256 of joined text {self.split.sha256})",
            "windows": f"{windows.shape[0]} x {settings.seqlen} tokens, BOS per window: {lm.bos_per_window}",
            "tokens_evaluated": self.tokens,
            "dtype": settings.dtype,
            "device": describe_placement(lm.model),
            "nmsim": __version__,
        }
        if any(isinstance(c, SparsityConfig) and c.needs_training for c in grid):
            recipe = settings.learn_recipe
            meta["learnable recipe"] = (f"{recipe.windows} calibration windows x {recipe.seqlen} tokens, "
                                        f"{recipe.steps_per_block} steps per block, lr {recipe.lr:g}, AdamW betas "
                                        f"({recipe.beta1}, {recipe.beta2}), {recipe.warmup_fraction:.0%} warm-up, "
                                        f"clip {recipe.clip_norm:g} (the paper: 256 windows x 512, one epoch)")
        if settings.fidelity:
            meta["fidelity"] = (f"KL(dense || pruned) in nats and top-1 agreement over the {self.tokens} scored "
                                f"tokens (llama.cpp's conventions); greedy agreement: {settings.greedy.describe()}")
        meta["intervals"] = (f"delta_ppl_ci_low/high: paired bootstrap over the {windows.shape[0]} windows "
                             f"({RESAMPLES} resamples, seed {SEED}, 95 %); per-window sums in "
                             f"{windows_path(out_prefix.with_suffix('.csv')).name}")
        if command:
            meta["command"] = command
        return meta

    def prepare(self, grid: list[Method]) -> None:
        """Make (or read from their caches) the statistics and the dense reference that ``grid``'s rows need, so
        that workers sharing the cache read them instead of each making its own."""
        if any(needs_input_stats(c) for c in grid):
            self._stats()
        if self.settings.fidelity and any(c.pattern.kind != "dense" for c in grid):
            self._reference()

    def _stats(self):
        if self.stats is None:
            s = self.settings
            self.stats = load_or_calibrate(self.lm, s.data_dir, s.seqlen, s.calibration_windows, s.calibration_seed)
        return self.stats

    def _reference(self):
        if self.reference is None:  # built on the dense model, before any pruning
            self.reference = _dense_reference(self.lm, self.split, self.windows, self.settings)
        return self.reference

    def evaluate(self, config: Method) -> tuple[dict, pd.DataFrame]:
        """One row (its columns and metrics) and its per-window sums."""
        settings, windows = self.settings, self.windows
        row = {**self.common(), **row_labels(config)}
        stats = self._stats() if needs_input_stats(config) else None
        scorer = FidelityScorer(self._reference()) if settings.fidelity and row["pattern"] != "dense" else None
        with pruned(self.lm, config, settings, stats), tqdm(
                total=len(windows), desc=f"{row['operand']} {row['pattern']} {row['criterion']} {row['mitigation']}",
                unit="window", leave=False) as bar:
            result = perplexity(self.lm.model, windows, batch_size=settings.batch_size, on_batch=bar.update,
                                on_logits=scorer.add if scorer else None)
            greedy = scorer.greedy(self.lm.model) if scorer else None
        row["perplexity"] = round(result.perplexity, 4)
        row.update(_fidelity_columns(settings, scorer, greedy, self.tokens))
        return row, _window_sums(row, result, scorer, windows.shape[1] - 1, settings.fidelity)


def run_study(
    grid: list[Method],
    settings: StudySettings,
    out_prefix: Path,
    json_path: Path | None = None,
    recompute: bool = False,
    command: str = "",
    scheduler: str | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Evaluate every configuration of ``grid`` not yet in ``<out_prefix>.csv``; return the full table.

    recompute: ignore rows already on disk and evaluate everything again (the table is rewritten row by row).
    scheduler (a Dask scheduler address) or workers (> 1: a local Dask cluster of that many processes): spread the
    rows over Dask workers, each loading the model once (:mod:`nmsim.accuracy.distributed`); finished rows come
    back into the same table as they finish, in grid order, so the table equals a serial run's and resumes alike.
    """
    out_prefix = Path(out_prefix)
    csv_path = out_prefix.with_suffix(".csv")
    split = load_split("test", settings.data_dir)
    parse_dtype(settings.dtype)
    if recompute:  # the rows on disk now are evaluated again; rows other writers add meanwhile are kept
        rows, stale = [], _readable_keys(csv_path)
    else:
        rows, stale = read_rows(csv_path, resumable=True), set()
    _check_settings(rows, {"seqlen_tokens": settings.seqlen, "data": split.name, "dtype": settings.dtype}, csv_path)
    with _evaluator(settings, grid, out_prefix, command, scheduler, workers) as (common, meta, results):
        _check_settings(rows, common, csv_path)
        done = {row_key(r) for r in rows}
        window_rows = {} if recompute else _windows_by_row(out_prefix, done)  # row key → its sidecar rows
        pending = {}
        for index, config in enumerate(grid):
            row = {**common, **row_labels(config)}
            if row_key(row) in done:
                log.info("%s: already done, skipped", _label(index, grid, row))
            else:
                pending[index] = config

        def write(ordered: list[dict]) -> pd.DataFrame:
            """This run's rows into the table, merged with what other writers put there (under its lock)."""
            return merge_tables(ordered, out_prefix, json_path, meta, window_rows, stale=stale, start_over=recompute,
                                check=lambda others: _check_settings(others, common, csv_path))

        finished: dict[int, dict] = {}
        for index, (row, frame) in tqdm(results(pending), total=len(pending), desc="accuracy grid", unit="row"):
            finished[index] = row
            window_rows[row_key(row)] = frame
            write(rows + [finished[i] for i in sorted(finished)])  # grid order, whichever finished first
            log.info("%s: perplexity %.4f, KL %.4f nats, top-1 agreement %.4f, greedy agreement %.2f tokens",
                     _label(index, grid, row), row["perplexity"], row["kl_mean_nats"], row["top1_agreement"],
                     row["greedy_agreement_tokens"])
        rows += [finished[i] for i in sorted(finished)]
    return write(rows)


def _readable_keys(csv_path: Path) -> set[tuple]:
    """The row keys of the table at ``csv_path`` (none when it is missing or unreadable: --recompute starts over)."""
    try:
        return {row_key(r) for r in read_rows(csv_path, resumable=True)}
    except NmsimError:
        return set()


def _label(index: int, grid: list[Method], row: dict) -> str:
    return (f"[{index + 1}/{len(grid)}] {row['operand']} {row['pattern']} {row['criterion']} {row['mitigation']} "
            f"{row['targets']}")


@contextmanager
def _evaluator(settings: StudySettings, grid: list[Method], out_prefix: Path, command: str, scheduler: str | None,
               workers: int | None):
    """(the rows' common columns, the table's header, results: pending {index: config} → (index, (row, window
    sums)) as each finishes), in this process or on Dask workers."""
    if scheduler is not None or (workers is not None and workers > 1):
        from nmsim.accuracy.distributed import distributed_evaluator

        with distributed_evaluator(settings, grid, out_prefix, command, scheduler, workers) as evaluator:
            yield evaluator
        return
    evaluation = Evaluation(settings)
    yield (evaluation.common(), evaluation.meta(grid, out_prefix, command),
           lambda pending: ((index, evaluation.evaluate(config)) for index, config in pending.items()))


def _dense_reference(lm, split, windows: torch.Tensor, settings: StudySettings):
    """The dense outputs on the windows and the greedy prompts (:func:`nmsim.accuracy.fidelity.dense_reference`)."""
    prompts = greedy_prompts(lm.token_ids(split), settings.greedy, lm.window_bos)
    return dense_reference(lm, windows, prompts, settings.greedy.tokens, batch_size=settings.batch_size)


def _fidelity_columns(settings: StudySettings, scorer: FidelityScorer | None, greedy, tokens: int) -> dict:
    """kl_mean_nats, top1_agreement, greedy_agreement_tokens of a row (the dense row: 0, 1 and G; NaN without
    fidelity)."""
    if not settings.fidelity:
        return dict.fromkeys(("kl_mean_nats", "top1_agreement", "greedy_agreement_tokens"), math.nan)
    if scorer is None:
        return {"kl_mean_nats": 0.0, "top1_agreement": 1.0, "greedy_agreement_tokens": float(settings.greedy.tokens)}
    return {"kl_mean_nats": round(float(scorer.kl_sum.sum()) / tokens, 6),
            "top1_agreement": round(int(scorer.top1_matches.sum()) / tokens, 6),
            "greedy_agreement_tokens": round(float(greedy.mean()), 4)}


def _window_sums(row: dict, result, scorer: FidelityScorer | None, tokens: int, fidelity: bool) -> pd.DataFrame:
    """A row's sidecar rows: per-window NLL, KL and top-1 sums (the dense row's KL 0 and every token agreeing)."""
    if scorer is not None:
        return window_frame(row, result.window_nll, tokens, scorer.kl_sum, scorer.top1_matches)
    if fidelity:
        return window_frame(row, result.window_nll, tokens, 0.0, tokens)
    return window_frame(row, result.window_nll, tokens)


def _windows_by_row(out_prefix: Path, done: set[tuple]) -> dict[tuple, pd.DataFrame]:
    """The sidecar rows of finished rows, by row key (a row the table lacks, from an interruption between the two
    writes, is left out and evaluated again)."""
    per_row = row_windows(read_windows(out_prefix.with_suffix(".csv"), resumable=True))
    return {key: part for key, part in per_row.items() if key in done}


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
