"""Pure functions over a list, on this machine's cores: forked worker processes that inherit everything already
loaded, so only the item's index goes out and the result comes back.

Used where one job is a few seconds of independent pieces (the simulation stage's cases, the report's figures).
Results come back in item order, so the output never depends on how many cores ran it. Serial where forking is
not available (macOS, Windows), when one core is available, or for a handful of items.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence

_JOB: tuple[Callable, Sequence] | None = None  # (function, items) of the running map, inherited by forked workers


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _call(index: int):
    function, items = _JOB
    return function(items[index])


def fork_map(function: Callable, items: Sequence, workers: int | None = None, min_items: int = 2) -> list:
    """``[function(item) for item in items]``, on ``workers`` forked processes (default: every available core)."""
    global _JOB
    workers = min(workers or available_cores(), len(items))
    if workers <= 1 or len(items) < min_items or "fork" not in multiprocessing.get_all_start_methods() \
            or _JOB is not None:  # no nested pools
        return [function(item) for item in items]
    _JOB = (function, items)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_call, range(len(items)), chunksize=1)
    finally:
        _JOB = None
