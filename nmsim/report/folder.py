"""A report folder on disk: written whole into a staging folder beside it, then swapped in with two renames.

``ROOT/NAME`` is the report. While a run writes it, ``ROOT/.NAME.partial-XXXX`` is its staging folder; the swap
renames ``NAME`` to ``.NAME.old``, the staging folder to ``NAME``, then removes ``.NAME.old``. Every step that
touches these folders holds an exclusive lock on ``ROOT/.NAME.lock`` (``fcntl.flock``, released by the kernel when
the process dies), so a run killed at any point leaves state the next run can read:

- a ``.NAME.partial-*`` folder while the lock is free is a killed run's: removed;
- ``.NAME.old`` without ``NAME``: killed between the two renames, so it *is* the previous report: renamed back;
- ``.NAME.old`` beside ``NAME``: killed after the swap: removed.

A full disk while staging removes the staging folder and names the report, the bytes it needs (what it had
written and was writing, or the previous report's size if larger) and the space free; the previous report is
untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nmsim.errors import NmsimError
from nmsim.io import DiskFullError, disk_full_error, exclusive_lock, is_disk_full

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 200  # leaves room for the ".NAME.partial-XXXXXXXX" staging folder within the usual 255


def check_report_name(name: str, option: str = "--name") -> str:
    """``name`` if it is one plain folder name (joined to the report root, it must stay inside it), else an
    :class:`NmsimError` naming ``option`` and what is allowed."""
    allowed = ("one plain folder name inside --report-root: no '/' or '\\', not '.' or '..', not starting with "
               f"'.', no control characters, at most {MAX_NAME_BYTES} bytes")
    if not isinstance(name, str) or not name.strip():
        raise NmsimError(f"{option} {name!r}: empty; the report folder needs {allowed}")
    bad = ("/" in name or "\\" in name or name.startswith(".") or any(ord(c) < 32 or ord(c) == 127 for c in name)
           or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES)
    if bad:
        raise NmsimError(f"{option} {name!r}: not allowed; the report folder needs {allowed}")
    return name


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _partials(target: Path) -> list[Path]:
    prefix = f".{target.name}.partial-"
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix))


def report_lock(target: Path):
    """Hold the exclusive lock of the report folder ``target`` (waits while another run holds it)."""
    return exclusive_lock(target.with_name(f".{target.name}.lock"))


def recover(target: Path) -> None:
    """What killed runs left beside ``target``, put right (call with the lock held): the previous report restored
    from ``.NAME.old`` when ``NAME`` is missing, stale ``.NAME.old`` and staging folders removed."""
    old = _old(target)
    if old.is_dir() and not target.exists():
        log.warning("%s: restoring the previous report from %s (a run was stopped during its swap)", target, old.name)
        old.rename(target)
    elif old.exists():
        log.info("removing %s, left by a run stopped after its swap", old)
        _remove(old)
    for partial in _partials(target):
        log.info("removing %s, the staging folder of a run that was stopped", partial)
        _remove(partial)


def tidy(target: Path) -> None:
    """Before a run's work: what killed runs left beside ``target`` put right (under the lock, so only when there
    is something: no lock file appears otherwise), and a ``target`` that is not a report refused."""
    if _old(target).exists() or _partials(target):
        with report_lock(target):
            recover(target)
    check_replaceable(target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def check_replaceable(target: Path) -> None:
    """Refuse to swap out anything at ``target`` that is not a previous report (a file, or a folder without
    report.md that is not empty), so a mistaken --name or --report-root never removes other files."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise NmsimError(f"{target}: exists and is not a report folder; choose another --name or --report-root")
    if target.is_dir() and not (target / "report.md").is_file() and any(target.iterdir()):
        raise NmsimError(f"{target}: a folder that is not an nmsim report (no report.md) is in the way; choose "
                         "another --name or --report-root, or move it away")


def _ordinary_permissions(folder: Path) -> None:
    """mkdtemp makes 0700; give the staging folder and every folder in it the usual 0777 & ~umask."""
    umask = os.umask(0)
    os.umask(umask)
    for directory in (folder, *(p for p in folder.rglob("*") if p.is_dir())):
        os.chmod(directory, 0o777 & ~umask)


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh staging folder for the report ``target``; when the block finishes it is swapped in whole, when it
    fails (a full disk, an error, Ctrl-C) it is removed and the previous report stays as it was."""
    with report_lock(target):
        recover(target)
        check_replaceable(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            yield staging
            _ordinary_permissions(staging)
            _swap_in(staging, target)
        except BaseException as exc:
            written = _bytes_under(staging) if staging.is_dir() else 0
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, DiskFullError) or is_disk_full(exc):
                pending = exc.needed_bytes if isinstance(exc, DiskFullError) else None
                previous = _bytes_under(target) if target.is_dir() else 0  # a report is about as large as the last
                kept = "the previous report is unchanged" if target.is_dir() else "no report was there before"
                raise disk_full_error(target, max(written + (pending or 0), previous),
                                      f"the unfinished report was removed and {kept}") from None
            raise


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with two renames; the old report is removed only after."""
    old = None
    if target.exists():
        old = _old(target)
        target.rename(old)
    try:
        staging.rename(target)
    except BaseException:
        if old is not None:  # put the previous report back at once
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old)
