"""``napari-sam segment``: segment everything in many images, one label TIFF per input.

Single process by default; ``--workers N`` starts a local dask.distributed cluster (loopback
only), ``--scheduler tcp://host:port`` sends the work to an existing one. Every worker loads
the model once and keeps it for all the images it gets. Workers read their inputs and write
their outputs themselves (only file names travel), so with a remote cluster the paths must be
visible on the workers (shared storage).

Resumable: inputs whose output exists are skipped, and outputs are written to a temporary
file and renamed, so an interrupted run never leaves a half-written TIFF. A failing input is
reported and the others still run; the exit code is 1 if any input failed.

2D grayscale and RGB(A) images give a 2D label image; stacks ``(..., Y, X)`` (or
``(..., Y, X, 3|4)``) are segmented plane by plane and ids are made unique across the stack.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..engine.settings import GeneratorSettings
from ..io.images import IMAGE_SUFFIXES, guess_rgb, open_image

OUTPUT_SUFFIX = "_labels.tif"

_LOCAL = threading.local()  # per worker thread: {(model, device): Predictor}


# --- work done on a worker --------------------------------------------------------------


def cached_predictor(model: str, device: str, torch_threads: int | None = None):
    """The Predictor for ``model`` on ``device``, loaded once per worker thread.
    Returns ``(predictor, loaded_now)``."""
    cache = getattr(_LOCAL, "predictors", None)
    if cache is None:
        cache = _LOCAL.predictors = {}
    key = (str(model), str(device))
    if key in cache:
        return cache[key], False
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    from ..weights import load_model

    cache[key] = load_model(model, device=device)
    return cache[key], True


def planes_of(image: np.ndarray) -> tuple[tuple[int, ...], bool]:
    """Leading (stack) shape and whether the last axis is colour (like napari: a last axis of
    3 or 4 on 3+ dimensions)."""
    rgb = guess_rgb(image.shape)
    plane_dims = 3 if rgb else 2
    if image.ndim < plane_dims:
        raise ValueError(f"not an image: shape {image.shape}")
    return tuple(image.shape[: image.ndim - plane_dims]), rgb


def segment_image(predictor, image: np.ndarray, params: dict, log=None) -> tuple[np.ndarray, int]:
    """Label image (uint32, the input's shape without colour axis) and the number of masks."""
    from ..engine import generate_masks, masks_to_labels
    from ..engine.preprocess import estimate_limits

    stack, rgb = planes_of(image)
    if rgb and image.shape[-1] == 4:
        image = image[..., :3]
    limits = estimate_limits(image, rgb)  # as `napari-sam embed` and the widget normalise a stack
    plane_shape = image.shape[len(stack): len(stack) + 2]
    labels = np.zeros((*stack, *plane_shape), dtype=np.uint32)
    total = 0
    for n, index in enumerate(np.ndindex(*stack)):
        predictor.set_image(np.asarray(image[index]), contrast_limits=limits)
        masks = generate_masks(predictor, **params)
        plane = masks_to_labels(masks, shape=plane_shape, dtype=np.uint32)
        plane[plane > 0] += total
        labels[index] = plane
        total = int(plane.max()) if plane.any() else total
        if log is not None and stack:
            log(f"  plane {n + 1}/{int(np.prod(stack))}: {len(masks)} masks")
    return labels, total


def segment_file(src: str, dst: str, model: str, device: str, params: dict,
                 torch_threads: int | None = None, overwrite: bool = False, log=None) -> dict:
    """Segment one input file into ``dst``; never raises: returns a record with ``status``
    ``"done"``, ``"skipped"`` or ``"failed"`` (and ``error``)."""
    record = {"input": src, "output": dst, "status": "failed", "masks": 0, "seconds": 0.0,
              "loaded_model": False, "worker": f"{os.getpid()}:{threading.get_ident()}"}
    start = time.perf_counter()
    try:
        if Path(dst).exists() and not overwrite:
            record["status"] = "skipped"
            return record
        image = open_image(src)
        planes_of(image)  # shape check before loading a model
        predictor, record["loaded_model"] = cached_predictor(model, device, torch_threads)
        import torch

        record["torch_threads"] = torch.get_num_threads()
        labels, count = segment_image(predictor, image, params, log)
        from ..io import write_labels_tiff

        write_labels_tiff(Path(dst), labels)  # atomic, with the usual permissions
        record.update(status="done", masks=count)
    except Exception as exc:  # one bad file must not stop the others
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        record["seconds"] = time.perf_counter() - start
    return record


# --- the command ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-sam segment",
        description="Segment everything (SAM automatic masks) in images; one label TIFF per input.",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="folder for the label TIFFs (created)")
    p.add_argument("--model", default="vit_b", help="vit_b (default), vit_l, vit_h or a .pth checkpoint")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, metavar="N",
                       help="start a local dask.distributed cluster with N workers (127.0.0.1 only)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="use an existing cluster, e.g. tcp://host:8786")
    p.add_argument("--threads-per-worker", type=int, default=None, metavar="T",
                   help="torch CPU threads per worker. Default: cores // N for the local cluster of "
                        "--workers N; left as the workers have it with --scheduler; torch's own "
                        "default in a single process")
    p.add_argument("--worker-threads", action="store_true",
                   help="local workers are threads of this process instead of processes")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists")
    g = p.add_argument_group("generator (see napari_sam.engine.GeneratorSettings)")
    for spec in fields(GeneratorSettings):  # one flag per setting, its default and help from there
        g.add_argument("--" + spec.name.replace("_", "-"), type=type(spec.default), default=spec.default,
                       help=f"{spec.metadata['tip']} (default {spec.default:g})")
    return p


PARAMS = GeneratorSettings.names()


def collect_inputs(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and path.suffix.lower() != ".zarr":  # a .zarr folder is one image
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)  # a missing file is reported as a failure, like a corrupt one
    return found


def output_for(path: Path, out: Path) -> Path:
    return out / f"{path.stem}{OUTPUT_SUFFIX}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 0 or (args.threads_per_worker is not None and args.threads_per_worker < 1):
        print("error: --workers and --threads-per-worker must be positive", file=sys.stderr)
        return 2
    inputs = collect_inputs(args.inputs)
    outputs = [output_for(p, args.out) for p in inputs]
    clash = {o for o in outputs if outputs.count(o) > 1}
    if clash:
        print(f"error: several inputs would write {sorted(map(str, clash))[0]}; rename them", file=sys.stderr)
        return 2
    if not inputs:
        print("error: no input images", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    params = {name: getattr(args, name) for name in PARAMS}
    jobs = []
    records = []
    for src, dst in zip(inputs, outputs):
        if dst.exists() and not args.overwrite:
            records.append({"input": str(src), "output": str(dst), "status": "skipped"})
        else:
            jobs.append((str(src), str(dst)))
    total = len(inputs)
    for n, rec in enumerate(records, 1):
        _report(rec, n, total)
    started = time.perf_counter()
    if jobs and args.threads_per_worker and not (args.scheduler or (args.workers and not args.worker_threads)):
        import torch  # the work runs in this process (threads of it): one setting for all

        torch.set_num_threads(args.threads_per_worker)
    if not jobs:
        pass
    elif args.workers or args.scheduler:
        records.extend(_run_distributed(args, jobs, params, len(records), total))
    else:
        for src, dst in jobs:
            rec = segment_file(src, dst, args.model, args.device, params, overwrite=args.overwrite,
                               log=lambda msg: print(msg, flush=True))
            records.append(rec)
            _report(rec, len(records), total)
    return _summary(records, time.perf_counter() - started)


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
    process, which :func:`main` sets once instead.
    """
    if args.scheduler:
        return args.threads_per_worker
    if args.workers and not args.worker_threads:
        return args.threads_per_worker or max(1, available_cores() // args.workers)
    return None


def _run_distributed(args, jobs, params, done: int, total: int) -> list[dict]:
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
    torch_threads = worker_torch_threads(args)
    out = []
    try:
        futures = {
            client.submit(segment_file, src, dst, args.model, args.device, params, torch_threads,
                          args.overwrite, pure=False, key=f"segment-{i}-{Path(src).name}"): (src, dst)
            for i, (src, dst) in enumerate(jobs)
        }
        for future in as_completed(futures):
            try:
                rec = future.result()
            except Exception as exc:  # the worker died or the task could not run
                src, dst = futures[future]
                rec = {"input": src, "output": dst, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            out.append(rec)
            _report(rec, done + len(out), total)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return out


def _report(rec: dict, n: int, total: int) -> None:
    name = Path(rec["input"]).name
    if rec["status"] == "done":
        line = f"done     {name} -> {rec['output']} ({rec['masks']} objects, {rec['seconds']:.1f} s)"
    elif rec["status"] == "skipped":
        line = f"skipped  {name} (output exists)"
    else:
        line = f"FAILED   {name}: {rec.get('error', 'unknown error')}"
    print(f"[{n}/{total}] {line}", flush=True)


def _summary(records: list[dict], seconds: float) -> int:
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    print(f"summary: {counts['done']} segmented, {counts['skipped']} skipped (output exists), "
          f"{counts['failed']} failed, {seconds:.1f} s", flush=True)
    for rec in records:
        if rec["status"] == "failed":
            print(f"  failed: {rec['input']}: {rec.get('error')}", flush=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
