"""The committed trace set in ``traces/``: statistics from full captures plus a small raw sample per method.

For each method, ``build_trace`` runs (1) a full capture (16,384 prefill + 256 decode tokens) into the cache
directory, computes its statistics into ``traces/<name>/stats/`` and keeps its manifest as
``traces/<name>/full_manifest.json`` (``stats/checksums.json`` holds each table's sha256 and that manifest's
checksum), then deletes the bulky shards; and (2) a small capture whose raw masks
(128 prefill + 48 decode tokens, every layer) and values (1 token per phase) are committed in
``traces/<name>/sample/``. Both steps resume after an interruption. ``write_index`` writes ``traces/README.md``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from nmsim.io import atomic_write_text
from nmsim.llm.models import cache_root
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import DEFAULT_MODEL, TRACE_ROOT, trace_name
from nmsim.sparsify.linear import SparsityConfig
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.traces.capture import CaptureSettings, run_capture
from nmsim.traces.format import Trace, manifest_text, read_manifest
from nmsim.traces.profile import PROFILE_FILE, profile_from_trace, write_profile
from nmsim.traces.reader import TraceData
from nmsim.traces.stats import compute_statistics, write_statistics

log = logging.getLogger(__name__)

FULL = CaptureSettings(prefill_windows=32, seqlen=512, decode_prompts=8, decode_batch=4, prompt_tokens=128,
                       decode_steps=32, values_tokens=0)
SAMPLE = CaptureSettings(prefill_windows=1, seqlen=128, decode_prompts=2, decode_batch=2, prompt_tokens=64,
                         decode_steps=24, values_tokens=1)
# The other models' samples are smaller, to keep the committed set within its size budget (see traces/README.md).
BUDGET_MB, CEILING_MB = 40, 60
COMPACT_SAMPLE = CaptureSettings(prefill_windows=1, seqlen=32, decode_prompts=2, decode_batch=2, prompt_tokens=16,
                                 decode_steps=4, values_tokens=1)


def sample_settings(model: str) -> CaptureSettings:
    """The raw sample's capture settings: :data:`SAMPLE` for the default model, :data:`COMPACT_SAMPLE` else."""
    return SAMPLE if model == DEFAULT_MODEL else COMPACT_SAMPLE


def config_trace_name(config: SparsityConfig, model: str = DEFAULT_MODEL) -> str:
    """:func:`nmsim.registry.trace_name` of a pruning method."""
    return trace_name(model, config.pattern, config.criterion, str(config.mitigation))


def method_config(pattern: Pattern | str, mitigation: str = "none", criterion: str = "magnitude") -> SparsityConfig:
    return SparsityConfig(parse_pattern(pattern), criterion, parse_mitigation(mitigation))


def build_trace(config: SparsityConfig, root: str | Path = TRACE_ROOT, model: str = DEFAULT_MODEL,
                data_dir: str | None = None, *, device: str = "cpu", dtype: str = "float32") -> Path:
    """Statistics of a full capture and a raw sample for one method, under ``root/<name>`` (the model in ``dtype``
    on ``device``)."""
    name = config_trace_name(config, model)
    target = Path(root) / name
    full = cache_root() / "captures" / name
    if not (target / "stats" / "inputs.csv").exists():
        log.info("%s: full capture (%d prefill windows of %d, %d x %d decode tokens)", name, FULL.prefill_windows,
                 FULL.seqlen, FULL.decode_prompts, FULL.decode_steps)
        run_capture(config, full, FULL, model=model, data_dir=data_dir, device=device, dtype=dtype)
        manifest = read_manifest(full)  # kept as full_manifest.json, written with the statistics (all or none)
        write_statistics(compute_statistics(Trace.open(full)), target / "stats", manifest,
                         extra={target / "full_manifest.json": manifest_text(manifest).encode("utf-8")})
        shutil.rmtree(full)
    if not (target / PROFILE_FILE).exists():
        write_profile(profile_from_trace(TraceData.open(target)), target / PROFILE_FILE)
    log.info("%s: raw sample", name)
    run_capture(config, target / "sample", sample_settings(model), model=model, data_dir=data_dir, device=device,
                dtype=dtype)
    return target


def rebuild_trace(config: SparsityConfig, root: str | Path = TRACE_ROOT, model: str = DEFAULT_MODEL,
                  data_dir: str | None = None, *, device: str = "cpu", dtype: str = "float32") -> Path:
    """Capture one committed trace again from scratch; it replaces ``root/<name>`` only once complete."""
    root = Path(root)
    name = config_trace_name(config, model)
    staging = root / ".rebuild"
    shutil.rmtree(staging / name, ignore_errors=True)
    built = build_trace(config, staging, model, data_dir, device=device, dtype=dtype)
    target, old = root / name, root / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _headline(stats_dir: Path) -> dict:
    inputs = pd.read_csv(stats_dir / "inputs.csv")
    fetch = pd.read_csv(stats_dir / "weight_fetch.csv")
    compression = pd.read_csv(stats_dir / "compression.csv")
    agreement = pd.read_csv(stats_dir / "agreement.csv")  # empty for dense traces: no masks to compare

    def fetch_at(phase: str, tile: int) -> str:
        rows = fetch[(fetch["phase"] == phase) & (fetch["tile_tokens"] == tile)]
        return f"{rows['weight_rows_needed_fraction'].mean():.3f}" if len(rows) else "-"

    fp16 = compression[compression["value_dtype"] == "fp16"]
    best = fp16.groupby("metadata_format")["ratio_to_dense"].mean()
    token_overlap = "-"
    if len(agreement):
        rows = agreement[(agreement["relation"] == "token") & (agreement["phase"] == "prefill")]
        token_overlap = f"{rows['kept_overlap'].mean():.3f}"
    return {
        "density": f"{inputs['density'].mean():.3f}",
        "natural zeros": f"{inputs['natural_zero_fraction'].mean():.4f}",
        "decode rows needed, T=1 / 4 / 16": " / ".join(fetch_at("decode", t) for t in (1, 4, 16)),
        "prefill rows needed, T=128": fetch_at("prefill", 128),
        "fp16 bytes vs dense (best format)": f"{best.min():.3f} ({best.idxmin()})",
        "token overlap (prefill)": token_overlap,
    }


def write_index(root: str | Path = TRACE_ROOT) -> Path:
    """Write ``root/README.md``: every committed trace, model by model, with its manifest summary and headline
    statistics."""
    root = Path(root)
    if not root.is_dir():
        from nmsim.errors import NmsimError

        raise NmsimError(f"trace root {root}: not a directory")
    by_model: dict[str, list[dict]] = {}
    sources: dict[str, dict] = {}
    for directory in sorted(p for p in root.iterdir() if (p / "full_manifest.json").exists()):
        full = json.loads((directory / "full_manifest.json").read_text())
        sample = read_manifest(directory / "sample") if (directory / "sample" / "manifest.json").exists() else None
        method = full["method"]
        model = full.get("model", {}).get("name", DEFAULT_MODEL)
        sources.setdefault(model, full)
        size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        by_model.setdefault(model, []).append({
            "trace": directory.name,
            "pattern": method["pattern"],
            "criterion": "-" if method["kept_all"] else method["criterion"],
            "mitigation": "-" if method["kept_all"] else method["mitigation"],
            "full capture tokens (prefill + decode)": "{prefill} + {decode}".format(**full["token_counts"]),
            "sample tokens": "{prefill} + {decode}".format(**sample["token_counts"]) if sample else "-",
            **_headline(directory / "stats"),
            "MB on disk": f"{size / 1e6:.1f}",
        })
    sections = []
    for model in sorted(by_model, key=lambda name: (name != DEFAULT_MODEL, name)):  # the default model first
        rows, full = by_model[model], sources[model]
        table = pd.DataFrame(rows)
        header = "| " + " | ".join(table.columns) + " |\n| " + " | ".join("---" for _ in table.columns) + " |\n"
        body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))
        sections.append(SECTION_TEMPLATE.format(
            model=model, source=full.get("model", {}).get("source", ""), data=full.get("data", {}).get("name", ""),
            data_sha=full.get("data", {}).get("sha256", ""), sample=json.dumps(sample_settings(model).describe()),
            table=header + body, total=sum(float(r["MB on disk"]) for r in rows)))
    total = sum(float(r["MB on disk"]) for rows in by_model.values() for r in rows)
    if total <= BUDGET_MB:
        budget = f"within the {BUDGET_MB} MB traces budget."
    else:
        budget = (f"above the {BUDGET_MB} MB traces budget and {'within' if total <= CEILING_MB else 'ABOVE'} its "
                  f"{CEILING_MB} MB ceiling: {DEFAULT_MODEL}'s raw samples (every layer of {SAMPLE.prefill_windows} x "
                  f"{SAMPLE.seqlen} prefill + {SAMPLE.decode_prompts} x {SAMPLE.decode_steps} decode tokens) take most "
                  "of it; the other models' samples are smaller (`COMPACT_SAMPLE`), and the statistics and profiles "
                  "that the simulator reads take about 0.5 MB per trace.")
    text = INDEX_TEMPLATE.format(full=json.dumps(FULL.describe()), sections="\n".join(sections), total=total,
                                 budget=budget)
    atomic_write_text(root / "README.md", text)
    return root / "README.md"


INDEX_TEMPLATE = """# Committed activation traces

Real traces of the embedded models on WikiText-2, with every decoder layer's seven projections pruned (targets
`all`). Each directory holds:

- `stats/`: the statistics of a **full capture**: `inputs.csv` (density, natural zeros), `group_nnz.csv`,
  `weight_fetch.csv` (union-of-masks weight rows per tile of T tokens), `compression.csv` (bytes per metadata
  format and value type), `agreement.csv` (mask overlap between tokens and layers). Column meanings:
  `nmsim/traces/stats.py`.
- `profile.json`: the mask profile: those statistics per layer and input with the fitted statistical mask model
  (`docs/mask_profiles.md`); models without a trace borrow it (`nmsim simulate --model llama-3.1-8b`).
- `full_manifest.json`: the manifest of that full capture (settings, token counts, shard checksums). Its shards
  are not committed; they take about 10-13 KB per token.
- `sample/`: a small raw trace (format: `docs/trace_format.md`), with the masks of every layer and the values of one
  prefill and one decode token.

Full capture settings: `{full}`

Regenerate one trace (for example 8:16 with median shift), or all of a model's and this page:

```bash
nmsim traces build --pattern 8:16 --mitigation median-shift
nmsim traces build --all --model gemma3-270m
```

"rows needed" is the fraction of weight rows (K indices) that the union of T consecutive tokens' masks touches:
what a GEMV engine must fetch. A dense trace needs all of them.

{sections}
Total: {total:.1f} MB, {budget}
"""

SECTION_TEMPLATE = """## {model}

{model} ({source}) on {data} (sha256 of the joined text `{data_sha}`). Sample settings: `{sample}`

{table}
{model}: {total:.1f} MB.
"""
