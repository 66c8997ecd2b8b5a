"""*Segment everything* in the widget: automatic mask generation on the plane on screen.

The plane's embedding (computed, cached or from a store) is decoded with a grid of point
prompts by :func:`napari_sam.engine.generate_masks` in a background task (progress bar,
Cancel). The masks become instance ids (``masks_to_labels``: no overlaps, best score wins)
in a NEW Labels layer ``SAM everything`` (role ``"labels"``) of the image's labels shape,
placed like the image: for a 2D image the plane itself, for an nD image only the current
plane is filled. Committed labels layers are never touched. A result is applied only while
the image, its data, the plane and the model are those it was computed for.
"""

from __future__ import annotations

import copy

import numpy as np

from ..engine import Predictor, generate_masks, masks_to_labels, to_rgb_uint8
from . import layers as L
from .jobs import Task, TaskRunner
from .state import plane_index

LAYER_NAME = "SAM everything"
AUTO_POINTS = {"cpu": 16}  # points per side when the spin box says "auto"; other devices: 32
PARAMS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
          "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_overlap_ratio",
          "min_mask_region_area")


class Everything:
    """Owned by a :class:`SamWidget` ``w``; ``runner`` is its background task."""

    def __init__(self, w) -> None:
        self.w = w
        self.runner = TaskRunner(w._progress)
        w.ui.everything.run.clicked.connect(lambda _=False: self.start())

    def params(self, **overrides) -> dict:
        """The panel's parameters with ``overrides`` (``generate_masks`` keywords); points
        per side 0 (auto) resolved for the model's device."""
        unknown = set(overrides) - set(PARAMS)
        if unknown:
            raise TypeError(f"unknown segment-everything parameter(s): {', '.join(sorted(unknown))}")
        params = {**self.w.ui.everything.values(), **overrides}
        if not params["points_per_side"]:
            device = self.w.model.predictor.device.type if self.w.model is not None else "cpu"
            params["points_per_side"] = AUTO_POINTS.get(device, 32)
        return params

    def start(self, **overrides) -> bool:
        """Start segmenting the plane on screen; False (and a message) if that cannot be done."""
        w = self.w
        params = self.params(**overrides)
        key = w.current_key()
        if w.image is None or w.image_shape is None:
            w.message("Segment everything needs an image: choose a 2D (or nD) single-scale image layer.",
                      warn=True)
            return False
        if key is None:
            w.message("Segment everything needs a model: press 'Load model' first.", warn=True)
            return False
        try:
            vol = w.planes.volume_for(key)
        except (ValueError, OSError) as exc:
            w.message(f"Cannot segment '{w.image.name}': {exc}", warn=True)
            return False
        if vol.layout is not None:
            w.message("Segment everything does not support tiled planes (larger than 2048 px) yet: "
                      "crop or downsample the image.", warn=True)
            return False
        where = f" plane {key.plane}" if key.plane else ""
        label = f"segmenting everything in {w.image.name}{where}"
        n = params["points_per_side"] ** 2
        batches = -(-n // params.get("points_per_batch", 64))
        self.runner.start(label, key, task(vol, w.planes.item(key.plane), w.model.predictor, params),
                          batches, self._done, w._task_failed)
        w.message(f"{label} ({params['points_per_side']}x{params['points_per_side']} points)…")
        w._busy_changed()
        return True

    def _done(self, task: Task, result) -> None:
        w = self.w
        w._busy_changed()
        if task.key != w.current_key() or w.labels_shape is None:
            w.message("Segment everything finished for another image, plane or model: result discarded.")
            return
        labels, count = result
        if not count:
            w.message("Segment everything found no objects: lower the IoU/stability thresholds.", warn=True)
            return
        data = np.zeros(w.labels_shape, labels.dtype)
        data[plane_index(w.planes.labels_at(task.key.plane))] = labels  # every channel of the plane
        pick = w.ui.labels.currentText()  # keep the commit target the user had
        layer = L.make_labels(w.image, w.labels_shape, LAYER_NAME, data=data)
        w.viewer.layers.insert(w.viewer.layers.index(w.image) + 1, layer)
        w._labels_pick = pick
        w.refresh_labels_choice()
        ids = int(labels.max())
        w.message(f"Segment everything: {ids} objects ({count} masks) in '{layer.name}'.")


def task(vol, item: tuple[int, ...], predictor: Predictor, params: dict):
    """Task function returning ``(labels (H, W) uint32, number of masks)`` for ``item``
    (``plane + (0, 0)``) of ``vol``. Crop layers need the pixels: a shallow copy of the
    predictor (same model, own state) gets the plane's embedding and RGB pixels, so the full
    plane is not embedded again and the widget's predictor is left alone."""
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
