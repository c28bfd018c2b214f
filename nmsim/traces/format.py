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


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write the manifest atomically with its own checksum."""
    manifest = {**manifest, "manifest_sha256": _manifest_digest(manifest)}
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def read_manifest(directory: Path) -> dict:
    """Load and check a manifest: present, JSON, ours, this version, unaltered."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise TraceError(path, "presence", f"no {MANIFEST}; {directory} is not an nmsim trace directory")
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
        """Read and check every shard; return the number of tokens."""
        return sum(len(arrays["token.sequence"]) for _, arrays in self.shards())

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


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """bool [T, K] -> uint8 [T, ceil(K/8)], bit i of byte j = position 8j + i (little-endian bit order)."""
    return np.packbits(mask, axis=-1, bitorder="little")


def unpack_mask(packed: np.ndarray, k: int) -> np.ndarray:
    """uint8 [T, ceil(K/8)] -> bool [T, K]; the inverse of :func:`pack_mask`."""
    return np.unpackbits(packed, axis=-1, count=k, bitorder="little").astype(bool)
