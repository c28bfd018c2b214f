"""The committed trace set in ``traces/``: statistics from full captures plus a small raw sample per method.

For each method, ``build_trace`` runs (1) a full capture (16,384 prefill + 256 decode tokens) into the cache
directory, computes its statistics into ``traces/<name>/stats/`` and keeps its manifest as
``traces/<name>/full_manifest.json``, then deletes the bulky shards; and (2) a small capture whose raw masks
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
from nmsim.traces.format import Trace, read_manifest
from nmsim.traces.profile import PROFILE_FILE, profile_from_trace, write_profile
from nmsim.traces.reader import TraceData
from nmsim.traces.stats import compute_statistics, write_statistics

log = logging.getLogger(__name__)

FULL = CaptureSettings(prefill_windows=32, seqlen=512, decode_prompts=8, decode_batch=4, prompt_tokens=128,
                       decode_steps=32, values_tokens=0)
SAMPLE = CaptureSettings(prefill_windows=1, seqlen=128, decode_prompts=2, decode_batch=2, prompt_tokens=64,
                         decode_steps=24, values_tokens=1)
# The other models' samples are smaller, to keep the committed set within its size budget (see traces/README.md).
COMPACT_SAMPLE = CaptureSettings(prefill_windows=1, seqlen=64, decode_prompts=2, decode_batch=2, prompt_tokens=32,
                                 decode_steps=8, values_tokens=1)


def sample_settings(model: str) -> CaptureSettings:
    """The raw sample's capture settings: :data:`SAMPLE` for the default model, :data:`COMPACT_SAMPLE` else."""
    return SAMPLE if model == DEFAULT_MODEL else COMPACT_SAMPLE


def config_trace_name(config: SparsityConfig, model: str = DEFAULT_MODEL) -> str:
    """:func:`nmsim.registry.trace_name` of a pruning method."""
    return trace_name(model, config.pattern, config.criterion, str(config.mitigation))


def method_config(pattern: Pattern | str, mitigation: str = "none", criterion: str = "magnitude") -> SparsityConfig:
    return SparsityConfig(parse_pattern(pattern), criterion, parse_mitigation(mitigation))


def build_trace(config: SparsityConfig, root: str | Path = TRACE_ROOT, model: str = DEFAULT_MODEL,
                data_dir: str | None = None) -> Path:
    """Statistics of a full capture and a raw sample for one method, under ``root/<name>``."""
    name = config_trace_name(config, model)
    target = Path(root) / name
    full = cache_root() / "captures" / name
    if not (target / "stats" / "inputs.csv").exists():
        log.info("%s: full capture (%d prefill windows of %d, %d x %d decode tokens)", name, FULL.prefill_windows,
                 FULL.seqlen, FULL.decode_prompts, FULL.decode_steps)
        run_capture(config, full, FULL, model=model, data_dir=data_dir)
        write_statistics(compute_statistics(Trace.open(full)), target / "stats")
        atomic_write_text(target / "full_manifest.json", json.dumps(read_manifest(full), indent=1, sort_keys=True)
                          + "\n")
        shutil.rmtree(full)
    if not (target / PROFILE_FILE).exists():
        write_profile(profile_from_trace(TraceData.open(target)), target / PROFILE_FILE)
    log.info("%s: raw sample", name)
    run_capture(config, target / "sample", sample_settings(model), model=model, data_dir=data_dir)
    return target


def rebuild_trace(config: SparsityConfig, root: str | Path = TRACE_ROOT, model: str = DEFAULT_MODEL,
                  data_dir: str | None = None) -> Path:
    """Capture one committed trace again from scratch; it replaces ``root/<name>`` only once complete."""
    root = Path(root)
    name = config_trace_name(config, model)
    staging = root / ".rebuild"
    shutil.rmtree(staging / name, ignore_errors=True)
    built = build_trace(config, staging, model, data_dir)
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
    """Write ``root/README.md``: every committed trace with its manifest summary and headline statistics."""
    root = Path(root)
    rows = []
    for directory in sorted(p for p in root.iterdir() if (p / "full_manifest.json").exists()):
        full = json.loads((directory / "full_manifest.json").read_text())
        sample = read_manifest(directory / "sample") if (directory / "sample" / "manifest.json").exists() else None
        method = full["method"]
        size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        rows.append({
            "trace": directory.name,
            "pattern": method["pattern"],
            "criterion": "-" if method["kept_all"] else method["criterion"],
            "mitigation": "-" if method["kept_all"] else method["mitigation"],
            "full capture tokens (prefill + decode)": "{prefill} + {decode}".format(**full["token_counts"]),
            "sample tokens": "{prefill} + {decode}".format(**sample["token_counts"]) if sample else "-",
            **_headline(directory / "stats"),
            "MB on disk": f"{size / 1e6:.1f}",
        })
    table = pd.DataFrame(rows)
    header = "| " + " | ".join(table.columns) + " |\n| " + " | ".join("---" for _ in table.columns) + " |\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))
    first = json.loads((root / rows[0]["trace"] / "full_manifest.json").read_text()) if rows else {}
    text = INDEX_TEMPLATE.format(
        model=first.get("model", {}).get("name", DEFAULT_MODEL),
        source=first.get("model", {}).get("source", ""),
        data=first.get("data", {}).get("name", ""),
        data_sha=first.get("data", {}).get("sha256", ""),
        full=json.dumps(FULL.describe()),
        sample=json.dumps(SAMPLE.describe()),
        table=header + body,
        total=sum(float(r["MB on disk"]) for r in rows),
    )
    atomic_write_text(root / "README.md", text)
    return root / "README.md"


INDEX_TEMPLATE = """# Committed activation traces

Real traces of {model} ({source}) on {data} (sha256 of the joined text `{data_sha}`), with every decoder layer's
seven projections pruned (targets `all`). Each directory holds:

- `stats/`: the statistics of a **full capture**: `inputs.csv` (density, natural zeros), `group_nnz.csv`,
  `weight_fetch.csv` (union-of-masks weight rows per tile of T tokens), `compression.csv` (bytes per metadata
  format and value type), `agreement.csv` (mask overlap between tokens and layers). Column meanings:
  `nmsim/traces/stats.py`.
- `full_manifest.json`: the manifest of that full capture (settings, token counts, shard checksums). Its shards
  are not committed; they take about 13 KB per token.
- `sample/`: a small raw trace (format: `docs/trace_format.md`), with the masks of every layer and the values of one
  prefill and one decode token.

Full capture settings: `{full}`
Sample settings: `{sample}`

Regenerate one trace (for example 8:16 with median shift), or all of them and this page:

```bash
nmsim traces build --pattern 8:16 --mitigation median-shift
nmsim traces build --all
```

{table}
Total: {total:.1f} MB. "rows needed" is the fraction of weight rows (K indices) that the union of T consecutive
tokens' masks touches: what a GEMV engine must fetch. A dense trace needs all of them.
"""
