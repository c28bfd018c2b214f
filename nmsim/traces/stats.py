"""Trace statistics the hardware model needs, computed shard by shard (constant memory) as pandas tables.

Tables (one row per phase × captured input, plus the column named in brackets):

- ``inputs``: tokens, kept density, natural-zero fraction.
- ``group_nnz`` [group_size, kept_in_group]: how many positions each aligned group of 4/8/16/32 keeps.
- ``weight_fetch`` [tile_tokens]: fraction of weight rows (K indices) needed by the union of the masks of
  ``tile_tokens`` consecutive tokens (prefill: positions of one window; decode: step-major, so a tile of B·s
  tokens is s steps of the B sequences decoded together). A GEMV engine fetches only those rows.
- ``compression`` [metadata_format, value_dtype]: compressed activation bytes per token and their ratio to dense.
  Formats per group of M (the pattern's M; 16 for unstructured traces, whose groups hold varying counts):
  index = kept·⌈log2 M⌉ bits, bitmask = M bits, enumerative = ⌈log2 C(M, kept)⌉ bits; a variable-count
  group also spends ⌈log2(M+1)⌉ bits on its count (not needed for index-free bitmask). Dense traces report
  the values alone (format "none").
- ``agreement`` [relation]: mean fraction of a mask's kept positions also kept by the previous token of the
  same sequence ("token") or by the same projection one layer below ("layer"); ``chance`` is the density.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nmsim.errors import NmsimError
from nmsim.io import atomic_write_files
from nmsim.patterns import metadata_bits, parse_pattern
from nmsim.traces.format import Trace, unpack_mask

TILE_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
GROUP_SIZES = (4, 8, 16, 32)
VALUE_BITS = {"fp16": 16, "bf16": 16, "int8": 8}
UNSTRUCTURED_GROUP = 16


@dataclass
class TraceStatistics:
    inputs: pd.DataFrame
    group_nnz: pd.DataFrame
    weight_fetch: pd.DataFrame
    compression: pd.DataFrame
    agreement: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in ("inputs", "group_nnz", "weight_fetch", "compression",
                                                       "agreement")}


class _Accumulator:
    """Running sums for one (phase, input)."""

    def __init__(self, k: int):
        self.k = k
        self.tokens = 0
        self.kept = 0
        self.natural_zeros = 0
        self.group_hist = {g: np.zeros(g + 1, np.int64) for g in GROUP_SIZES}
        self.tile_needed = {t: [0, 0] for t in TILE_SIZES}  # rows needed, rows possible
        self.token_overlap = [0.0, 0]
        self.layer_overlap = [0.0, 0]


def _group_counts(kept: np.ndarray, group: int) -> np.ndarray:
    pad = (-kept.shape[1]) % group
    padded = np.pad(kept, ((0, 0), (0, pad))) if pad else kept
    return padded.reshape(kept.shape[0], -1, group).sum(axis=2)


def _overlap(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Per row: |current ∩ previous| / |current| (rows keeping nothing count as full agreement)."""
    kept = current.sum(axis=1)
    both = (current & previous).sum(axis=1)
    return np.where(kept > 0, both / np.maximum(kept, 1), 1.0)


def compute_statistics(trace: Trace) -> TraceStatistics:
    """All statistics of a trace (see the module docstring), read shard by shard."""
    sites = {s.key: s for s in trace.inputs}
    kept_all = trace.manifest["method"]["kept_all"]
    acc: dict[tuple[str, str], _Accumulator] = {}
    below = {}  # input key -> the input of the same projections one layer below
    for site in trace.inputs:
        lower = f"L{site.layer - 1}.{'+'.join(site.projections)}"
        if lower in sites and sites[lower].k == site.k:
            below[site.key] = lower
    for entry, arrays in trace.shards():
        phase = entry["phase"]
        sequence, position = arrays["token.sequence"], arrays["token.position"]
        order = np.lexsort((position, sequence))
        follows = (np.diff(sequence[order]) == 0) & (np.diff(position[order]) == 1)
        masks = {}
        for key, site in sites.items():
            a = acc.setdefault((phase, key), _Accumulator(site.k))
            tokens = len(sequence)
            a.tokens += tokens
            a.natural_zeros += int(arrays[f"{key}.natural_zeros"].sum())
            kept = (np.ones((tokens, site.k), bool) if kept_all else unpack_mask(arrays[f"{key}.kept"], site.k))
            masks[key] = kept
            a.kept += int(kept.sum())
            for group in GROUP_SIZES:
                a.group_hist[group] += np.bincount(_group_counts(kept, group).ravel(), minlength=group + 1)
            for tile in TILE_SIZES:
                whole = tokens // tile
                if whole:
                    union = kept[: whole * tile].reshape(whole, tile, site.k).any(axis=1)
                    a.tile_needed[tile][0] += int(union.sum())
                    a.tile_needed[tile][1] += whole * site.k
            if follows.any():
                ordered = kept[order]
                pairs = _overlap(ordered[1:][follows], ordered[:-1][follows])
                a.token_overlap[0] += float(pairs.sum())
                a.token_overlap[1] += len(pairs)
        for key, lower in below.items():
            pairs = _overlap(masks[key], masks[lower])
            a = acc[(phase, key)]
            a.layer_overlap[0] += float(pairs.sum())
            a.layer_overlap[1] += len(pairs)
    return _tables(trace, sites, acc, kept_all)


def _tables(trace: Trace, sites, acc, kept_all: bool) -> TraceStatistics:
    pattern = parse_pattern(trace.pattern)
    if pattern.kind == "nm":
        format_group, fixed = pattern.m, True
    else:
        format_group, fixed = UNSTRUCTURED_GROUP, False
    inputs, groups, fetch, compression, agreement = [], [], [], [], []
    for (phase, key), a in acc.items():
        site = sites[key]
        base = {"phase": phase, "input": key, "layer": site.layer, "projections": "+".join(site.projections),
                "k": site.k}
        density = a.kept / (a.tokens * a.k)
        inputs.append({**base, "tokens": a.tokens, "density": density,
                       "natural_zero_fraction": a.natural_zeros / (a.tokens * a.k)})
        for group, hist in a.group_hist.items():
            total = hist.sum()
            groups += [{**base, "group_size": group, "kept_in_group": c, "fraction_of_groups": hist[c] / total}
                       for c in range(group + 1) if hist[c]]
        for tile, (needed, possible) in a.tile_needed.items():
            if possible:
                fetch.append({**base, "tile_tokens": tile, "weight_rows_needed_fraction": needed / possible})
        hist = a.group_hist.get(format_group)
        groups_per_token = math.ceil(a.k / format_group)
        for dtype, value_bits in VALUE_BITS.items():
            dense_bytes = a.k * value_bits / 8
            formats = ["none"] if kept_all else ["index", "bitmask", "enumerative"]
            for fmt in formats:
                if fmt == "none":
                    bits_per_token = a.k * value_bits
                else:
                    probabilities = hist / hist.sum()
                    bits_per_group = sum(p * (c * value_bits + metadata_bits(format_group, c, fmt, fixed))
                                         for c, p in enumerate(probabilities) if p)
                    bits_per_token = bits_per_group * groups_per_token
                compression.append({**base, "metadata_format": fmt, "group_size": format_group,
                                    "value_dtype": dtype, "bytes_per_token": bits_per_token / 8,
                                    "dense_bytes_per_token": dense_bytes,
                                    "ratio_to_dense": bits_per_token / 8 / dense_bytes})
        for relation, (total, count) in (("token", a.token_overlap), ("layer", a.layer_overlap)):
            if count and not kept_all:
                agreement.append({**base, "relation": relation, "kept_overlap": total / count, "chance": density,
                                  "pairs": count})
    empty_agreement = pd.DataFrame(columns=["phase", "input", "layer", "projections", "k", "relation",
                                            "kept_overlap", "chance", "pairs"])
    return TraceStatistics(pd.DataFrame(inputs), pd.DataFrame(groups), pd.DataFrame(fetch),
                           pd.DataFrame(compression), pd.DataFrame(agreement) if agreement else empty_agreement)


CHECKSUMS = "checksums.json"  # in the statistics directory: bytes and sha256 of each table, and the manifest's checksum
CHECKSUMS_FORMAT = "nmsim-trace-statistics"


def statistics_files(statistics: TraceStatistics) -> dict[str, bytes]:
    """``<table>.csv`` → its bytes (floats to 6 significant digits, so tables are small and byte-stable)."""
    return {f"{name}.csv": table.to_csv(index=False, float_format="%.6g", lineterminator="\n").encode("utf-8")
            for name, table in statistics.tables().items()}


def checksums_text(files: dict[str, bytes], manifest: dict) -> str:
    """The ``checksums.json`` of statistics files (name → bytes): size and sha256 of each, and the checksum of the
    manifest of the trace they were computed from (so an edited manifest no longer matches its statistics)."""
    body = {"format": CHECKSUMS_FORMAT, "format_version": 1, "manifest_sha256": manifest.get("manifest_sha256"),
            "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                      for name, data in sorted(files.items())}}
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def write_statistics(statistics: TraceStatistics, out_dir, manifest: dict,
                     extra: dict[Path, bytes] | None = None) -> None:
    """One CSV per table and their ``checksums.json`` under ``out_dir`` (plus the ``extra`` files), all or none.
    ``manifest``: the (signed) manifest of the trace the statistics come from. A new ``out_dir`` is removed again
    when the write fails (a full disk leaves no empty directory)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NmsimError(f"{out}: a file, not a directory; the statistics go into a directory (--out DIR)")
    created = [p for p in (out, *out.parents) if not p.exists()]
    files = statistics_files(statistics)
    written = {out / name: data for name, data in files.items()}
    written[out / CHECKSUMS] = checksums_text(files, manifest).encode("utf-8")
    try:
        atomic_write_files({**written, **(extra or {})}, kept="no statistics were written (the previous files are unchanged)")
    except BaseException:
        for directory in created:  # innermost first
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        raise
