"""Pluggable jobs: heavy work on the session's state that the session runs through its
executor (:meth:`Session.run_job`), with progress, Cancel and live partial results.

A :class:`Job` builds its task function from the session (:meth:`Job.prepare`, on the session's
thread; :class:`JobRefused` says why it cannot run), which runs in a worker and may yield
partial results; :meth:`Job.on_yield` and :meth:`Job.on_result` get them back on the session's
thread. Results are only used while the job's key is still current (:meth:`Session.job_key`:
the plane's embedding and the object's generation). Two jobs ship here: :class:`Propagation`
(the current object through the planes of a stack, one plane at a time, shown live) and
:class:`SegmentEverything` (automatic masks of the plane into a new label image).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..engine import PropagationStep, generate_masks, masks_to_labels, propagate, to_rgb_uint8
from .executor import Progress
from .history import plane_index


class JobRefused(Exception):
    """A job cannot run now; the message says why (shown to the user)."""


class Job:
    """Base of pluggable jobs (see module docstring)."""

    label = "job"
    slot = "job"  # one job per slot at a time; another cancels it

    def prepare(self, session):
        """``(fn, total)``: the task function ``fn(report, cancelled)`` and its step count."""
        raise NotImplementedError

    def task_key(self, session):
        """What the job's results are computed for (see :meth:`stale`)."""
        return session.job_key()

    def on_yield(self, session, task, item) -> None:
        """A partial result, on the session's thread (only while the job is current)."""

    def on_result(self, session, task, result) -> None:
        """The result, on the session's thread."""

    def on_error(self, session, task, exc: BaseException) -> None:
        """The job failed or was cancelled (the session reports it after this)."""

    def stale(self, session, task) -> bool:
        return task.key != session.job_key()


@dataclass(frozen=True)
class PlaneMask:
    """One plane of a job's result: the object's id mask on the plane with labels index ``at``."""

    at: tuple
    mask: np.ndarray
    score: float = float("nan")


class Propagation(Job):
    """The current object on the following and preceding planes along the through axis (see
    :func:`napari_sam.engine.propagate`); each plane is shown as soon as it is found and a
    commit writes the object through all of them with one id."""

    label = "propagating"

    def prepare(self, session):
        obj, planes, vol, key = session.object, session.planes, session.volume, session.current_key()
        cand = obj.chosen_candidate
        if cand is None or cand.ious:
            raise JobRefused("Propagate needs one object: place prompts and wait for its mask first.")
        axis = planes.through_axis() if planes is not None else None
        if axis is None or vol is None or key is None:
            raise JobRefused("Propagate needs a stack or time series (an image with more than one plane).")
        if vol.layout is not None:
            raise JobRefused("Propagation works on untiled planes (planes up to 2048 px).")
        session.cancel_prefetch()
        obj.planes = {}
        session.events.object_planes.emit(())
        run = _propagation(vol, session.model, key.plane, axis, cand.mask > 0, cand.logits,
                           dict(session.settings.propagation), planes.labels_at)
        return run, vol.lead_shape[axis] - 1

    def on_yield(self, session, task, item: PlaneMask) -> None:
        if not self.stale(session, task):
            session.object.planes[item.at] = item.mask
            session.events.object_planes.emit((item.at,))

    def on_result(self, session, task, result) -> None:
        if self.stale(session, task):
            return  # the object, plane, image or model changed meanwhile
        count, stops = result
        why = "; ".join(f"stopped at {session.planes.plane_label(p)} ({reason})" for p, reason in stops)
        session.message(f"Propagated through {count} planes ({why or 'reached both ends'}). "
                        "C commits them as one object.")

    def on_error(self, session, task, exc) -> None:
        if not self.stale(session, task) and session.object.planes:
            session.object.planes = {}
            session.events.object_planes.emit(())


def _propagation(vol, model, plane, axis, mask, logits, options, labels_at):
    """Task function yielding a :class:`PlaneMask` per plane, both ways from ``plane``; returns
    ``(planes including the start, [(plane, reason), ...])``."""
    def run(report, cancelled):
        stops, n, found = [], vol.lead_shape[axis], 1

        def plane_at(i):
            return plane[:axis] + (i,) + plane[axis + 1:]

        for stop in (n, -1):
            steps = propagate(model.predictor, lambda i: vol.embedding(plane_at(i) + (0, 0), cancel=cancelled),
                              plane[axis], stop, mask, None if logits is None else logits[None], cancel=cancelled,
                              **options)
            for step in steps:
                if isinstance(step, PropagationStep):
                    found += 1
                    yield PlaneMask(labels_at(plane_at(step.index)), step.mask.astype(np.uint8), step.score)
                    yield Progress(found - 1, n - 1)
                else:
                    stops.append((plane_at(step.index), step.reason))
        return found, stops

    return run


AUTO_POINTS = {"cpu": 16}  # points per side for "auto" (0); other devices: 32
LAYER_NAME = "SAM everything"


class SegmentEverything(Job):
    """Automatic masks of the plane on screen (:func:`napari_sam.engine.generate_masks`) into a
    new label image of the labels shape (that plane filled, every channel), offered to the view
    as ``new_labels`` (committed labels are never touched)."""

    def __init__(self, params: dict) -> None:
        self.params = params

    def prepare(self, session):
        source, key = session.image, session.current_key()
        if source is None or source.plane_shape is None:
            raise JobRefused("Segment everything needs an image: choose a 2D (or nD) single-scale image layer.")
        if key is None:
            raise JobRefused("Segment everything needs a model: press 'Load model' first.")
        try:
            vol = session.volume_for(key)
        except (ValueError, OSError) as exc:
            raise JobRefused(f"Cannot segment '{source.name}': {exc}") from exc
        if vol.layout is not None:
            raise JobRefused("Segment everything does not support tiled planes (larger than 2048 px) yet: "
                             "crop or downsample the image.")
        where = session.planes.plane_label(key.plane)
        self.label = f"segmenting everything in {source.name}{' ' + where if where else ''}"
        n = self.params["points_per_side"] ** 2
        session.message(f"{self.label} ({self.params['points_per_side']}x{self.params['points_per_side']} points)…")
        return _everything(vol, key.plane + (0, 0), session.model.predictor, self.params), \
            -(-n // self.params.get("points_per_batch", 64))

    def stale(self, session, task) -> bool:
        return task.key[0] != session.current_key()

    def on_result(self, session, task, result) -> None:
        shape = session.image.labels_shape if session.image is not None else None
        if self.stale(session, task) or shape is None:
            session.message("Segment everything finished for another image, plane or model: result discarded.")
            return
        labels, count = result
        if not count:
            session.message("Segment everything found no objects: lower the IoU/stability thresholds.", warn=True)
            return
        data = np.zeros(shape, labels.dtype)
        data[plane_index(session.planes.labels_at(task.key[0].plane))] = labels  # every channel of the plane
        session.events.new_labels.emit(LAYER_NAME, data)
        session.message(f"Segment everything: {int(labels.max())} objects ({count} masks) in '{LAYER_NAME}'.")


def _everything(vol, item: tuple[int, ...], predictor, params: dict):
    """Task function returning ``(labels (H, W) uint32, number of masks)`` for ``item`` of ``vol``.
    Crop layers need the pixels: a shallow copy of the predictor (same model, own state) gets
    the plane's embedding and RGB pixels, so the plane is not embedded again."""
    def run(report, cancelled):
        emb = vol.embedding(item, cancel=cancelled)
        if params.get("crop_n_layers", 0) > 0:
            source = copy.copy(predictor)  # shares the model; its own embedding and image
            source.set_embedding(emb)
            source.image = to_rgb_uint8(vol.pixels(item[:-2]), vol.contrast_limits)
            extra = {}
        else:
            source, extra = emb, {"model": predictor}
        masks = generate_masks(source, progress=report, cancel=cancelled, **extra, **params)
        shape = tuple(int(s) for s in emb.original_size)
        return masks_to_labels(masks, shape=shape, dtype=np.uint32), len(masks)

    return run
