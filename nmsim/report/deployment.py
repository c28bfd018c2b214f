"""The report at deployment scale: the target models end to end in the registry's deployment scenarios.

Per target model (the seed study's 7–8B models and the traced ones by default, ``nmsim run --target-models``),
design and pattern: time to first token, time per output token, tokens/s and energy per token in each
:func:`scenarios` (prefill of 512, 2,048, 8,192 tokens; decode at batch 1, 8, 64, 256 from context 2k and 32k),
on the fewest tensor-parallel devices that hold the weights and the KV cache. Each target says where its mask
statistics come from (measured, or transplanted from which traced model, with the other traced model's profiles
as a band) and which accuracy rows stand for it: its own rows in the accuracy tables, else those of the traced
model whose masks stand in, labelled as a proxy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nmsim.errors import NmsimError
from nmsim.hw.die import design_area_levels
from nmsim.hw.spec import AcceleratorSpec
from nmsim.model_shape import ModelShape
from nmsim.patterns import Pattern
from nmsim.registry import (DEPLOYMENT_DECODE_BATCHES, DEPLOYMENT_DECODE_CONTEXTS, DEPLOYMENT_DECODE_STEPS,
                            DEPLOYMENT_PREFILL_TOKENS, TRACED_MODELS, band_source, model_shape, statistics_source)
from nmsim.report.pareto import pareto_front
from nmsim.parallel import fork_map
from nmsim.sim.cases import SimCase, simulate_cases
from nmsim.sim.inference import MAX_DEVICES, memory_use, smallest_fitting_degree
from nmsim.traces.reader import TraceData
from nmsim.traces.sources import statistics_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    """Prefill of one ``context``-token prompt (``batch`` 1), or decode of ``batch`` sequences from ``context``."""

    phase: str
    batch: int
    context: int

    @property
    def label(self) -> str:
        k = f"{self.context // 1024}k" if self.context % 1024 == 0 else str(self.context)
        return f"prefill {k}" if self.phase == "prefill" else f"decode B={self.batch} @ {k}"


def scenarios(prefill_tokens: tuple[int, ...] = DEPLOYMENT_PREFILL_TOKENS,
              decode_batches: tuple[int, ...] = DEPLOYMENT_DECODE_BATCHES,
              decode_contexts: tuple[int, ...] = DEPLOYMENT_DECODE_CONTEXTS) -> tuple[Scenario, ...]:
    """The deployment scenarios (the registry's by default), prefill first."""
    for name, values in (("prefill tokens", prefill_tokens), ("decode batches", decode_batches),
                         ("decode contexts", decode_contexts)):
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
            raise NmsimError(f"deployment {name}: expected positive whole numbers, got {list(values)}")
    return (tuple(Scenario("prefill", 1, tokens) for tokens in prefill_tokens)
            + tuple(Scenario("decode", batch, context) for context in decode_contexts for batch in decode_batches))


@dataclass(frozen=True)
class Target:
    """A target model with its mask statistics per pattern and the band's (the other traced model's)."""

    shape: ModelShape
    traces: dict[Pattern, TraceData | None]
    band: dict[Pattern, TraceData | None]
    source: str  # the traced model whose statistics it uses (itself when traced)
    band_model: str | None


def load_targets(names: tuple[str, ...], patterns: tuple[Pattern, ...], root: Path | None) -> list[Target]:
    """Each target's shape and statistics (measured when traced, else transplanted); a target without statistics
    for a sparse pattern stops the run with the message naming what is missing."""
    targets, seen = [], set()
    for name in names:
        shape = model_shape(name)
        if shape.name in seen:
            continue
        seen.add(shape.name)
        source = statistics_source(shape)
        traces = {p: statistics_for(shape, p, root=root) for p in patterns}
        missing = [str(p) for p, t in traces.items() if t is None and p.kind != "dense"]
        if missing and root is not None:
            raise NmsimError(f"target model {shape.name}: no mask statistics for {', '.join(missing)} (neither its "
                             f"own trace nor {source}'s profile under {root})")
        for trace in traces.values():
            if trace is not None:
                trace.check_model(shape)
        other = band_source(source)
        band = {p: statistics_for(shape, p, root=root, source=other) for p in patterns if p.kind != "dense"} \
            if other else {}
        targets.append(Target(shape, traces, band, source, other))
    return targets


def deployment_pairs(designs: list[AcceleratorSpec], baseline: AcceleratorSpec, natives: dict[Pattern, AcceleratorSpec],
                     patterns: tuple[Pattern, ...]) -> list[tuple[AcceleratorSpec, Pattern]]:
    """What runs at deployment scale: the dense baseline, each pattern's native activation design, and every
    weight-sparse design at the baseline's node running the patterns it supports (NVIDIA-style 2:4)."""
    pairs = [(baseline, Pattern.dense())]
    pairs += [(natives[p], p) for p in patterns if p in natives]
    for spec in designs:  # on the baseline's own hardware, so the comparison is of sparsity alone
        if spec.sparsity.operand == "weight" and (spec.compute, spec.memory, spec.technology_nm) == (
                baseline.compute, baseline.memory, baseline.technology_nm):
            pairs += [(spec, p) for p in spec.sparsity.patterns if p in patterns]
    return pairs


def fitting_devices(spec: AcceleratorSpec, shape: ModelShape, scenario: Scenario) -> int | None:
    """The fewest tensor-parallel devices (dividing the model's heads) whose memory holds the weights and the KV
    cache at the scenario's longest context; None when no degree up to MAX_DEVICES does (or the design has no
    interconnect to go parallel)."""
    memory = memory_use(spec, shape, scenario.batch, _longest_context(scenario), 1, 0.0)
    if memory.fits:
        return 1
    return smallest_fitting_degree(shape, memory, 1) if spec.interconnect is not None else None


def _longest_context(scenario: Scenario) -> int:
    """The context the KV cache reaches: the prompt, or the decode steps' last."""
    return scenario.context + (DEPLOYMENT_DECODE_STEPS if scenario.phase == "decode" else 0)


def runnable(patterns: tuple[Pattern, ...]) -> tuple[Pattern, ...]:
    """The patterns a design can run at deployment scale: dense and N:M (unstructured has no design)."""
    return tuple(p for p in patterns if p.kind in ("dense", "nm"))


def deployment_cases(target: Target, pairs: list[tuple[AcceleratorSpec, Pattern]], baseline: AcceleratorSpec,
                     chosen: tuple[Scenario, ...] | None = None) -> list[tuple[Scenario, SimCase]]:
    """Every (scenario, case) of one target (``chosen``: default the registry's scenarios); all designs of a
    scenario share the baseline's device count."""
    out = []
    for scenario in chosen or scenarios():
        devices = fitting_devices(baseline, target.shape, scenario)
        if devices is None:  # no degree holds it: the table says so, with no timing to give
            continue
        for spec, pattern in pairs:
            out.append((scenario, SimCase(spec, pattern, scenario.phase, scenario.batch, scenario.context,
                                          devices=devices, generate=DEPLOYMENT_DECODE_STEPS)))
    return out


COLUMNS = ("model", "params_B", "design", "pattern", "operand", "scenario", "phase", "batch", "context_tokens",
           "devices", "ttft_ms", "tpot_ms", "tokens_per_s", "energy_per_token_mJ", "e2e_speedup_vs_dense_same_design",
           "e2e_speedup_vs_baseline", "linear_share", "statistics", "fits_memory", "note")


def _unfit_rows(target: Target, pairs: list[tuple[AcceleratorSpec, Pattern]], baseline: AcceleratorSpec,
                scenario: Scenario) -> list[dict]:
    """The rows of a scenario no tensor-parallel degree holds: no timing, and a note with the memory it needs."""
    need = memory_use(baseline, target.shape, scenario.batch, _longest_context(scenario), 1, 0.0).total
    note = (f"{target.shape.name} does not fit {baseline.name} on any tensor-parallel degree up to {MAX_DEVICES} "
            f"that divides its heads ({need / 2**30:.0f} GiB of weights and KV cache, "
            f"{baseline.memory[0].capacity_bytes / 2**30:.0f} GiB per device)")
    return [{"model": target.shape.name, "params_B": target.shape.weight_count() / 1e9, "design": spec.name,
             "pattern": str(pattern), "operand": spec.sparsity.operand if pattern.kind != "dense" else "none",
             "scenario": scenario.label, "phase": scenario.phase, "batch": scenario.batch,
             "context_tokens": scenario.context, "devices": 0, "fits_memory": False, "note": note,
             "statistics": target.traces[pattern].provenance if target.traces.get(pattern) else "ideal"}
            for spec, pattern in pairs]


def run_deployment(targets: list[Target], pairs: list[tuple[AcceleratorSpec, Pattern]], baseline: AcceleratorSpec,
                   workers: int | None = None, chosen: tuple[Scenario, ...] | None = None) -> pd.DataFrame:
    """The deployment table: one row per target × scenario × (design, pattern) (see :data:`COLUMNS`); a scenario
    no tensor-parallel degree holds is not simulated (``devices`` 0, its memory need in ``note``)."""
    planned = [deployment_cases(target, pairs, baseline, chosen) for target in targets]
    # one target per job, the largest first, so the cores stay busy (a target's designs share their dense GEMMs)
    order = sorted(range(len(targets)), key=lambda i: -targets[i].shape.weight_count())

    def simulate(index: int):
        return simulate_cases([case for _, case in planned[index]], targets[index].shape, baseline=baseline,
                              traces=targets[index].traces, workers=1, end_to_end=True)

    done = dict(zip(order, fork_map(simulate, order, workers=workers)))
    rows = []
    for number, target in enumerate(targets):
        cases, results = planned[number], done[number]
        for scenario in chosen or scenarios():
            mine = [case for s, case in cases if s == scenario]
            if not mine:
                rows += _unfit_rows(target, pairs, baseline, scenario)
            for case in mine:
                found = results.totals_of(case)
                time_ms = found.e2e_time_us / 1e3
                rows.append({
                    "model": target.shape.name, "params_B": target.shape.weight_count() / 1e9,
                    "design": case.design.name, "pattern": str(case.pattern), "operand": case.design.sparsity.operand
                    if case.pattern.kind != "dense" else "none",
                    "scenario": scenario.label, "phase": scenario.phase, "batch": scenario.batch,
                    "context_tokens": scenario.context, "devices": case.devices,
                    "ttft_ms": time_ms if scenario.phase == "prefill" else float("nan"),
                    "tpot_ms": time_ms if scenario.phase == "decode" else float("nan"),
                    "tokens_per_s": found.tokens_per_s, "energy_per_token_mJ": found.energy_per_token_mJ,
                    "e2e_speedup_vs_dense_same_design": found.e2e_speedup_vs_dense_same_design,
                    "e2e_speedup_vs_baseline": found.e2e_speedup_vs_baseline, "linear_share": found.linear_share,
                    "statistics": found.statistics, "fits_memory": bool(found.fits_memory), "note": found.note,
                })
        log.info("deployment: %s, %d cases", target.shape.name, len(cases))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def band_table(targets: list[Target], pairs: list[tuple[AcceleratorSpec, Pattern]], baseline: AcceleratorSpec,
               deployment: pd.DataFrame, workers: int | None = None, chosen: tuple[Scenario, ...] | None = None
               ) -> pd.DataFrame:
    """The statistics' sensitivity band: for each target and sparse activation pattern, the end-to-end speedups
    of the first prefill and the first batch-1 decode scenario with the other traced model's profiles beside the
    chosen ones."""
    chosen = chosen or scenarios()
    probes = [s for s in chosen if s.phase == "prefill"][:1] + [s for s in chosen
                                                                 if s.phase == "decode" and s.batch == 1][:1]
    prefer = [s for s in chosen if (s.phase, s.batch, s.context) in (("prefill", 1, 2048), ("decode", 1, 2048))]
    probes = prefer if len(prefer) == 2 else probes
    rows = []
    for target in targets:
        if not any(target.band.values()):
            continue
        chosen = [(spec, p) for spec, p in pairs if p.kind != "dense" and spec.sparsity.operand == "activation"
                  and target.band.get(p) is not None]
        decision = [(spec, p) for spec, p in chosen if str(p) in ("8:16", "16:32")]
        chosen = decision or chosen  # the decision pair, where the run has it
        if not chosen:
            continue
        cases = [(s, spec, p, SimCase(spec, p, s.phase, s.batch, s.context,
                                      devices=fitting_devices(baseline, target.shape, s) or 1,
                                      generate=DEPLOYMENT_DECODE_STEPS)) for s in probes for spec, p in chosen]
        results = simulate_cases([c for *_, c in cases], target.shape, baseline=baseline, traces=target.band,
                                 workers=workers, end_to_end=True)
        for scenario, spec, pattern, case in cases:
            own = deployment[(deployment.model == target.shape.name) & (deployment.design == spec.name)
                             & (deployment.pattern == str(pattern)) & (deployment.scenario == scenario.label)]
            other = results.totals_of(case)
            rows.append({"model": target.shape.name, "design": spec.name, "pattern": str(pattern),
                         "scenario": scenario.label, "statistics": own.statistics.iloc[0],
                         "e2e_speedup": own.e2e_speedup_vs_dense_same_design.iloc[0],
                         "band_statistics": other.statistics,
                         "band_e2e_speedup": other.e2e_speedup_vs_dense_same_design})
    return pd.DataFrame(rows, columns=["model", "design", "pattern", "scenario", "statistics", "e2e_speedup",
                                       "band_statistics", "band_e2e_speedup"])


def target_accuracy(accuracy_rows: pd.DataFrame, target: Target, best_accuracy) -> tuple[pd.DataFrame, str]:
    """The accuracy rows that stand for ``target`` and a plain label of where they come from: its own rows, else
    those of the traced model whose masks stand in, else of any traced model the tables have."""
    models = set(accuracy_rows.model)
    if target.shape.name in models:
        return best_accuracy(accuracy_rows, target.shape.name), f"measured on {target.shape.name}"
    for proxy in (target.source, *TRACED_MODELS):
        if proxy in models:
            return (best_accuracy(accuracy_rows, proxy),
                    f"proxy: measured on {proxy}, not on {target.shape.name} (--accuracy TABLE with its own rows)")
    raise NmsimError(f"target model {target.shape.name}: the accuracy tables have rows of neither it nor a traced "
                     f"model (they have {', '.join(sorted(models))})")


def targets_table(targets: list[Target], accuracy_rows: pd.DataFrame, best_accuracy) -> pd.DataFrame:
    """One row per target: size, where its statistics and accuracy come from."""
    rows = []
    for target in targets:
        shape = target.shape
        _, accuracy = target_accuracy(accuracy_rows, target, best_accuracy)
        provenance = sorted({"measured (its own traces)" if t.provenance.startswith("measured") else t.provenance
                             for p, t in target.traces.items() if t is not None and p.kind != "dense"})
        rows.append({"model": shape.name, "params_B": shape.weight_count() / 1e9, "hidden_size": shape.hidden_size,
                     "num_layers": shape.num_layers, "statistics": "; ".join(provenance) or "none",
                     "band_from": target.band_model or "",
                     "accuracy": accuracy})
    return pd.DataFrame(rows)


def fronts(deployment: pd.DataFrame, targets: list[Target], pairs: list[tuple[AcceleratorSpec, Pattern]],
           accuracy_rows: pd.DataFrame, best_accuracy, area_level: str = "die") -> pd.DataFrame:
    """Per target, scenario and (design, pattern): its accuracy (the target's, or its proxy's), end-to-end speedup
    over the baseline and area overhead at ``area_level``, and whether it is on the accuracy-vs-speed and on the
    accuracy-vs-area Pareto fronts (lower Δ perplexity, higher speedup, lower area)."""
    specs = {spec.name: spec for spec, _ in pairs}
    areas: dict[str, float] = {}
    rows = []
    for target in targets:
        accuracy, label = target_accuracy(accuracy_rows, target, best_accuracy)
        best = {(r.operand, r.pattern): r.delta_pct_vs_dense for r in accuracy.itertuples()}
        mine = deployment[deployment.model == target.shape.name]
        for row in mine.itertuples():
            key = ("none" if row.pattern == "dense" else row.operand, row.pattern)
            if key not in best:
                continue
            if row.design not in areas:
                areas[row.design] = design_area_levels(specs[row.design]).overhead_pct(area_level)
            rows.append({"model": row.model, "scenario": row.scenario, "design": row.design, "pattern": row.pattern,
                         "operand": key[0], "delta_pct_vs_dense": best[key], "accuracy": label,
                         "e2e_speedup_vs_baseline": row.e2e_speedup_vs_baseline,
                         "area_overhead_pct": areas[row.design], "area_level": area_level})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["pareto_speed"] = False
    table["pareto_area"] = False
    for _, group in table.groupby(["model", "scenario"], sort=False):
        table.loc[group.index, "pareto_speed"] = pareto_front(group, minimize=["delta_pct_vs_dense"],
                                                              maximize=["e2e_speedup_vs_baseline"])
        sparse = group[group.pattern != "dense"]  # as in the trade-off table: dense is the area reference
        table.loc[sparse.index, "pareto_area"] = pareto_front(sparse, minimize=["delta_pct_vs_dense",
                                                                                "area_overhead_pct"])
    return table


BENEFIT_GONE = 1.05  # a decode speedup at or below this counts as no benefit
HEADLINE_PREFILL = "prefill 2k"
HEADLINE_DECODE_CONTEXT = 2048


def decode_curve(deployment: pd.DataFrame, design: str, pattern: str, context: int) -> pd.DataFrame:
    """The decode rows of ``design`` running ``pattern`` from ``context``, by batch (one model's table)."""
    rows = deployment[(deployment.design == design) & (deployment.pattern == pattern)
                      & (deployment.phase == "decode") & (deployment.context_tokens == context)]
    return rows.sort_values("batch")


def benefit_gone_batch(deployment: pd.DataFrame, model: str, design: str, pattern: str,
                       context: int = HEADLINE_DECODE_CONTEXT) -> float:
    """The smallest decode batch at which ``design`` running ``pattern`` is at or below BENEFIT_GONE over its dense
    self (NaN: at no batch)."""
    rows = decode_curve(deployment[deployment.model == model], design, pattern, context)
    gone = rows[rows.e2e_speedup_vs_dense_same_design <= BENEFIT_GONE].batch
    return float(gone.min()) if len(gone) else float("nan")


def summary(deployment: pd.DataFrame, fronts_table: pd.DataFrame, band: pd.DataFrame,
            natives: dict[Pattern, AcceleratorSpec]) -> pd.DataFrame:
    """Per target, the numbers the deployment conclusion quotes beyond the deployment table: 8:16's and 16:32's
    end-to-end prefill-2k speedups, 16:32's throughput per area over 8:16's (``efficiency_ratio``, at the fronts'
    area level) and in % (``efficiency_gain_pct``), 8:16's perplexity increase over 16:32's in percentage points
    (``accuracy_gap_pct_points``), both designs' area overheads, the batch at which 8:16's decode benefit is gone, and the largest speedup shift
    the band's statistics cause."""
    rows = []
    for model in dict.fromkeys(deployment.model):
        head = fronts_table[(fronts_table.model == model) & (fronts_table.scenario == HEADLINE_PREFILL)] \
            if len(fronts_table) else fronts_table
        row = {"model": model, "params_B": deployment[deployment.model == model].params_B.iloc[0]}
        pair = {p: head[(head.operand == "activation") & (head.pattern == p)] for p in ("8:16", "16:32")}
        if all(len(part) for part in pair.values()):
            speed = {p: deployment[(deployment.model == model) & (deployment.design == part.design.iloc[0])
                                   & (deployment.pattern == p) & (deployment.scenario == HEADLINE_PREFILL)]
                     .e2e_speedup_vs_dense_same_design.iloc[0] for p, part in pair.items()}
            eff = {p: speed[p] / (1 + pair[p].area_overhead_pct.iloc[0] / 100) for p in pair}
            row.update({"prefill_2k_speedup_8of16": speed["8:16"], "prefill_2k_speedup_16of32": speed["16:32"],
                        "efficiency_ratio": eff["16:32"] / eff["8:16"],
                        "efficiency_gain_pct": 100 * (eff["16:32"] / eff["8:16"] - 1),
                        "accuracy_gap_pct_points": pair["8:16"].delta_pct_vs_dense.iloc[0]
                        - pair["16:32"].delta_pct_vs_dense.iloc[0],
                        "area_overhead_pct_8of16": pair["8:16"].area_overhead_pct.iloc[0],
                        "area_overhead_pct_16of32": pair["16:32"].area_overhead_pct.iloc[0],
                        "area_level": pair["8:16"].area_level.iloc[0]})
        native = natives.get(Pattern.nm(8, 16))
        row["decode_benefit_gone_batch"] = benefit_gone_batch(deployment, model, native.name, "8:16") \
            if native is not None else float("nan")
        mine = band[band.model == model]
        row["band_max_shift"] = float((mine.band_e2e_speedup - mine.e2e_speedup).abs().max()) if len(mine) \
            else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
