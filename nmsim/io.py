"""Atomic file writes: a reader sees the old file or the new one, never half of either.

A full disk (or quota) while writing is one :class:`DiskFullError` naming the path, the bytes to write and the
space free there; the previous files are left as they were. :func:`atomic_write_files` writes several files all
or none: every temporary file is written and synced before the first rename.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from nmsim.errors import NmsimError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(NmsimError):
    """No space left where a result is written: ``path``, and ``needed_bytes`` (what was being written; None if
    unknown)."""

    path: str | None = None
    needed_bytes: int | None = None


def human_bytes(count: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def free_bytes(directory: str | Path) -> int | None:
    """Bytes free for an unprivileged writer under ``directory`` (its nearest existing parent); None if unknown."""
    directory = Path(directory).absolute()
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def disk_full_error(path: str | Path, needed: int | None, kept: str = "the previous file is unchanged") -> DiskFullError:
    """The one message for a full disk: the path, what was being written and what is free there."""
    free = free_bytes(Path(path).parent)
    size = f"{human_bytes(needed)} to write" if needed is not None else "more space needed"
    room = f", {human_bytes(free)} free there" if free is not None else ""
    error = DiskFullError(f"{path}: no space left on the device ({size}{room}); {kept}. Free some space and rerun "
                          "the same command")
    error.path, error.needed_bytes = str(path), needed  # attributes, so they survive pickling (forked workers)
    return error


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the operating system saying the disk (or the quota) is full: an OSError, or a library's
    own error wrapping one (safetensors raises ``SafetensorError: ... No space left on device (os error 28)``)."""
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    return isinstance(exc, Exception) and any(text in str(exc) for text in ("No space left on device",
                                                                           "Disk quota exceeded"))


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise NmsimError(f"{path}: is a directory; give the path of a file to write")


def _temporary(path: Path, data: bytes) -> str:
    """``data`` in a synced temporary file beside ``path`` with the usual permissions; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _missing_folders(paths) -> list[Path]:
    """The folders ``paths`` need that do not exist yet, deepest first."""
    missing = set()
    for path in paths:
        folder = Path(path).absolute().parent
        while not folder.exists() and folder != folder.parent:
            missing.add(folder)
            folder = folder.parent
    return sorted(missing, key=lambda f: len(f.parts), reverse=True)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer), or gone
            pass


def atomic_write_files(files: dict[Path, bytes], kept: str = "the previous files are unchanged") -> None:
    """Write every ``path: data`` of ``files`` or none: all temporary files first, then the renames (which need no
    space). A full disk raises :class:`DiskFullError` naming the first path and the total bytes; folders it made
    for them are removed again. A directory where a file goes is an :class:`NmsimError`."""
    for path in files:
        _refuse_directory(Path(path))
    created = _missing_folders(files)
    temporaries: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            temporaries.append((_temporary(Path(path), data), Path(path)))
    except BaseException as exc:
        for tmp, _ in temporaries:
            Path(tmp).unlink(missing_ok=True)
        _remove_empty(created)
        if is_disk_full(exc):
            first = next(iter(files))
            raise disk_full_error(first, sum(len(d) for d in files.values()), kept) from None
        raise
    try:
        for tmp, path in temporaries:
            os.replace(tmp, path)
    finally:  # a rename refused (a directory appeared there): no temporary file stays behind
        for tmp, _ in temporaries:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file in the same directory and a rename."""
    atomic_write_files({Path(path): data}, kept="the previous file is unchanged")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def exclusive_lock(path: str | Path):
    """Hold an exclusive ``flock`` on the file ``path`` (created if missing, left in place) for the ``with`` block:
    another process taking the same lock waits until this one is done. Released on exit and if the process
    dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def table_files(frame, directory: Path, name: str) -> dict[Path, bytes]:
    """``name``.csv and ``name``.parquet of a pandas DataFrame, as bytes to write."""
    csv = frame.to_csv(index=False, float_format="%.10g").encode("utf-8")
    parquet = frame.to_parquet(index=False, engine="pyarrow", compression="zstd")
    return {Path(directory) / f"{name}.csv": csv, Path(directory) / f"{name}.parquet": parquet}


def write_table(frame, directory: Path, name: str) -> list[str]:
    """``name``.csv and ``name``.parquet (a pandas DataFrame) under ``directory``, written together atomically;
    returns the file names."""
    atomic_write_files(table_files(frame, directory, name))
    return [f"{name}.csv", f"{name}.parquet"]
