"""``napari-sam segment --workers N | --scheduler ADDRESS``: the work on dask.distributed.

A local cluster listens on 127.0.0.1 only. Only file names travel to the workers; each task
returns the record of one input (see :func:`napari_sam.cli.segment.segment_file`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def worker_torch_threads(args) -> int | None:
    """Torch threads each worker sets when it loads the model (None: leave it alone).

    An existing cluster (``--scheduler``) keeps its workers' own setting unless
    ``--threads-per-worker`` is given. The process workers of ``--workers N`` share this
    machine: ``cores // N`` each unless given. Thread workers (``--worker-threads``) share this
    process, which the command sets once instead.
    """
    if args.scheduler:
        return args.threads_per_worker
    if args.workers and not args.worker_threads:
        return args.threads_per_worker or max(1, available_cores() // args.workers)
    return None


def run_on_cluster(args, tasks: list[tuple[str, tuple[str, str], Callable[[], dict]]],
                   report: Callable[[dict, int], None]) -> list[dict]:
    """Run every ``(key, (src, dst), task)`` on the cluster ``args`` names; ``report(record, n)``
    as each finishes (``n`` counts the finished ones). A task that could not run gives a
    ``failed`` record."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        print("error: --workers/--scheduler need dask.distributed: pip install "
              "'napari-sam-annotator[distributed]'", file=sys.stderr)
        raise SystemExit(2) from None
    import logging

    cluster = None
    if args.scheduler:
        client = Client(args.scheduler, timeout="30s")
        where = args.scheduler
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=not args.worker_threads,
                               protocol="tcp", host="127.0.0.1", dashboard_address=None,
                               silence_logs=logging.WARNING)
        client = Client(cluster)
        where = f"local cluster of {args.workers} {'thread' if args.worker_threads else 'process'} worker(s)"
    print(f"dask: {where}", flush=True)
    out = []
    try:
        futures = {client.submit(task, pure=False, key=key): paths for key, paths, task in tasks}
        for future in as_completed(futures):
            try:
                rec = future.result()
            except Exception as exc:  # the worker died or the task could not run
                src, dst = futures[future]
                rec = {"input": src, "output": dst, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            out.append(rec)
            report(rec, len(out))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return out
