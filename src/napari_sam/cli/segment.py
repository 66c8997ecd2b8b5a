"""``napari-sam segment``: segment everything in many images, one label TIFF per input.

Two modes: ``--mode amg`` prompts SAM with a grid of points (segment everything); ``--mode ais``
runs the instance-segmentation decoder of micro-sam's models on the embedding (automatic
instance segmentation, planes of a stack merged by overlap). The default is ``ais`` for a model
that has a decoder, ``amg`` otherwise.

Single process by default; ``--workers N`` starts a local dask.distributed cluster (loopback
only), ``--scheduler tcp://host:port`` sends the work to an existing one. Every worker loads
the model once and keeps it for all the images it gets. Workers read their inputs and write
their outputs themselves (only file names travel), so with a remote cluster the paths must be
visible on the workers (shared storage).

Resumable: inputs whose output exists (made with the same model and parameters) are skipped;
an unreadable output is redone; outputs made with other settings stop the run before any work
unless ``--overwrite`` (see :mod:`.resume`). Outputs are written to a temporary file and
renamed, so an interrupted run never leaves a half-written TIFF (temporaries a killed run left
are removed). Everything is checked before work: the parameters, the model and device, and
that ``--out`` can be written. Label files this package wrote are never taken as inputs. A
failing input is reported and the others still run; the exit code is 1 if any input failed.

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
from functools import partial
from pathlib import Path

import numpy as np

from ..engine.settings import GeneratorSettings
from ..io.images import IMAGE_SUFFIXES, guess_rgb, open_image
from .cluster import run_on_cluster, worker_torch_threads
from .resume import OUTPUT_SUFFIX, is_our_labels, output_state, prepare_out, run_settings

_LOCAL = threading.local()  # per worker thread: {(model, device): Predictor} and the decoders


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


def cached_decoder(model: str):
    """The instance-segmentation decoder of ``model``, loaded once per worker thread."""
    cache = getattr(_LOCAL, "decoders", None)
    if cache is None:
        cache = _LOCAL.decoders = {}
    if str(model) not in cache:
        from ..weights import load_decoder

        cache[str(model)] = load_decoder(model)
    return cache[str(model)]


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
    if params.get("mode") == "ais":
        return segment_instances_image(predictor, image, rgb, limits, params)
    params = {k: v for k, v in params.items() if k != "mode"}
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


def segment_instances_image(predictor, image, rgb: bool, limits, params: dict) -> tuple[np.ndarray, int]:
    """``--mode ais``: labels of every plane by the model's decoder, merged across the planes of a
    stack (large planes are tiled); ``params`` holds ``model`` and the post-processing values."""
    from ..engine import VolumeEmbeddings, segment_instances

    decoder = cached_decoder(params["model"])
    vol = VolumeEmbeddings(image, predictor, rgb=rgb, contrast_limits=limits)
    labels = segment_instances(vol, decoder, **{k: params.get(k) for k in AIS_PARAMS})
    return labels, int(labels.max())


def segment_file(src: str, dst: str, model: str, device: str, params: dict,
                 torch_threads: int | None = None, overwrite: bool = False, log=None,
                 settings: dict | None = None) -> dict:
    """Segment one input file into ``dst``; never raises: returns a record with ``status``
    ``"done"``, ``"skipped"`` or ``"failed"`` (and ``error``). ``settings``
    (:func:`~.resume.run_settings`) are recorded in the output with the model's fingerprint."""
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

        made = None if settings is None else {"segment": {**settings, "model_fingerprint": predictor.fingerprint}}
        write_labels_tiff(Path(dst), labels, metadata=made)  # atomic, with the usual permissions
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
    p.add_argument("--model", default="vit_b", help="vit_b (default), any registered model (vit_b_lm, vit_t, "
                   "...: docs/models.md) or a checkpoint file")
    p.add_argument("--mode", choices=("ais", "amg"), default=None,
                   help="ais: the model's instance decoder (default for models that have one, e.g. vit_b_lm); "
                        "amg: segment everything with a grid of point prompts (default otherwise)")
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
    p.add_argument("--overwrite", action="store_true",
                   help="redo inputs whose output exists (also those made with other settings)")
    g = p.add_argument_group("generator, --mode amg (see napari_sam.engine.GeneratorSettings)")
    for spec in fields(GeneratorSettings):  # one flag per setting, its default and help from there
        g.add_argument("--" + spec.name.replace("_", "-"), type=type(spec.default), default=spec.default,
                       help=f"{spec.metadata['tip']} (default {spec.default:g})")
    a = p.add_argument_group("instance decoder, --mode ais (see napari_sam.engine.segment_instances; "
                             "default: the model's own settings)")
    for name in AIS_PARAMS:
        a.add_argument("--" + name.replace("_", "-"), type=int if name == "min_size" else float, default=None)
    return p


AIS_PARAMS = ("center_distance_threshold", "boundary_distance_threshold", "foreground_threshold",
              "foreground_smoothing", "distance_smoothing", "min_size")


PARAMS = GeneratorSettings.names()


def collect_inputs(paths: list[Path], ignored: list[Path] | None = None) -> list[Path]:
    """Files named, and the images in folders named; label files this package wrote in those
    folders (e.g. with ``--out`` equal to an input folder) are not inputs (added to ``ignored``)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and path.suffix.lower() != ".zarr":  # a .zarr folder is one image
            for p in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                if is_our_labels(p):
                    (ignored if ignored is not None else []).append(p)
                else:
                    found.append(p)
        else:
            found.append(path)  # a missing file is reported as a failure, like a corrupt one
    return found


def mode_params(args) -> dict:
    """What :func:`segment_image` needs for the chosen (or default) ``--mode``; checked before
    any model is loaded: ``ais`` needs a model with an instance decoder."""
    from ..weights import has_decoder

    decoder = has_decoder(args.model)
    mode = args.mode or ("ais" if decoder else "amg")
    if mode == "ais" and not decoder:
        raise ValueError(f"--mode ais needs a model with an instance-segmentation decoder; {args.model} has none "
                         "(use --mode amg, or a model such as vit_b_lm)")
    if mode == "ais":
        return {"mode": "ais", "model": str(args.model), **{name: getattr(args, name) for name in AIS_PARAMS}}
    return {"mode": "amg", **{name: getattr(args, name) for name in PARAMS}}


def output_for(path: Path, out: Path) -> Path:
    return out / f"{path.stem}{OUTPUT_SUFFIX}"


def check_settings(args, params: dict) -> None:
    """Parameters, and (when this machine runs the work) device and model: before any work."""
    from ..engine import checks, resolve_device
    from ..weights import check_model_name

    if not args.scheduler:  # a remote cluster's devices and paths are its own
        resolve_device(args.device)
        check_model_name(args.model)
    if params["mode"] == "amg":
        checks.generator_settings(**{k: v for k, v in params.items() if k != "mode"})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 0 or (args.threads_per_worker is not None and args.threads_per_worker < 1):
        print("error: --workers and --threads-per-worker must be positive", file=sys.stderr)
        return 2
    try:
        params = mode_params(args)
        check_settings(args, params)
    except (TypeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ignored: list[Path] = []
    inputs = collect_inputs(args.inputs, ignored)
    if ignored:
        print(f"ignored {len(ignored)} label file(s) written by napari-sam (e.g. {ignored[0].name}), not images")
    outputs = [output_for(p, args.out) for p in inputs]
    clash = {o for o in outputs if outputs.count(o) > 1}
    if clash:
        print(f"error: several inputs would write {sorted(map(str, clash))[0]}; rename them", file=sys.stderr)
        return 2
    if not inputs:
        print("error: no input images", file=sys.stderr)
        return 2
    try:
        prepare_out(args.out)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..io import remove_stale_temporaries

    stale = [tmp for dst in outputs for tmp in remove_stale_temporaries(dst)]
    if stale:
        print(f"removed {len(stale)} temporary file(s) an interrupted run left in {args.out}")
    print(f"mode: {params['mode']}" + (" (the model's instance decoder)" if params["mode"] == "ais" else
                                        " (segment everything)"), flush=True)
    settings = run_settings(args.model, params)
    jobs, records, conflicts = [], [], []
    for src, dst in zip(inputs, outputs):
        state, detail = ("missing", "") if args.overwrite else output_state(dst, settings)
        if state in ("done", "unrecorded"):
            records.append({"input": str(src), "output": str(dst), "status": "skipped"})
        elif state == "other":
            conflicts.append(f"{dst.name}: {detail}")
        else:
            if state == "unreadable":
                print(f"redo     {src.name}: its output {dst.name} is unreadable ({detail})", flush=True)
            jobs.append((str(src), str(dst), args.overwrite or state == "unreadable"))
    if conflicts:
        print(f"error: {len(conflicts)} output(s) in {args.out} were made with other settings, e.g. "
              f"{conflicts[0]}; add --overwrite to redo them, or choose another --out", file=sys.stderr)
        return 2
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
        threads, done = worker_torch_threads(args), len(records)
        tasks = [(f"segment-{i}-{Path(src).name}", (src, dst),
                  partial(segment_file, src, dst, args.model, args.device, params, threads, redo, settings=settings))
                 for i, (src, dst, redo) in enumerate(jobs)]
        records.extend(run_on_cluster(args, tasks, lambda rec, n: _report(rec, done + n, total)))
    else:
        for src, dst, redo in jobs:
            rec = segment_file(src, dst, args.model, args.device, params, overwrite=redo,
                               log=lambda msg: print(msg, flush=True), settings=settings)
            records.append(rec)
            _report(rec, len(records), total)
    return _summary(records, time.perf_counter() - started)


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
