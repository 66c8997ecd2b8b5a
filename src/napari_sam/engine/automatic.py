"""Segment everything: automatic mask generation from a grid of point prompts.

The pipeline (Kirillov et al., *Segment Anything*, 2023, section "automatic mask generation"):

1. prompt the decoder with a regular ``points_per_side x points_per_side`` grid of single
   foreground points, ``points_per_batch`` points per decoder call, three masks per point;
2. keep masks whose predicted IoU exceeds ``pred_iou_thresh`` and whose *stability score*
   (IoU of the mask thresholded at ``+offset`` and at ``-offset`` around the mask threshold)
   reaches ``stability_score_thresh``;
3. in crops, drop masks whose box touches a crop edge that is not an image edge;
4. remove duplicates with box non-maximum suppression (``box_nms_thresh``) per crop, then
   across crops (smaller crops win, threshold :data:`CROP_NMS_THRESH`);
5. optionally repeat on ``crop_n_layers`` layers of overlapping crops (layer ``i`` has
   ``2^i x 2^i`` crops, each re-embedded at full model resolution) to find small objects;
6. optionally fill holes and remove islands smaller than ``min_mask_region_area`` pixels,
   then suppress duplicates again, preferring masks the cleanup did not change.

Everything per mask (thresholding, stability, boxes, edge tests, NMS) is batched in torch on
the model's device; only the final records and the optional cleanup are per mask.

Coordinates follow napari and NumPy, like the rest of the engine:
``point_coords`` is ``[[row, col]]`` and ``bbox`` is ``[min_row, min_col, max_row, max_col]``
with *exclusive* max (``mask[r0:r1, c0:c1]`` is the box), both in pixels of the full image.
(The published reference reports ``(x, y)`` points and inclusive ``XYWH`` boxes.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..io.tiff import smallest_uint_dtype
from . import checks
from .fingerprint import model_fingerprint
from .mask_ops import (
    crop_layers,
    mask_boxes,
    near_crop_edge,
    nms,
    pack_masks,
    point_grid,
    remove_small_regions,
    stability_scores,
    unpack_masks,
    upscale_logits_cropped,
)
from .predictor import Cancelled, Embedding, Predictor, mask_frame
from .settings import DEFAULTS

CROP_NMS_THRESH = 0.7
"""Box IoU above which a mask from a larger crop is dropped in favour of one from a smaller crop."""

_UPSCALE_BYTES = 1 << 26  # cap on float32 logits held at full size at once (64 MiB: cache- and allocator-friendly)


@dataclass
class _Source:
    model: torch.nn.Module
    embedding: Embedding
    image: np.ndarray | None
    predictor: Predictor | None


@dataclass
class _Found:
    """Masks kept in one crop, in crop coordinates (masks bit-packed on the CPU)."""

    crop: tuple[int, int, int, int]
    packed: list[np.ndarray] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)
    iou: list[torch.Tensor] = field(default_factory=list)
    stability: list[torch.Tensor] = field(default_factory=list)
    points: list[torch.Tensor] = field(default_factory=list)


def generate_masks(
    predictor_or_embedding: Predictor | Embedding,
    *,
    points_per_side: int = DEFAULTS.points_per_side,
    points_per_batch: int = DEFAULTS.points_per_batch,
    pred_iou_thresh: float = DEFAULTS.pred_iou_thresh,
    stability_score_thresh: float = DEFAULTS.stability_score_thresh,
    stability_score_offset: float = DEFAULTS.stability_score_offset,
    box_nms_thresh: float = DEFAULTS.box_nms_thresh,
    crop_n_layers: int = DEFAULTS.crop_n_layers,
    crop_overlap_ratio: float = DEFAULTS.crop_overlap_ratio,
    min_mask_region_area: int = DEFAULTS.min_mask_region_area,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    model: torch.nn.Module | Predictor | None = None,
) -> list[dict]:
    """Find every object in one 2D image; returns one record per mask. The defaults are
    :class:`~napari_sam.engine.settings.GeneratorSettings` (``**settings.keywords()`` passes one).

    ``predictor_or_embedding``: a :class:`Predictor` with an image set (its current
    embedding is used), or an :class:`Embedding` together with ``model=`` (the ``Sam`` or
    ``Predictor`` that computed it). Crop layers (``crop_n_layers > 0``) re-embed crops of the
    image, so they need the pixels: a Predictor after ``set_image`` has them; an Embedding (or
    a Predictor given only ``set_embedding``) raises ``ValueError``.

    Thresholds: a mask is kept if predicted IoU ``> pred_iou_thresh`` (off when ``<= 0``)
    and stability ``>= stability_score_thresh`` (off when ``<= 0``); ``box_nms_thresh >= 1``
    disables duplicate removal. ``min_mask_region_area > 0`` fills holes and removes islands
    smaller than that (pixels). Every setting is checked first (types, finite values in their
    ranges, at most :data:`~napari_sam.engine.checks.MAX_CROP_LAYERS` crop layers, each crop
    non-empty for this image): ``TypeError``/``ValueError`` before any work.

    ``progress(done, total)`` is called after each decoder batch and crop embedding;
    ``cancel()`` is polled as often (and inside crop embeddings): True raises
    :class:`Cancelled`. Safe to run in a worker thread; nothing here touches Qt.

    Each record: ``segmentation`` bool ``(H, W)``; ``area`` int (pixels); ``bbox``
    ``[min_row, min_col, max_row, max_col]`` ints, max exclusive; ``predicted_iou`` and
    ``stability_score`` floats; ``point_coords`` ``[[row, col]]``, the prompt that produced
    the mask; ``crop_box`` ``[r0, c0, r1, c1]`` (max exclusive), the crop it was found in.
    Records come best-first within each crop.
    """
    checks.generator_settings(
        points_per_side=points_per_side, points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh, stability_score_offset=stability_score_offset,
        box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers, crop_overlap_ratio=crop_overlap_ratio,
        min_mask_region_area=min_mask_region_area)
    src = _resolve(predictor_or_embedding, model)
    shape = tuple(src.embedding.original_size)
    crops = crop_layers(shape, crop_n_layers, crop_overlap_ratio)
    if crop_n_layers > 0 and (src.image is None or src.predictor is None):
        raise ValueError(
            "crop layers re-embed crops of the image, but only its embedding was given: pass a "
            "Predictor after set_image(image), or use crop_n_layers=0"
        )

    grid = point_grid(points_per_side)
    batches = -(-len(grid) // points_per_batch)
    total = len(crops) * batches + (len(crops) - 1)
    done = 0

    def step() -> None:  # before each unit of work: poll cancel, report the units finished
        nonlocal done
        if cancel is not None and cancel():
            raise Cancelled("mask generation cancelled")
        if progress is not None and done:
            progress(done, total)
        done += 1

    settings = dict(points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
                    stability_score_thresh=stability_score_thresh,
                    stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh)
    found = []
    for crop, layer in crops:
        if layer == 0:
            embedding = src.embedding
        else:
            step()
            r0, c0, r1, c1 = crop
            embedding = src.predictor.compute_embedding(src.image[r0:r1, c0:c1], cancel=cancel)
        found.append(_process_crop(src.model, embedding, crop, shape, grid, step, **settings))
    if progress is not None:
        progress(total, total)
    return _finish(found, shape, len(crops) > 1, min_mask_region_area, box_nms_thresh)


def _resolve(source, model) -> _Source:
    if isinstance(source, Predictor):
        if source.embedding is None:
            raise RuntimeError("no image set: call set_image() on the predictor first")
        image = getattr(source, "image", None)
        return _Source(source.model, source.embedding, image, source)
    if isinstance(source, Embedding):
        if model is None:
            raise TypeError(
                "an Embedding alone cannot be decoded: pass model= (the Sam or Predictor that "
                "computed it), or pass a Predictor"
            )
        if isinstance(model, Predictor):
            return _Source(model.model, model._require_embedding(source), None, model)
        if getattr(model, "model_type", None) not in (None, source.model_name):
            raise ValueError(f"embedding was computed by {source.model_name!r}, model is {model.model_type!r}")
        if source.model_fingerprint not in (None, model_fingerprint(model)):
            raise ValueError(f"embedding was computed by {source.model_name!r} with other weights than this model's")
        return _Source(model, source.to(model.device), None, None)
    raise TypeError(f"expected a Predictor or an Embedding, got {type(source).__name__}")


@torch.no_grad()
def _process_crop(model, embedding: Embedding, crop, shape, grid, step, *, points_per_batch,
                  pred_iou_thresh, stability_score_thresh, stability_score_offset,
                  box_nms_thresh) -> _Found:
    """Decode the point grid over one crop and keep the masks that pass the filters."""
    device = embedding.features.device
    geometry = embedding.geometry
    crop_h, crop_w = geometry.original_size
    points_rc = grid * np.array([crop_h, crop_w], dtype=np.float64)
    points_xy = torch.from_numpy(geometry.points_to_model(points_rc)).to(device)
    points_rc_t = torch.from_numpy(points_rc).to(device)
    offset = torch.tensor(crop[:2], dtype=torch.float64, device=device)
    is_full = tuple(crop) == (0, 0, *shape)
    threshold = float(model.mask_threshold)
    in_h, in_w = geometry.input_size
    chunk = max(1, _UPSCALE_BYTES // (4 * (in_h * in_w + crop_h * crop_w)))
    out = _Found(tuple(crop))
    extra = {} if embedding.high_res is None else {"high_res": embedding.high_res}  # SAM 2
    frame = mask_frame(model, geometry)

    for start in range(0, len(points_rc), points_per_batch):
        step()
        xy = points_xy[start:start + points_per_batch]
        labels = torch.ones(len(xy), 1, dtype=torch.int64, device=device)
        logits, iou = model.decode(embedding.features, (xy[:, None, :], labels), None, None, True, **extra)
        n_out = logits.shape[1]
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1).float()
        point_idx = torch.arange(start, start + len(xy), device=device).repeat_interleave(n_out)
        if pred_iou_thresh > 0:  # predicted IoU does not depend on the upscaled mask: filter first
            keep = iou > pred_iou_thresh
            logits, iou, point_idx = logits[keep], iou[keep], point_idx[keep]
        for lo in range(0, len(logits), chunk):
            full = upscale_logits_cropped(logits[lo:lo + chunk].float(), *frame)
            stability = stability_scores(full, threshold, stability_score_offset)
            masks = full > threshold  # bool: 4x less to copy than the logits when filtering
            del full
            keep_idx = torch.arange(len(masks), device=device)
            if stability_score_thresh > 0:
                keep_idx = (stability >= stability_score_thresh).nonzero()[:, 0]
                if len(keep_idx) < len(masks):
                    masks = masks[keep_idx]
            boxes = mask_boxes(masks)
            if not is_full:
                inside = ~near_crop_edge(boxes + torch.cat([offset, offset]).long(), crop, shape)
                if not inside.all():
                    masks, boxes, keep_idx = masks[inside], boxes[inside], keep_idx[inside]
            if len(keep_idx) == 0:
                continue
            out.packed.append(pack_masks(masks))
            out.boxes.append(boxes)
            out.iou.append(iou[lo:lo + chunk][keep_idx])
            out.stability.append(stability[keep_idx])
            out.points.append(points_rc_t[point_idx[lo:lo + chunk][keep_idx]] + offset)
    _suppress_within(out, box_nms_thresh)
    return out


def _suppress_within(found: _Found, thresh: float) -> None:
    """Box NMS among the masks of one crop by predicted IoU; collapses the lists."""
    if not found.boxes:
        return
    boxes, iou = torch.cat(found.boxes), torch.cat(found.iou)
    keep = nms(boxes.float(), iou, thresh)
    keep_cpu = keep.cpu().numpy()
    found.packed = [np.concatenate(found.packed)[keep_cpu]]
    found.boxes = [boxes[keep]]
    found.iou = [iou[keep]]
    found.stability = [torch.cat(found.stability)[keep]]
    found.points = [torch.cat(found.points)[keep]]


def _finish(found: list[_Found], shape, several_crops: bool, min_area: int, box_nms_thresh: float) -> list[dict]:
    found = [f for f in found if f.boxes]
    if not found:
        return []
    crops = [f.crop for f in found]
    sizes = [len(f.iou[0]) for f in found]
    crop_of = np.repeat(np.arange(len(found)), sizes)
    boxes = torch.cat([f.boxes[0].cpu() + torch.tensor(f.crop[:2] * 2) for f in found])
    iou = torch.cat([f.iou[0].cpu() for f in found])
    stability = torch.cat([f.stability[0].cpu() for f in found])
    points = torch.cat([f.points[0].cpu() for f in found])
    if several_crops:
        area = torch.tensor([float((c[2] - c[0]) * (c[3] - c[1])) for c in crops])[torch.from_numpy(crop_of)]
        order = nms(boxes.float(), 1.0 / area, CROP_NMS_THRESH).numpy()
    else:
        order = np.arange(len(iou))
    if len(found) == 1 and crops[0] == (0, 0, *shape):  # the usual case: no pasting needed
        masks = unpack_masks(found[0].packed[0][order], shape)
    else:
        masks = _paste(found, order, crop_of, sizes, shape)
    boxes, iou, stability, points = boxes[order], iou[order], stability[order], points[order]
    crop_box = [crops[c] for c in crop_of[order]]
    if min_area > 0:
        masks, boxes, keep = _clean_small_regions(masks, boxes, min_area, max(box_nms_thresh, CROP_NMS_THRESH))
        iou, stability, points = iou[keep], stability[keep], points[keep]
        crop_box = [crop_box[k] for k in keep.tolist()]
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    boxes = boxes.tolist()
    return [
        {
            "segmentation": masks[i],
            "area": int(areas[i]),
            "bbox": [b[0], b[1], b[2] + 1, b[3] + 1] if areas[i] else [0, 0, 0, 0],
            "predicted_iou": float(iou[i]),
            "stability_score": float(stability[i]),
            "point_coords": [[float(points[i, 0]), float(points[i, 1])]],
            "crop_box": list(crop_box[i]),
        }
        for i, b in enumerate(boxes)
    ]


def _paste(found: list[_Found], order: np.ndarray, crop_of: np.ndarray, sizes: list[int], shape) -> np.ndarray:
    """Full-frame masks, in ``order``, from the packed crop-frame masks of every crop."""
    masks = np.zeros((len(order), *shape), dtype=bool)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for i, f in enumerate(found):  # one unpack per crop, not per mask
        sel = np.nonzero(crop_of[order] == i)[0]
        if len(sel) == 0:
            continue
        r0, c0, r1, c1 = f.crop
        local = order[sel] - starts[i]
        masks[sel, r0:r1, c0:c1] = unpack_masks(f.packed[0][local], (r1 - r0, c1 - c0))
    return masks


def _clean_small_regions(masks: np.ndarray, boxes: torch.Tensor, min_area: int, thresh: float):
    """Fill small holes, drop small islands, then NMS preferring unchanged masks.
    Returns the kept masks, their (new) inclusive boxes and the kept indices."""
    unchanged = np.ones(len(masks), dtype=bool)
    for i in range(len(masks)):
        masks[i], filled = remove_small_regions(masks[i], min_area, "holes")
        masks[i], removed = remove_small_regions(masks[i], min_area, "islands")
        unchanged[i] = not (filled or removed)
    boxes = mask_boxes(torch.from_numpy(masks))  # unchanged masks keep their box
    keep = nms(boxes.float(), torch.from_numpy(unchanged).float(), thresh)
    return masks[keep.numpy()], boxes[keep], keep


def masks_to_labels(masks: list[dict] | list[np.ndarray], shape: tuple[int, int] | None = None,
                    dtype=None) -> np.ndarray:
    """Paint masks into one label image: instance ids ``1..N`` without overlaps, 0 = none.

    Where masks overlap, the one with the higher score wins: score = ``predicted_iou``, ties
    broken by ``stability_score`` (records from :func:`generate_masks`); plain bool arrays
    are ranked in the given order (first wins). Ids are consecutive, best-scored mask first;
    a mask hidden entirely under better ones gets no id. ``shape`` is needed only when
    ``masks`` is empty. The dtype is the smallest unsigned type that fits, unless given.
    """
    segs = [m["segmentation"] if isinstance(m, dict) else np.asarray(m, dtype=bool) for m in masks]
    if not segs:
        if shape is None:
            raise ValueError("no masks and no shape: cannot size the label image")
        return np.zeros(shape, dtype=dtype or np.uint16)
    if shape is not None and tuple(segs[0].shape) != tuple(shape):
        raise ValueError(f"masks have shape {segs[0].shape}, expected {tuple(shape)}")
    if isinstance(masks[0], dict):
        keys = [(-float(m.get("predicted_iou", 0.0)), -float(m.get("stability_score", 0.0))) for m in masks]
        order = sorted(range(len(segs)), key=lambda i: keys[i])
    else:
        order = list(range(len(segs)))
    rank = np.zeros(segs[0].shape, dtype=np.int64)  # 0 = empty, else position in `order` + 1
    for pos in reversed(range(len(order))):  # worst first: better masks paint over
        rank[segs[order[pos]]] = pos + 1
    present, labels = np.unique(rank, return_inverse=True)
    if present[0] != 0:
        labels = labels + 1
    count = len(present) - (present[0] == 0)
    if dtype is None:
        dtype = smallest_uint_dtype(count)
    return labels.reshape(rank.shape).astype(dtype)
