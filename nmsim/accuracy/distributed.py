"""The accuracy grid on Dask workers: ``nmsim eval --scheduler ADDRESS`` or ``--workers N`` (a local cluster).

Each worker process builds one :class:`~nmsim.accuracy.study.Evaluation` (it loads the model once) and evaluates
the rows it is given; the rows come back to the process that owns the table as they finish, and it writes each
into the same resumable table (:func:`nmsim.accuracy.study.run_study`), so an interrupted distributed run resumes
like a local one and the finished table equals a serial run's. One worker first makes the calibration statistics
and the dense reference that the grid needs; they are cached on disk (``$NMSIM_CACHE``), where the others read
them, so workers on several machines must share that directory and see the same data and model paths.

GPUs: with ``--device cuda`` and several GPUs visible, the worker named N (a local cluster names its workers 0, 1,
…) takes ``cuda:N`` modulo their count, so ``--workers 4`` on a four-GPU box runs one worker per GPU; on a remote
cluster, start one worker per GPU (e.g. with ``CUDA_VISIBLE_DEVICES``) and it takes the device it sees.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from contextlib import contextmanager

from nmsim.errors import NmsimError

log = logging.getLogger(__name__)

_EVALUATIONS: dict = {}  # in a worker process: settings → its Evaluation (the model loaded once)


def _worker_settings(settings):
    """``settings`` with the device this worker takes (see the module docstring)."""
    import torch
    from distributed import get_worker

    if settings.device != "cuda" or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return settings
    name = get_worker().name
    if isinstance(name, int) or str(name).isdigit():
        return dataclasses.replace(settings, device=f"cuda:{int(name) % torch.cuda.device_count()}")
    return settings


def _evaluation(settings, threads: int | None):
    from nmsim.accuracy.study import Evaluation, set_threads

    key = (settings, threads)
    if key not in _EVALUATIONS:
        set_threads(threads)
        _EVALUATIONS[key] = Evaluation(_worker_settings(settings))
    return _EVALUATIONS[key]


def _plan(settings, grid, threads, out_prefix, command):
    """On one worker: the rows' common columns and the table's header, with the statistics and the dense
    reference made (and cached) before any row runs."""
    evaluation = _evaluation(settings, threads)
    evaluation.prepare(grid)
    return evaluation.common(), evaluation.meta(grid, out_prefix, command)


def _row(settings, config, threads):
    """On a worker: one row and its per-window sums."""
    return _evaluation(settings, threads).evaluate(config)


@contextmanager
def _client(scheduler: str | None, workers: int | None):
    """A Dask client: of the scheduler at ``scheduler``, or of a local cluster of ``workers`` processes (one
    thread each for Dask; torch gets this machine's cores shared out)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise NmsimError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with `dask "
                             "scheduler` and `dask worker ADDRESS` on each machine, or use --workers N for a local "
                             "cluster") from None
        with client:
            yield client, None
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client, max(1, (os.cpu_count() or 1) // workers)


@contextmanager
def distributed_evaluator(settings, grid, out_prefix, command: str, scheduler: str | None, workers: int | None):
    """What :func:`nmsim.accuracy.study.run_study` reads (common columns, header, results), with the rows on Dask
    workers; results come back in the order they finish."""
    from distributed import as_completed

    with _client(scheduler, workers) as (client, threads):
        log.info("accuracy grid on %d Dask worker(s) at %s", len(client.scheduler_info()["workers"]),
                 client.scheduler.address)
        common, meta = client.submit(_plan, settings, grid, threads, out_prefix, command, pure=False).result()

        def results(pending):
            futures = {client.submit(_row, settings, config, threads, pure=False): index
                       for index, config in pending.items()}
            for future in as_completed(futures):
                yield futures[future], future.result()

        yield common, meta, results
