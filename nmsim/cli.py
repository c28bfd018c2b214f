"""Command line: argument parsing only; each command calls one API function.

Errors from bad input end with one line on stderr and exit status 2; Ctrl-C exits 130 after finished work
is on disk.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from nmsim import __version__
from nmsim.errors import NmsimError
from nmsim.registry import (BASELINE_DESIGN, DEFAULT_MODEL, DEPLOYMENT_DECODE_BATCHES, DEPLOYMENT_DECODE_CONTEXTS,
                            DEPLOYMENT_PREFILL_TOKENS, PROJECTIONS, TARGET_MODELS)

log = logging.getLogger("nmsim")


def _int_at_least(low: int, high: int | None = None):
    """An argparse type: an integer no smaller than ``low`` (and no larger than ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is more than {high}")
        return value

    return parse


_positive_int = _int_at_least(1)
MAX_PROCESSES = 4096  # --workers and --threads: beyond any machine (and the C int the OS calls take)
_process_count = _int_at_least(1, MAX_PROCESSES)


def _folder_argument(option: str, path: str | Path | None) -> None:
    """Refuse, before any work, a folder argument that names an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise NmsimError(f"{option} {path}: is a file; it must be a folder (existing or to create)")


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (nan, inf, 0 and negatives refused before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: a finite number above 0")
    return value


def _target_presets(text: str) -> tuple[str, ...]:
    """An argparse type: ';'-separated target presets, each checked now (torch-free)."""
    from nmsim.sparsify.targets import TARGET_PRESETS, make_targets

    presets = tuple(t.strip() for t in text.split(";") if t.strip())
    allowed = f"allowed: {', '.join(TARGET_PRESETS)}, or projection lists like 'o,gate,up,down', ';'-separated"
    if not presets:
        raise argparse.ArgumentTypeError(f"{text!r}: no target preset given; {allowed}")
    for preset in presets:
        try:
            make_targets(preset)
        except NmsimError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return presets


def _pattern_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """'8:16/16:32,2:4/8:16' → (("8:16", "16:32"), ("2:4", "8:16")); each item must be A/B."""
    pairs = []
    for item in _csv(text):
        parts = [p.strip() for p in item.split("/")]
        if len(parts) != 2 or not all(parts):
            raise NmsimError(f"--sensitivity-pairs: {item!r} is not A/B (write e.g. 8:16/16:32)")
        pairs.append((parts[0], parts[1]))
    return tuple(pairs)


def _int_list(text: str) -> tuple[int, ...]:
    """'512,2048' → (512, 2048): positive whole numbers, comma-separated."""
    values = tuple(_positive_int(part) for part in _csv(text))
    if not values:
        raise argparse.ArgumentTypeError("expected positive whole numbers, comma-separated")
    return values


def _max_tokens(text: str) -> int | None:
    """A positive token count, or ``all`` (None: the whole test split)."""
    return None if text.strip().lower() == "all" else _positive_int(text)
_non_negative_int = _int_at_least(0)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _patterns(text: str) -> tuple:
    """Patterns separated by commas (or spaces, outside a prune count), each turned into a Pattern now, so a typo
    fails before any work and every spelling (8:16, m16n8, prune 8 of 16) gives the same value."""
    from nmsim.patterns import parse_pattern

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1 and " " in parts[0] and not parts[0].lower().startswith("prune"):
        parts = parts[0].split()
    return tuple(dict.fromkeys(parse_pattern(p) for p in parts))


def _add_study_arguments(parser: argparse.ArgumentParser, defaults: dict) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="embedded alias (smollm2-135m, gemma3-270m), a .gguf file, a HF model directory or "
                             "hub id (default: %(default)s)")
    parser.add_argument("--patterns", default=",".join(defaults["patterns"]),
                        help="comma list of patterns, e.g. 2:4,8:16,unstructured:0.5 (dense is always added); "
                             "apex m4n2 and 'prune 2 of 4' spellings are accepted (default: %(default)s)")
    parser.add_argument("--criteria", default=",".join(defaults["criteria"]),
                        help="comma list: magnitude, amber, wina, clact, clact-causal (default: %(default)s)")
    parser.add_argument("--mitigations", default=",".join(defaults["mitigations"]),
                        help="comma list: none, median-shift, static-shift, variance, learnable (trained scale + "
                             "shift), or a '+' combination such as median-shift+variance (default: %(default)s)")
    parser.add_argument("--weight-patterns", default=",".join(defaults.get("weight_patterns", [])),
                        help="weight-pruning baselines: comma list of patterns pruned on W instead of x "
                             "(default: none)")
    parser.add_argument("--weight-methods", default="magnitude,wanda",
                        help="weight-pruning scores for --weight-patterns: magnitude, wanda (default: %(default)s)")
    parser.add_argument("--headline-from", type=Path,
                        help="instead of the grid options: dense, the best activation method per pattern and the "
                             "weight baselines of this finished table (CSV)")
    parser.add_argument("--learn-windows", type=_positive_int, default=64,
                        help="learnable mitigation: calibration windows (default: %(default)s; the paper: 256)")
    parser.add_argument("--learn-steps", type=_positive_int,
                        help="learnable mitigation: optimizer steps per block (default: one epoch, one per window)")
    parser.add_argument("--learn-lr", type=_positive_float, default=1e-4,
                        help="learnable mitigation: AdamW learning rate (default: %(default)s)")
    parser.add_argument("--targets", default=";".join(defaults["targets"]), type=_target_presets,
                        help="';'-separated target presets: all, no-qkv, amber, or projection lists like "
                             "'o,gate,up,down' (default: %(default)s)")
    parser.add_argument("--layers", help="prune only these decoder layers, e.g. 0-11,14")
    parser.add_argument("--exclude-layers", help="never prune these decoder layers, e.g. 0,29")
    parser.add_argument("--prefill-only", action="store_true", help="leave decode tokens dense")
    parser.add_argument("--seqlen", type=_int_at_least(2), default=512,
                        help="window length in tokens (default: %(default)s)")
    parser.add_argument("--max-tokens", type=_max_tokens, default=defaults["max_tokens"],
                        help="evaluate only the first max(1, N//seqlen) test windows; 'all' for the whole test split "
                             "(default: %(default)s, the same for eval and run)")
    parser.add_argument("--data-dir", help="directory with wiki.test.raw and wiki.valid.raw "
                                           "(default: $NMSIM_DATA, then ../shared/data)")
    parser.add_argument("--batch-size", type=_positive_int, default=1, help="windows per forward pass (default: 1)")
    parser.add_argument("--calibration-windows", type=_positive_int, default=16,
                        help="calibration windows for clact-causal and static-shift (default: %(default)s)")
    parser.add_argument("--out", default="reports/accuracy",
                        help="output prefix: writes PREFIX.csv and PREFIX.md (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON to this path (nmsim run: PREFIX.json by default)")
    parser.add_argument("--recompute", action="store_true",
                        help="evaluate every row again instead of reusing rows already in PREFIX.csv")
    parser.add_argument("--no-fidelity", action="store_true",
                        help="perplexity only: no KL divergence, top-1 or greedy agreement with dense, and no dense "
                             "reference in the cache (W x (seqlen-1) x vocab float16 values)")
    parser.add_argument("--threads", type=_process_count, help="CPU threads (default: all cores)")
    _add_device_arguments(parser)


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    from nmsim.llm.device import DEVICE_SPELLINGS, DTYPE_NAMES  # torch-free

    parser.add_argument("--device", default="cpu",
                        help=f"where the model runs: {DEVICE_SPELLINGS} (CUDA if present, spread over every GPU "
                             "when there are several; logged) (default: %(default)s)")
    parser.add_argument("--dtype", default="float32",
                        help=f"the model's precision: {', '.join(DTYPE_NAMES)}; accuracy rows record it (default: "
                             "%(default)s)")


def _accuracy_request(args: argparse.Namespace):
    """The accuracy grid and settings of ``eval`` and ``run`` as one request."""
    from nmsim.pipeline import AccuracyRequest

    json = args.json
    if json is None and args.command == "run":  # the main job keeps its accuracy table as JSON too
        json = Path(args.out).with_suffix(".json")
    patterns, criteria = _patterns(args.patterns), tuple(_csv(args.criteria))
    mitigations = tuple(_csv(args.mitigations))
    weight_patterns, weight_methods = _patterns(args.weight_patterns), tuple(_csv(args.weight_methods))
    if args.headline_from is None:  # an empty list would leave a grid of the dense row only
        from nmsim.sparsify.mitigations import MITIGATION_NAMES

        for option, given, what, allowed in (
                ("--patterns", patterns, "pattern", "2:4, 8:16, unstructured:0.5, dense, … comma-separated"),
                ("--criteria", criteria, "criterion", "magnitude, amber, wina, clact, clact-causal"),
                ("--mitigations", mitigations, "mitigation", ", ".join(MITIGATION_NAMES)),
                ("--weight-methods", weight_methods if weight_patterns else ("-",), "weight method",
                 "magnitude, wanda")):
            if not given:
                raise NmsimError(f"{option}: no {what} given; allowed: {allowed}")
    return AccuracyRequest(
        out=Path(args.out), json=json, model=args.model, patterns=patterns,
        criteria=criteria, mitigations=mitigations,
        targets=args.targets, layers=args.layers,
        exclude_layers=args.exclude_layers, prefill_only=args.prefill_only,
        weight_patterns=weight_patterns, weight_methods=weight_methods, headline_from=args.headline_from,
        seqlen=args.seqlen,
        max_tokens=args.max_tokens, data_dir=args.data_dir, batch_size=args.batch_size,
        calibration_windows=args.calibration_windows, learn_windows=args.learn_windows, learn_steps=args.learn_steps,
        learn_lr=args.learn_lr, device=args.device, dtype=args.dtype, recompute=args.recompute,
        fidelity=not args.no_fidelity, command=args.command_line,
        scheduler=getattr(args, "scheduler", None) if args.command == "eval" else None,
        workers=getattr(args, "workers", None) if args.command == "eval" else None,
    )


def _run_study(args: argparse.Namespace) -> int:
    from nmsim.accuracy.study import set_threads
    from nmsim.pipeline import accuracy_stage, check_output_file

    set_threads(args.threads)
    request = _accuracy_request(args)
    check_output_file(request.json, "--json")
    try:
        accuracy_stage(request)
    except KeyboardInterrupt:
        log.error("interrupted: finished rows are saved in %s; rerun the same command to resume", request.table)
        return 130
    return 0


def _run(args: argparse.Namespace) -> int:
    """The main job: the accuracy rows (computed only when missing or with --recompute), the traces (captured
    again with --recompute), then the trade-off report."""
    from nmsim.pipeline import STUDY_TABLES, RunRequest, check_output_file, run

    if args.threads is not None:
        from nmsim.accuracy.study import set_threads

        set_threads(args.threads)
    study = _accuracy_request(args)
    check_output_file(study.json, "--json")
    extra = args.accuracy if args.accuracy is not None else [p for p in STUDY_TABLES if p.is_file()]
    _folder_argument("--report-root", args.report_root)
    request = RunRequest(name=args.name if args.name is not None else Path(args.model).stem, model=args.model,
                         designs=tuple(_csv(args.designs)) if args.designs else (), baseline=args.baseline,
                         accuracy=tuple(extra), patterns=study.patterns,
                         trace_root=Path(args.trace_root) if args.trace_root else RunRequest.trace_root,
                         sweep=args.sweep, out_root=Path(args.report_root), command=args.command_line,
                         workers=args.workers, scheduler=args.scheduler, sweep_yes=args.yes,
                         allow_ideal=args.ideal, study=study,
                         recapture=args.recompute, area_level=args.area_level,
                         target_models=() if args.target_models.strip().lower() == "none"
                         else tuple(_csv(args.target_models)),
                         sensitivity_pairs=_pattern_pairs(args.sensitivity_pairs),
                         prefill_tokens=tuple(args.prefill_tokens), decode_batches=tuple(args.decode_batches),
                         decode_contexts=tuple(args.decode_contexts))
    try:
        run(request)
    except KeyboardInterrupt:
        log.error("interrupted: finished accuracy rows are saved in %s; the previous report is untouched",
                  study.table)
        return 130
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from nmsim.io import write_table
    from nmsim.sim.param_sweep import check_sweep, load_sweep, run_sweep

    plan = load_sweep(args.file)
    check_sweep(plan, yes=args.yes, workers=args.workers, scheduler=args.scheduler)  # before any work
    table = run_sweep(plan, workers=args.workers, scheduler=args.scheduler)
    out = Path(args.out) if args.out else Path("reports") / "sweeps" / Path(args.file).stem
    write_table(table, out.parent, out.name)  # makes the folder; a full disk leaves no empty one
    log.info("wrote %s.csv and %s.parquet (%d rows); `nmsim run --sweep %s` adds the points to the trade-off "
             "plots", out, out, len(table), args.file)
    return 0


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="report folder under --report-root (default: the model name)")
    parser.add_argument("--designs", help="comma list of presets or YAML files (default: every preset in "
                                          "hw_configs/)")
    parser.add_argument("--baseline", default=BASELINE_DESIGN, help="dense baseline design (default: %(default)s)")
    parser.add_argument("--accuracy", type=Path, nargs="*",
                        help="more accuracy tables whose rows compete for the best method per pattern, besides "
                             "--out's; a table with rows of a target model (e.g. from `nmsim eval` on the real 8B "
                             "model) is that target's accuracy, otherwise the traced model's rows stand in as a proxy "
                             "(default: reports/study_smollm2_16k.csv and reports/study_gemma3_16k.csv where they "
                             "exist)")
    parser.add_argument("--trace-root", help="committed traces (default: the package's, traces/ in a checkout)")
    parser.add_argument("--ideal", action="store_true",
                        help="patterns without a trace use the idealised N/M answer (default: a missing trace "
                             "stops the run)")
    parser.add_argument("--sweep", type=Path, help="a sweep file (see `nmsim sweep`) whose points join the "
                                                   "trade-off table and plots")
    _add_parallel_arguments(parser)
    parser.add_argument("--report-root", default="reports", help="where the report folder goes (default: reports)")
    parser.add_argument("--area-level", choices=["datapath", "core", "die"], default="die",
                        help="the area the decision metric (speedup / (1 + area overhead)) divides by: the MAC "
                             "datapath, one core (SM) or the die (default: %(default)s)")
    parser.add_argument("--sensitivity-pairs", default="",
                        help="pattern pairs the hardware sensitivity compares, A/B comma-separated (e.g. "
                             "'8:16/16:32,2:4/8:16'), each on its native design among --designs (default: 8:16/16:32 "
                             "when the designs have both)")
    parser.add_argument("--prefill-tokens", type=_int_list, default=DEPLOYMENT_PREFILL_TOKENS, metavar="N,N,…",
                        help="deployment scenarios: prompt lengths of the prefill scenarios (default: "
                             "%(default)s)")
    parser.add_argument("--decode-batches", type=_int_list, default=DEPLOYMENT_DECODE_BATCHES, metavar="B,B,…",
                        help="deployment scenarios: decode batch sizes (default: %(default)s)")
    parser.add_argument("--decode-contexts", type=_int_list, default=DEPLOYMENT_DECODE_CONTEXTS, metavar="C,C,…",
                        help="deployment scenarios: contexts the decode steps start from (default: %(default)s)")
    parser.add_argument("--target-models", default=",".join(TARGET_MODELS),
                        help="models reported end to end at deployment scale: presets, config.json files or model "
                             "directories, comma-separated, or 'none' (default: the seed study's four and the traced "
                             "models, %(default)s)")


def _add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_process_count, help="sweep: local processes (default: all cores)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="sweep: run on this Dask distributed scheduler (tcp://host:8786) instead of local cores")
    parser.add_argument("--yes", action="store_true",
                        help="sweep: run a sweep estimated to take longer than the budget (10 min) anyway")


def _validate(args: argparse.Namespace) -> int:
    from nmsim.io import write_table
    from nmsim.report.figures import validation_figure
    from nmsim.sim.validation import MeasurementSet, package_sets, validate

    sets = [] if args.only_user_set else package_sets()
    if args.user_set is not None:
        if not args.hw:
            raise NmsimError("nmsim validate --set needs --hw, the measured part's design")
        sets.append(MeasurementSet(args.user_set.stem, args.user_set, args.hw, args.sparse_hw or "", args.harness,
                                   f"user set {args.user_set}", args.kind))
    elif args.only_user_set or args.hw or args.sparse_hw or args.kind != "gemm":
        raise NmsimError("--only-user-set, --hw, --sparse-hw and --kind go with --set CSV")
    table, summary = validate(sets)
    columns = ["set", "kernel", "M", "K", "N", "measured_us", "predicted_us", "error_pct", "roofline_us", "mapping"]
    with _wide_display():
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print()
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_table(table, args.out, "validation") + write_table(summary, args.out, "validation_summary")
    written += [path.name for path in validation_figure(table, args.out)]
    if not args.only_user_set:  # the area model against published area ratios (docs/area_model.md)
        import pandas as pd

        from nmsim.hw.area_validation import area_validation_rows

        area = pd.DataFrame(area_validation_rows())
        with _wide_display():
            print()
            print(area[["name", "quantity", "published", "nmsim", "nmsim_low", "nmsim_high", "error_pct"]].to_string(
                index=False, float_format=lambda v: f"{v:.4g}"))
        written += write_table(area, args.out, "area_validation")
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def _wide_display():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_columns", 20)


def _bench(args: argparse.Namespace) -> int:
    if args.what not in ("calibrate", "prune") and (args.device, args.dtype) != ("cpu", "float32"):
        raise NmsimError(f"--device and --dtype go with `nmsim bench prune` and `nmsim bench calibrate`; bench "
                         f"{args.what} runs on the CPU in float32")
    if args.threads is not None:
        from nmsim.accuracy.study import set_threads

        set_threads(args.threads)
    if args.what == "profile":
        from nmsim.bench.simulator import profile_benchmark

        results = profile_benchmark(repeats=args.repeats)
    elif args.what == "simulate":
        from nmsim.bench.simulator import run_simulator_benchmark

        results = run_simulator_benchmark(scalesim_python=args.scalesim_python, repeats=args.repeats,
                                          designs=args.designs, models=args.models)
    elif args.what == "report":
        from nmsim.bench.pipeline_speed import run_report_benchmark

        results = run_report_benchmark(repeats=min(args.repeats, 2), designs=tuple(args.designs or ()),
                                       patterns=args.patterns, sweep_values=args.sweep_values)
    else:
        from nmsim.bench.forward import run_calibration_benchmark, run_capture_benchmark, run_pruning_benchmark

        if args.what == "calibrate":
            results = run_calibration_benchmark(model=args.model, windows=args.learn_windows, seqlen=args.seqlen,
                                                device=args.device, dtype=args.dtype)
        elif args.what == "capture":
            results = run_capture_benchmark(model=args.model, windows=args.windows, repeats=args.repeats,
                                            seqlen=args.seqlen)
        else:
            results = run_pruning_benchmark(model=args.model, windows=args.windows, repeats=args.repeats,
                                            seqlen=args.seqlen, device=args.device, dtype=args.dtype,
                                            load_times=not args.no_load_times)
    width = max(len(r.name) for r in results)
    print(f"{'benchmark':<{width}}  {'value':>10}  unit  {'ratio':>7}")
    for r in results:
        value = f"{r.value:10d}" if isinstance(r.value, int) else f"{r.value:10.3f}"  # counts: steps, cycles
        ratio = f"{r.ratio:7.3f}" if r.ratio is not None else f"{'':>7}"
        print(f"{r.name:<{width}}  {value}  {r.unit:<4}  {ratio}")
    if args.what == "simulate" and not args.scalesim_python:
        print("SCALE-Sim side by side: skipped; add --scalesim-python PATH, a Python with scalesim==3.0.0 "
              "(see scripts/scalesim_golden.py)")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from nmsim.io import atomic_write_text
    from nmsim.accuracy.summary import summary_markdown

    text = summary_markdown(args.tables)
    if args.out:
        atomic_write_text(args.out, text)
        log.info("summary written to %s", args.out)
    else:
        print(text)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from nmsim.pipeline import SimulateRequest, check_output_file, simulate

    check_output_file(args.json, "--json")
    output = simulate(SimulateRequest(
        hw=args.hw, model=args.model, phase=args.phase, batch=args.batch, seq=args.seq, traces=args.traces,
        pattern=args.pattern, baseline=args.baseline, ideal=args.ideal, ideal_memory=args.ideal_memory,
        measure=args.measure, stats_from=args.stats_from, generate=args.generate, devices=args.devices,
        attention=args.attention, prune_lm_head=args.prune_lm_head, linear_only=args.linear_only,
        no_limits=args.no_limits,
    ))
    print(output.text(per_layer=args.per_layer, gemms=args.gemms))
    if args.json:
        output.write_json(args.json)
        log.info("JSON written to %s", args.json)
    return 0


def _capture(args: argparse.Namespace) -> int:
    from nmsim.accuracy.study import set_threads
    from nmsim.patterns import parse_pattern
    from nmsim.sparsify.linear import SparsityConfig
    from nmsim.sparsify.mitigations import parse_mitigation
    from nmsim.sparsify.targets import make_targets, parse_layer_list
    from nmsim.traces.capture import CaptureSettings, run_capture

    _folder_argument("--out", args.out)
    set_threads(args.threads)
    projections = tuple(_csv(args.projections))
    unknown = [p for p in projections if p not in PROJECTIONS]
    if unknown or not projections:
        raise NmsimError(f"--projections {args.projections!r}: choose from {', '.join(PROJECTIONS)}")
    config = SparsityConfig(
        parse_pattern(args.pattern), args.criterion, parse_mitigation(args.mitigation),
        make_targets(args.targets, phase="prefill" if args.prefill_only else "all"),
    )
    settings = CaptureSettings(
        prefill_windows=args.prefill_windows, seqlen=args.seqlen, decode_prompts=args.decode_prompts,
        decode_batch=args.decode_batch, prompt_tokens=args.prompt_tokens, decode_steps=args.decode_steps,
        values_tokens=args.values_tokens, layers=parse_layer_list(args.layers) if args.layers else None,
        projections=projections,
    )
    if settings.layers is not None:  # refuse missing layers before the model loads (capture_trace checks again)
        from nmsim.registry import find_model

        entry = find_model(args.model)
        beyond = sorted(layer for layer in settings.layers if entry is not None and layer >= entry.shape.num_layers)
        if beyond:
            raise NmsimError(f"--layers {args.layers}: {args.model} has decoder layers 0-{entry.shape.num_layers - 1}"
                             f", not {', '.join(map(str, beyond[:8]))}{' ...' if len(beyond) > 8 else ''}")
    try:
        out = run_capture(config, args.out, settings, model=args.model, data_dir=args.data_dir, device=args.device,
                          dtype=args.dtype)
    except KeyboardInterrupt:
        log.error("interrupted: finished units are saved in %s; rerun the same command to resume", args.out)
        return 130
    log.info("trace written to %s", out)
    return 0


def _traces(args: argparse.Namespace) -> int:
    from nmsim.accuracy.study import set_threads
    from nmsim.registry import COMMITTED_METHODS, TRACE_ROOT
    from nmsim.traces.committed import build_trace, method_config, write_index
    from nmsim.traces.format import Trace
    from nmsim.traces.stats import compute_statistics, write_statistics

    root = Path(args.root) if args.root else TRACE_ROOT
    _folder_argument("--root", args.root)
    if args.action == "stats":  # a folder is written there (profile and transfer --out name files)
        _folder_argument("--out", args.out)
    if args.action == "build":
        set_threads(args.threads)
        methods = COMMITTED_METHODS if args.all else [(args.pattern, args.mitigation)]
        for pattern, mitigation in methods:
            build_trace(method_config(pattern, mitigation, args.criterion), root, model=args.model,
                        data_dir=args.data_dir, device=args.device, dtype=args.dtype)
        log.info("index written to %s", write_index(root))
        return 0
    if args.action == "index":
        log.info("index written to %s", write_index(root))
        return 0
    if args.action == "profile":
        from nmsim.traces.profile import PROFILE_FILE, profile_from_trace, write_profile
        from nmsim.traces.reader import TraceData

        if args.all:
            directories = sorted(p for p in root.iterdir() if (p / "stats").is_dir())
        elif args.trace is not None:
            directories = [Path(args.trace)]
        else:
            raise NmsimError("nmsim traces profile needs a trace directory, or --all for every trace under --root")
        for directory in directories:
            profile = profile_from_trace(TraceData.open(directory))
            out = Path(args.out) if args.out and not args.all else directory / PROFILE_FILE
            write_profile(profile, out)
            summary = "; ".join(f"{phase}: " + ", ".join(f"{name} {error:.4f}" for name, error in errors.items())
                                for phase, errors in profile.fit_summary().items())
            print(f"{out}: {len(profile.inputs)} inputs, union-curve mean abs. error per candidate: {summary}")
        return 0
    if args.action == "transfer":
        from nmsim.io import write_table
        from nmsim.registry import REPORT_PATTERNS, TRACED_MODELS
        from nmsim.traces.transplant import transfer_study

        patterns = _patterns(args.patterns) if args.patterns else REPORT_PATTERNS[1:]
        summary, errors = transfer_study(TRACED_MODELS, patterns, root)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if args.out:
            out = Path(args.out)
            write_table(errors, out.parent, out.name)
            write_table(summary, out.parent, f"{out.name}_summary")
            log.info("per-layer errors in %s.csv, the summary in %s_summary.csv", out, out)
        return 0
    if args.trace is None:
        raise NmsimError(f"nmsim traces {args.action} needs a trace directory")
    if args.action == "verify":
        from nmsim.traces.format import verify_directory

        for line in verify_directory(Path(args.trace)):
            print(line)
        return 0
    out = Path(args.out) if args.out else Path(args.trace) / "stats"
    if out.exists() and not out.is_dir():
        raise NmsimError(f"--out {out}: a file, not a directory; the statistics go into a directory")
    trace = Trace.open(args.trace)
    statistics = compute_statistics(trace)
    write_statistics(statistics, out, trace.manifest)
    summary = statistics.inputs.groupby("phase")[["density", "natural_zero_fraction"]].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    log.info("statistics tables written to %s", out)
    return 0


def _lm_eval(args: argparse.Namespace) -> int:
    """lm_eval's own command line with the model "nmsim" registered (lm_eval loads no plugins by itself)."""
    from nmsim.accuracy.lm_eval_adapter import run_lm_eval

    return run_lm_eval(args.lm_eval_args)


def _add_method_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pattern", default="8:16", help="sparsity pattern, or dense (default: %(default)s)")
    parser.add_argument("--criterion", default="magnitude", help="selection criterion (default: %(default)s)")
    parser.add_argument("--mitigation", default="none", help="mitigation (default: %(default)s)")


def _add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="WikiText-2 directory (default: $NMSIM_DATA, then ../shared/data)")
    parser.add_argument("--threads", type=_process_count, help="CPU threads (default: all cores)")
    _add_device_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    from nmsim.registry import STUDY_GRID as DEFAULT_STUDY

    parser = argparse.ArgumentParser(
        prog="nmsim", description="Which N:M activation-sparsity patterns should an accelerator support?"
    )
    parser.add_argument("--version", action="version", version=f"nmsim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the main job: accuracy rows, traces and every design in hw_configs/ "
                                          "→ reports/<name>/ (tables, figures, report.md and report.html)")
    _add_study_arguments(run, DEFAULT_STUDY)
    _add_report_arguments(run)
    run.set_defaults(handler=_run)

    sweep = commands.add_parser("sweep", help="evaluate a design over a grid of parameter values (YAML), in "
                                              "parallel on local cores or a Dask cluster")
    sweep.add_argument("file", help="sweep file: design, parameters (key path → values), patterns, phases, "
                                    "batch_sizes, seq_tokens, model, baseline")
    _add_parallel_arguments(sweep)
    sweep.add_argument("--out", help="output prefix (default: reports/sweeps/<file stem>)")
    sweep.set_defaults(handler=_sweep)

    evaluate = commands.add_parser(
        "eval", help="perplexity for a grid of dense + pattern × criterion × mitigation × targets"
    )
    _add_study_arguments(evaluate, {**DEFAULT_STUDY, "patterns": ["8:16"], "mitigations": ["none"]})
    evaluate.add_argument("--workers", type=_process_count,
                          help="spread the grid's rows over a local Dask cluster of this many processes, each loading "
                               "the model once (with --device cuda and several GPUs: one per GPU)")
    evaluate.add_argument("--scheduler", metavar="ADDRESS",
                          help="spread the grid's rows over the workers of this Dask scheduler (tcp://host:8786); "
                               "they share $NMSIM_CACHE and the data and model paths")
    evaluate.set_defaults(handler=_run_study)

    # Everything after `lm-eval` goes to lm_eval unparsed ('\0' prefix: no option of ours, not even --help).
    lm_eval = commands.add_parser("lm-eval", add_help=False, prefix_chars="\0",
                                  help="lm-evaluation-harness with --model nmsim (the pruned model; needs lm_eval): "
                                       "nmsim lm-eval --model nmsim --model_args pretrained=…,pattern=8:16 --tasks …")
    lm_eval.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm_eval's arguments")
    lm_eval.set_defaults(handler=_lm_eval)

    capture = commands.add_parser("capture", help="capture activation traces from a real dense or pruned run")
    capture.add_argument("--model", default=DEFAULT_MODEL, help="model (default: %(default)s)")
    _add_method_arguments(capture)
    capture.add_argument("--targets", default="all", help="pruned projections: preset or list (default: all)")
    capture.add_argument("--prefill-only", action="store_true", help="leave decode tokens dense")
    capture.add_argument("--layers", help="record only these decoder layers, e.g. 0-3 (default: all)")
    capture.add_argument("--projections", default="q,k,v,o,gate,up,down",
                         help="record only these projections (default: %(default)s)")
    capture.add_argument("--prefill-windows", type=_positive_int, default=4,
                         help="WikiText-2 test windows captured in prefill (default: %(default)s)")
    capture.add_argument("--seqlen", type=_positive_int, default=512, help="window length (default: 512)")
    capture.add_argument("--decode-prompts", type=_non_negative_int, default=4,
                         help="prompts decoded greedily with the KV cache; 0 skips decode (default: 4)")
    capture.add_argument("--decode-batch", type=_positive_int, default=4, help="prompts per batch (default: 4)")
    capture.add_argument("--prompt-tokens", type=_positive_int, default=128, help="prompt length (default: 128)")
    capture.add_argument("--decode-steps", type=_positive_int, default=32,
                         help="decode steps (new tokens after the first) per prompt (default: 32)")
    capture.add_argument("--values-tokens", type=_non_negative_int, default=4,
                         help="tokens per phase whose dense and pruned values are stored (default: 4)")
    _add_machine_arguments(capture)
    capture.add_argument("--out", required=True, help="trace directory to create (or resume)")
    capture.set_defaults(handler=_capture)

    summary = commands.add_parser(
        "summary", help="the study summary of finished accuracy tables: 2:4/4:8/8:16 vs 16:32 ratios, activation vs "
                        "weight pruning")
    summary.add_argument("tables", nargs="+", type=Path, help="accuracy tables (CSV) written by nmsim eval")
    summary.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    summary.set_defaults(handler=_summary)

    simulate = commands.add_parser(
        "simulate", help="end-to-end inference on one design (TTFT, TPOT, tokens/s, time per op class, memory) and "
                         "the cycles, bytes, energy and area of every linear GEMM")
    simulate.add_argument("--hw", required=True, help="accelerator: a preset in hw_configs/ (e.g. act-8of16) or a "
                                                      "YAML file")
    simulate.add_argument("--model", required=True, help="shape preset (smollm2-135m, gemma3-270m, llama-2-7b, "
                                                         "llama-3.1-8b, qwen2.5-7b, gemma-3-4b, llama-3-70b, "
                                                         "mixtral-8x7b), a Hugging Face config.json (Llama, Mistral, "
                                                         "Mixtral, Qwen, Qwen-MoE, Gemma, GPT-2, OPT) or a .gguf "
                                                         "file")
    simulate.add_argument("--traces", help="a trace directory (e.g. traces/smollm2-135m_8of16_magnitude_none): "
                                           "layer patterns and statistics from real masks (default: the model's "
                                           "committed trace for the pattern, else a transplanted profile)")
    simulate.add_argument("--pattern", help="pattern the layers use (default: the trace's, else the design's "
                                            "largest supported one)")
    simulate.add_argument("--phase", choices=["prefill", "decode"], default="prefill",
                          help="the phase whose per-layer and per-GEMM tables are shown (default: prefill); the "
                               "end-to-end summary always has both")
    simulate.add_argument("--batch", type=_positive_int, default=1, help="sequences (default: 1)")
    simulate.add_argument("--seq", type=_positive_int, default=512,
                          help="prompt tokens per sequence: prefill's length and the context decode starts from "
                               "(default: 512)")
    simulate.add_argument("--generate", type=_positive_int, default=128,
                          help="decode steps averaged for the time per output token, at contexts seq+1 … "
                               "seq+generate (default: 128)")
    simulate.add_argument("--devices", type=_positive_int, default=1,
                          help="tensor-parallel devices (Megatron-style; the design's interconnect; default: 1)")
    simulate.add_argument("--attention", choices=["fused", "unfused"], default="fused",
                          help="fused FlashAttention-style kernel, or QK^T, softmax and AV as three kernels with the "
                               "score matrix through memory (default: fused)")
    simulate.add_argument("--prune-lm-head", action="store_true",
                          help="run the LM head with the pattern too (idealised N/M masks; default: dense)")
    simulate.add_argument("--linear-only", action="store_true",
                          help="only the linear GEMMs, as before end-to-end timing (no vector unit needed)")
    simulate.add_argument("--per-layer", action="store_true", help="every op of every layer instead of alike "
                                                                   "layers collapsed")
    simulate.add_argument("--gemms", action="store_true", help="also print the per-GEMM table")
    simulate.add_argument("--baseline", default=BASELINE_DESIGN, help="dense baseline design (default: %(default)s)")
    simulate.add_argument("--ideal", action="store_true",
                          help="also show the idealised N/M answer side by side (it assumes every token of a tile keeps "
                               "the same values; a warning says so); without mask statistics, show it alone")
    simulate.add_argument("--stats-from", metavar="MODEL",
                          help="mask statistics transplanted from this traced model's profiles (smollm2-135m, "
                               "gemma3-270m; default: the model's own trace, else the registry's choice)")
    simulate.add_argument("--ideal-memory", action="store_true",
                          help="memory without bandwidth or latency limits (SCALE-Sim's CALC mode)")
    simulate.add_argument("--measure", action="store_true",
                          help="add the measured torch 2:4 vs dense ratio per GEMM shape (needs a CUDA GPU)")
    simulate.add_argument("--json", type=Path, help="write every number to this JSON file")
    simulate.add_argument("--no-limits", action="store_true",
                          help="lift the bounds on the work asked for (batch × seq at most 2^24 tokens, --generate "
                               "2^17, --devices 1024, --seq the model's context)")
    simulate.set_defaults(handler=_simulate)

    validate = commands.add_parser(
        "validate", help="nmsim against measured GPUs: every measurement set in the package (and --set), predicted "
                         "vs measured per GEMM or vector op, errors per set, a table and a figure; and the area "
                         "model against published area ratios")
    validate.add_argument("--set", type=Path, dest="user_set", metavar="CSV",
                          help="also validate this measurement CSV (M,K,N with latency_ms or latency_us; or M,N,K with "
                               "dense_…_us and sparse_2of4_…_us; with --kind softmax|layernorm, M,N with "
                               "gelements_per_s or latency_us)")
    validate.add_argument("--kind", choices=["gemm", "softmax", "layernorm"], default="gemm",
                          help="with --set: what it measured, GEMMs or an FP16 vector op over the last dim of M x N "
                               "(default: %(default)s)")
    validate.add_argument("--hw", help="with --set: the measured part's dense design (preset or YAML)")
    validate.add_argument("--sparse-hw", help="with --set: its 2:4 design, for a set with a 2:4 column")
    validate.add_argument("--harness", choices=["device", "host"], default="device",
                          help="with --set: device (kernel time) or host (a framework call timed from Python; adds "
                               "timing.yaml's host_dispatch_us) (default: %(default)s)")
    validate.add_argument("--only-user-set", action="store_true", help="with --set: skip the package's sets")
    validate.add_argument("--out", type=Path, default=Path("reports/validation"),
                          help="directory of validation.csv/.parquet, validation_summary.csv/.parquet, "
                               "area_validation.csv/.parquet and validation.png/.svg (default: %(default)s)")
    validate.set_defaults(handler=_validate)

    traces = commands.add_parser("traces", help="verify a trace, compute its statistics and profile, validate profile "
                                                "transfer, build the committed set")
    traces.add_argument("action", choices=["verify", "stats", "profile", "transfer", "build", "index"],
                        help="verify: check every checksum; stats: write statistics tables; profile: fit the mask "
                             "model and write TRACE/profile.json; transfer: how well each traced model's profiles "
                             "predict the other's measured statistics (and held-out layers); build: capture the "
                             "committed traces (--all, or one --pattern/--mitigation; --model); index: rewrite "
                             "ROOT/README.md")
    traces.add_argument("trace", nargs="?", help="trace directory (verify, stats, profile)")
    traces.add_argument("--out", help="stats: statistics directory (default: TRACE/stats); profile: the file "
                                      "(default: TRACE/profile.json); transfer: a table prefix for the errors")
    traces.add_argument("--all", action="store_true", help="build: every committed method; profile: every trace under "
                                                           "--root")
    _add_method_arguments(traces)
    traces.add_argument("--root", help="build, index: trace root (default: the package's, traces/ in a checkout)")
    traces.add_argument("--model", default=DEFAULT_MODEL, help="build: the model to capture (default: %(default)s)")
    traces.add_argument("--patterns", help="transfer: patterns to validate (default: every study pattern)")
    _add_machine_arguments(traces)
    traces.set_defaults(handler=_traces)

    bench = commands.add_parser("bench", help="speed: pruned vs dense forward, model load, trace capture, "
                                              "learnable calibration, cycle simulator")
    bench.add_argument("what", nargs="?", choices=["prune", "capture", "calibrate", "simulate", "profile", "report"],
                       default="prune",
                       help="prune: forward and load times (default); capture: trace capture cost and size; "
                            "calibrate: one learnable scale + shift calibration from scratch; "
                            "simulate: sweep time, cost growth, and SCALE-Sim beside nmsim (smollm2-135m); "
                            "profile: fitting a mask profile, and simulating with one vs with a trace; "
                            "report: nmsim run from committed inputs, and a parameter sweep serial vs parallel")
    bench.add_argument("--model", default=DEFAULT_MODEL, help="prune, capture, calibrate: model to benchmark "
                                                               "(default: %(default)s)")
    bench.add_argument("--seqlen", type=_int_at_least(2), default=512,
                       help="prune, capture, calibrate: tokens per window (default: %(default)s)")
    bench.add_argument("--learn-windows", type=_positive_int, default=64,
                       help="calibrate: calibration windows of --seqlen tokens (default: %(default)s; the paper: "
                            "256)")
    bench.add_argument("--windows", type=_positive_int, default=2,
                       help="prune, capture: windows of --seqlen tokens per timing (default: %(default)s)")
    bench.add_argument("--repeats", type=_positive_int, default=3, help="interleaved repeats, best kept (default: 3)")
    bench.add_argument("--no-load-times", action="store_true",
                       help="prune: forward times only, no cold and cached model load (a GGUF conversion each)")
    bench.add_argument("--threads", type=_process_count, help="CPU threads (default: all cores)")
    _add_device_arguments(bench)  # prune and calibrate
    bench.add_argument("--designs", type=_csv, metavar="NAMES",
                       help="simulate: designs of the whole-model sweep; report: designs of the report (comma "
                            "separated preset names; default: every preset)")
    bench.add_argument("--models", type=_csv, metavar="NAMES",
                       help="simulate: models of the model-size growth (comma separated; default: every model "
                            "shape preset)")
    bench.add_argument("--patterns", type=_patterns,
                       help="report: patterns of the report, dense always included (default: the report's: dense, "
                            "2:4, 4:8, 8:16, 16:32, unstructured:0.5)")
    bench.add_argument("--sweep-values", type=_positive_int, default=4, metavar="K",
                       help="report: the first K values of each of the 3 swept parameters, K^3 points (default: "
                            "%(default)s, 64 points)")
    bench.add_argument("--scalesim-python", metavar="PATH",
                       help="simulate: a Python with scalesim==3.0.0 installed, to time SCALE-Sim on the same GEMMs "
                            "(a few minutes)")
    bench.set_defaults(handler=_bench)
    return parser


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error: the path and what went wrong (for a full disk, the space free)."""
    import errno

    from nmsim.io import disk_full_error

    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename:
        return str(disk_full_error(exc.filename, None, kept="finished outputs written before it are kept"))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a library's write that named no file
        return ("no space left on the device (the file being written was not named); finished outputs written "
                "before it are kept. Free some space and rerun the same command")
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = "nmsim " + " ".join(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("transformers", "huggingface_hub", "numba", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        with logging_redirect_tqdm():  # log lines do not tear the progress bars
            return args.handler(args)
    except NmsimError as exc:
        print(f"nmsim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no (full disk, permissions, a folder where a file goes)
        print(f"nmsim: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nmsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
