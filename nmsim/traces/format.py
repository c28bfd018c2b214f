"""The trace format: a directory with a JSON manifest and safetensors shards, validated on every read.

Layout (spec: ``docs/trace_format.md``)::

    <trace>/manifest.json               format, version, what was captured and how, sha256 of every shard
    <trace>/prefill-00000.safetensors   one shard per capture unit (a prefill window or a decode batch)
    <trace>/decode-00000.safetensors

Shards are safetensors: a plain JSON header plus raw little-endian arrays, so they load without pickle (safe
for files from anyone), memory-map, carry bf16/fp16/uint8 natively and are read by every ML stack. Every file
is written atomically (temporary file, fsync, rename) and the manifest is rewritten after each shard, so an
interrupted capture leaves a valid, resumable trace.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors

from nmsim import __version__
from nmsim.errors import NmsimError
from nmsim.io import atomic_write_bytes, atomic_write_text

FORMAT = "nmsim-trace"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PHASES = ("prefill", "decode")


class TraceError(NmsimError):
    """A trace file failed a check; the message names the file and the check."""

    def __init__(self, path: Path, check: str, detail: str):
        super().__init__(f"{path}: {check} check failed: {detail}")
        self.path, self.check = path, check


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def signed_manifest(manifest: dict) -> dict:
    """The manifest with its own checksum (``manifest_sha256``) recomputed."""
    return {**manifest, "manifest_sha256": _manifest_digest(manifest)}


def manifest_text(manifest: dict) -> str:
    """The manifest file's text: sorted keys, its checksum recomputed (also the committed ``full_manifest.json``)."""
    return json.dumps(signed_manifest(manifest), indent=1, sort_keys=True) + "\n"


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write the manifest atomically with its own checksum."""
    atomic_write_text(directory / MANIFEST, manifest_text(manifest))


def read_manifest(directory: Path) -> dict:
    """Load and check a manifest: present, JSON, ours, this version, unaltered."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise TraceError(path, "presence", f"no {MANIFEST}; {directory} is not an nmsim trace directory")
    return read_manifest_file(path)


def read_manifest_file(path: Path) -> dict:
    """:func:`read_manifest` of a manifest file under any name (the committed traces' ``full_manifest.json``)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(path, "manifest JSON", f"unreadable ({exc}); the file is truncated or corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise TraceError(path, "format", f"expected format {FORMAT!r}, found {found!r} (a foreign file)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TraceError(
            path, "version", f"written as format version {manifest.get('format_version')!r}; "
            f"this nmsim ({__version__}) reads version {FORMAT_VERSION}"
        )
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise TraceError(path, "manifest checksum", "the manifest was altered or corrupted after it was written")
    return manifest


_SAFETENSORS_DTYPES = {
    np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
    np.dtype(np.uint8): "U8", np.dtype(np.int16): "I16", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64",
    np.dtype(np.bool_): "BOOL",
}


def serialize_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with a deterministic header (sorted names and keys), so equal inputs give equal files.

    (The safetensors package orders header keys by hash, which differs from run to run.)
    """
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)  # the format pads the header to 8-byte alignment
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write_shard(directory: Path, name: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict:
    """Write one shard atomically; return its manifest entry (file, bytes, sha256)."""
    data = serialize_safetensors(
        tensors, {"format": f"{FORMAT}-shard", "format_version": str(FORMAT_VERSION), **metadata}
    )
    atomic_write_bytes(directory / name, data)
    return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_shard(directory: Path, entry: dict) -> dict[str, np.ndarray]:
    """Read one shard and check its size, checksum and container; returns its arrays."""
    path = Path(directory) / entry["file"]
    if not path.is_file():
        raise TraceError(path, "presence", "the shard listed in the manifest is missing")
    data = path.read_bytes()
    if len(data) != entry["bytes"]:
        raise TraceError(path, "size", f"{len(data)} bytes on disk, {entry['bytes']} in the manifest (truncated?)")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise TraceError(path, "sha256", "the content differs from the checksum in the manifest (corrupted)")
    try:
        (header_size,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__", {})
        arrays = load_safetensors(data)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:
        raise TraceError(path, "safetensors container", str(exc)) from None
    if metadata.get("format") != f"{FORMAT}-shard" or metadata.get("format_version") != str(FORMAT_VERSION):
        raise TraceError(path, "shard format", f"metadata {metadata} is not an nmsim trace shard of version "
                                               f"{FORMAT_VERSION}")
    return arrays


@dataclass(frozen=True)
class InputSite:
    """One captured linear input: the projections that read it (one mask serves all of them)."""

    key: str  # e.g. "L3.q+k+v"
    layer: int
    projections: tuple[str, ...]
    k: int  # reduction dimension (in_features)


@dataclass
class Trace:
    """A validated trace on disk. Shards are read (and checked) one at a time, so memory stays constant."""

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path, *, allow_incomplete: bool = False) -> Trace:
        path = Path(path)
        manifest = read_manifest(path)
        if not manifest.get("complete") and not allow_incomplete:
            raise TraceError(path / MANIFEST, "completeness", "the capture was interrupted; rerun the same "
                                                              "`nmsim capture` command to resume it")
        return cls(path, manifest)

    @property
    def inputs(self) -> list[InputSite]:
        return [InputSite(i["key"], i["layer"], tuple(i["projections"]), i["k"]) for i in self.manifest["inputs"]]

    @property
    def pattern(self) -> str:
        return self.manifest["method"]["pattern"]

    def shards(self, phase: str | None = None) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
        """Yield (manifest entry, arrays) per shard, in capture order, checking each against the manifest."""
        for entry in self.manifest["shards"]:
            if phase is not None and entry["phase"] != phase:
                continue
            arrays = read_shard(self.path, entry)
            self._check_shape(entry, arrays)
            yield entry, arrays

    def verify(self) -> int:
        """Read and check every shard (size, checksum, container, array shapes, token coordinates) and the manifest's
        token counts and input widths; unpack the masks of a sample of shards (the first and last of each phase)
        and check each against the manifest's pattern. Returns the number of tokens.

        Stored values (``dense_values``, ``pruned_values``) depend on the CPU thread count of the capture (the
        reduction order of the model's matrix products), recorded as ``torch_threads``; masks do not."""
        from nmsim.traces.checks import check_masks, method_pattern

        manifest_path = self.path / MANIFEST
        try:
            pattern = method_pattern(self.manifest, "method")
        except NmsimError as exc:
            raise TraceError(manifest_path, "method", str(exc)) from None
        self._check_inputs()
        by_phase: dict[str, list[str]] = {}
        for entry in self.manifest["shards"]:
            by_phase.setdefault(entry["phase"], []).append(entry["file"])
        sampled = {files[i] for files in by_phase.values() for i in (0, -1)}
        tokens = dict.fromkeys(PHASES, 0)
        for entry, arrays in self.shards():
            tokens[entry["phase"]] += len(arrays["token.sequence"])
            if entry["file"] not in sampled:
                continue
            path = self.path / entry["file"]
            for site in self.inputs:
                name = f"{site.key}.kept"
                if pattern.kind == "dense":
                    if name in arrays:
                        raise TraceError(path, "pattern", f"array {name!r} holds a mask, but the manifest's pattern "
                                                          "is dense (a dense trace stores no masks)")
                    continue
                kept = unpack_mask(arrays[name], site.k)
                if not np.array_equal(pack_mask(kept), arrays[name]):
                    raise TraceError(path, "pattern", f"array {name!r} sets bits past K={site.k}")
                try:
                    check_masks(kept, pattern, site.key)
                except NmsimError as exc:
                    raise TraceError(path, "pattern", str(exc)) from None
        counts = self.manifest.get("token_counts") or {}
        for phase in PHASES:
            if counts.get(phase, 0) != tokens[phase]:
                raise TraceError(manifest_path, "token counts", f"token_counts.{phase} is {counts.get(phase)!r} but "
                                                                f"the {phase} shards hold {tokens[phase]} tokens")
        return sum(tokens.values())

    @property
    def torch_threads(self) -> list[int]:
        """The CPU thread counts the shards were captured with (empty for traces captured before it was recorded)."""
        return sorted({s["torch_threads"] for s in self.manifest["shards"] if "torch_threads" in s})

    def _check_inputs(self) -> None:
        """The inputs of a registered model have its layer count and each projection's K."""
        from nmsim.registry import find_model

        entry = find_model(str((self.manifest.get("model") or {}).get("name", "")))
        if entry is None:
            return  # a model outside the registry (a test model): nothing to compare with
        shape = entry.shape
        for site in self.inputs:
            if not 0 <= site.layer < shape.num_layers:
                raise TraceError(self.path / MANIFEST, "inputs", f"input {site.key}: layer {site.layer}, but "
                                                                 f"{shape.name} has layers 0-{shape.num_layers - 1}")
            for projection in site.projections:
                k = shape.projection_shape(projection)[0] if projection in shape.projections else None
                if k != site.k:
                    raise TraceError(self.path / MANIFEST, "inputs",
                                     f"input {site.key}: K={site.k}, but {shape.name}'s {projection} projection "
                                     f"{'has K=' + str(k) if k else 'does not exist'}")

    def _check_shape(self, entry: dict, arrays: dict[str, np.ndarray]) -> None:
        path = self.path / entry["file"]
        tokens = entry["tokens"]
        expected = {"token.sequence": (tokens,), "token.position": (tokens,)}
        for site in self.inputs:
            expected[f"{site.key}.natural_zeros"] = (tokens,)
            if not self.manifest["method"]["kept_all"]:
                expected[f"{site.key}.kept"] = (tokens, (site.k + 7) // 8)
        for name, shape in expected.items():
            if name not in arrays:
                raise TraceError(path, "contents", f"array {name!r} is missing")
            if arrays[name].shape != shape:
                raise TraceError(path, "contents", f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
        keys = {site.key for site in self.inputs}
        for name in arrays:
            if name not in expected and name.rpartition(".")[0] not in keys:
                raise TraceError(path, "contents", f"array {name!r} belongs to no input of the manifest (a shard of "
                                                   "another trace?)")
        sequence, position = arrays["token.sequence"], arrays["token.position"]
        unit, batch = entry.get("unit"), (self.manifest.get("capture") or {}).get("decode_batch")
        if entry.get("phase") == "prefill" and tokens and not (
                (sequence == unit).all() and np.array_equal(position, np.arange(tokens))):
            raise TraceError(path, "contents", f"token coordinates are not positions 0-{tokens - 1} of prefill "
                                               f"window {unit} (a shard of another unit or trace?)")
        if entry.get("phase") == "decode" and isinstance(batch, int) and isinstance(unit, int) and tokens and not (
                (sequence >= unit * batch) & (sequence < (unit + 1) * batch)).all():
            raise TraceError(path, "contents", f"token sequences are not those of decode batch {unit} "
                                               "(a shard of another unit or trace?)")


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """bool [T, K] -> uint8 [T, ceil(K/8)], bit i of byte j = position 8j + i (little-endian bit order)."""
    return np.packbits(mask, axis=-1, bitorder="little")


def unpack_mask(packed: np.ndarray, k: int) -> np.ndarray:
    """uint8 [T, ceil(K/8)] -> bool [T, K]; the inverse of :func:`pack_mask`."""
    return np.unpackbits(packed, axis=-1, count=k, bitorder="little").astype(bool)


def verify_directory(path: Path) -> list[str]:
    """``nmsim traces verify``: check whatever ``path`` holds, one line per part checked. A raw trace
    (``manifest.json`` and shards): :meth:`Trace.verify`; statistics (``stats/``): their checksums and invariants
    (:meth:`nmsim.traces.reader.TraceData.open`); a committed trace: both, its raw sample being ``sample/``."""
    from nmsim.traces.reader import TraceData

    path = Path(path)
    lines = []
    raw = [p for p in (path, path / "sample") if (p / MANIFEST).is_file()]
    has_stats = (path / "stats").is_dir()
    if not raw and not has_stats:
        raw = [path]  # Trace.open names what is missing
    for directory in raw:
        trace = Trace.open(directory)
        tokens = trace.verify()
        threads = trace.torch_threads
        values = (f"values captured with {'/'.join(map(str, threads))} CPU thread(s): stored values, not masks, "
                  "depend on the thread count" if threads else "thread count not recorded (stored values, not "
                  "masks, depend on it)")
        lines.append(f"{directory}: OK ({len(trace.manifest['shards'])} shards, {tokens} tokens, every checksum "
                     f"matches; the masks of the first and last shard of each phase follow {trace.pattern}; {values})")
    if has_stats:
        data = TraceData.open(path)
        lines.append(f"{path / 'stats'}: OK ({len(data.tables)} tables, each matches its checksum in "
                     f"stats/checksums.json and the manifest it names; invariants hold for {data.pattern})")
    return lines
