"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_table(frame, directory: Path, name: str) -> list[str]:
    """``name``.csv and ``name``.parquet (a pandas DataFrame) under ``directory``, each written atomically;
    returns the file names."""
    atomic_write_text(Path(directory) / f"{name}.csv", frame.to_csv(index=False, float_format="%.10g"))
    buffer = frame.to_parquet(index=False, engine="pyarrow", compression="zstd")
    atomic_write_bytes(Path(directory) / f"{name}.parquet", buffer)
    return [f"{name}.csv", f"{name}.parquet"]
