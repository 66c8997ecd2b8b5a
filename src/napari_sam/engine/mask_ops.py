"""Vectorised mask and box operations for automatic mask generation (torch, no torchvision).

Conventions inside this module: masks are ``(K, H, W)`` bool tensors indexed ``(row, col)``;
boxes are ``(K, 4)`` *inclusive* pixel boxes ``(min_row, min_col, max_row, max_col)``
(an empty mask gives ``(0, 0, 0, 0)``). IoU of inclusive boxes uses
``(max - min)`` side lengths, the convention of the published pipeline, so NMS decisions
agree with it exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import Geometry

# --- point grids and crops ----------------------------------------------------------


def point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` points ``(row, col)`` in ``[0, 1]``: cell centres of an ``n x n`` grid,
    rows outer, columns inner."""
    centres = (np.arange(n_per_side, dtype=np.float64) + 0.5) / n_per_side
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1)


def crop_boxes(shape: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[tuple[tuple[int, int, int, int], int]]:
    """Crops as ``((r0, c0, r1, c1), layer)`` with exclusive ends: the whole image (layer 0),
    then for layer ``i >= 1`` a ``2^i x 2^i`` grid of overlapping crops. Neighbouring crops of
    layer ``i`` overlap by ``overlap_ratio * short_side * 2 / 2^i`` pixels."""
    height, width = shape
    out = [((0, 0, height, width), 0)]
    short = min(height, width)
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * 2 / n)
        size_h = math.ceil((overlap * (n - 1) + height) / n)
        size_w = math.ceil((overlap * (n - 1) + width) / n)
        starts_r = [int((size_h - overlap) * i) for i in range(n)]
        starts_c = [int((size_w - overlap) * i) for i in range(n)]
        for c0 in starts_c:  # columns outer: the published crop order
            for r0 in starts_r:
                out.append(((r0, c0, min(r0 + size_h, height), min(c0 + size_w, width)), layer))
    return out


def crop_layers(shape: tuple[int, int], crop_n_layers: int, crop_overlap_ratio: float) -> list:
    """``crop_boxes(shape, crop_n_layers, crop_overlap_ratio)`` if every crop holds pixels, else
    ``ValueError`` saying how many layers this image allows (small images allow fewer)."""
    def empty(crops):
        return [box for box, _ in crops if box[2] <= box[0] or box[3] <= box[1]]

    crops = crop_boxes(shape, crop_n_layers, crop_overlap_ratio)
    bad = empty(crops)
    if bad:
        most = max(k for k in range(crop_n_layers) if not empty(crop_boxes(shape, k, crop_overlap_ratio)))
        raise ValueError(f"crop_n_layers={crop_n_layers} cuts an image of shape {tuple(shape)} into empty crops "
                         f"(e.g. {bad[0]}): use at most {most} crop layer(s) for it")
    return crops


# --- logits -> masks ------------------------------------------------------------------


def upscale_logits_cropped(logits: torch.Tensor, geometry: Geometry, img_size: int) -> torch.Tensor:
    """Low-res logits ``(K, g, g)`` -> ``(K, H, W)`` at the original size.

    Same values as upsampling to ``img_size`` square, cropping the valid ``input_size``
    part and resizing to ``original_size`` (both bilinear), but the padded area below/right
    of the image is never computed: only the low-res rows/cols that feed the valid part are
    upsampled, with the same fixed scale factor (so every output sample is bit-identical).
    """
    g = logits.shape[-1]
    factor = img_size // g
    h, w = geometry.input_size
    rows = min(g, -(-h // factor) + 1)
    cols = min(g, -(-w // factor) + 1)
    x = logits[:, None, :rows, :cols]
    x = F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)
    x = x[..., :h, :w]
    if (h, w) != tuple(geometry.original_size):
        x = F.interpolate(x, geometry.original_size, mode="bilinear", align_corners=False)
    return x[:, 0]


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks ``logits > threshold + offset`` and ``logits > threshold - offset``
    (the first lies inside the second, so IoU = area ratio). ``(K, H, W)`` -> ``(K,)``."""
    # count per row in int16 first (4x faster than one int64 reduction on CPU), then per mask
    row_type = torch.int16 if logits.shape[-1] < 2**15 else torch.int32

    def count(above: torch.Tensor) -> torch.Tensor:
        return above.sum(-1, dtype=row_type).sum(-1, dtype=torch.int64)

    inner = count(logits > threshold + offset)
    outer = count(logits > threshold - offset)
    return inner.to(torch.float32) / outer.to(torch.float32)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Inclusive boxes ``(K, 4)`` int64 of bool masks ``(K, H, W)``; empty masks give zeros."""
    k, h, w = masks.shape
    if k == 0:
        return torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
    rows_any = masks.any(dim=2)
    cols_any = masks.any(dim=1)

    def ends(present: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(n, device=present.device)
        first = torch.where(present, idx, n).amin(dim=1)
        last = torch.where(present, idx, -1).amax(dim=1)
        return first, last

    r0, r1 = ends(rows_any, h)
    c0, c1 = ends(cols_any, w)
    boxes = torch.stack([r0, c0, r1, c1], dim=1)
    empty = ~rows_any.any(dim=1)
    return torch.where(empty[:, None], 0, boxes)


def near_crop_edge(boxes: torch.Tensor, crop: tuple[int, int, int, int], shape: tuple[int, int],
                   tol: float = 20.0) -> torch.Tensor:
    """``(K,)`` True where an (image-frame) box lies within ``tol`` of an edge of ``crop``
    that is not also an edge of the image: the object is probably cut by the crop."""
    crop_t = torch.tensor(crop, dtype=torch.float32, device=boxes.device)
    image_t = torch.tensor((0, 0, shape[0], shape[1]), dtype=torch.float32, device=boxes.device)
    b = boxes.to(torch.float32)
    at_crop = (b - crop_t).abs() <= tol
    at_image = (b - image_t).abs() <= tol
    return (at_crop & ~at_image).any(dim=1)


# --- packed storage -------------------------------------------------------------------

_BITS = 2 ** torch.arange(8, dtype=torch.uint8)


def pack_masks(masks: torch.Tensor) -> np.ndarray:
    """Bool ``(K, H, W)`` -> ``(K, ceil(H*W/8))`` uint8 on the CPU (8x smaller)."""
    k = masks.shape[0]
    if masks.device.type == "cpu":  # NumPy's packbits is a tight C loop
        return np.packbits(masks.reshape(k, -1).numpy(), axis=1, bitorder="little")
    flat = masks.reshape(k, -1)  # on an accelerator: pack there, move 8x less
    pad = (-flat.shape[1]) % 8
    if pad:
        flat = F.pad(flat, (0, pad))
    bits = _BITS.to(masks.device)
    packed = (flat.reshape(k, -1, 8).to(torch.uint8) * bits).sum(dim=2, dtype=torch.uint8)
    return packed.cpu().numpy()


def unpack_masks(packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pack_masks`: ``(K, H, W)`` bool."""
    h, w = shape
    bits = np.unpackbits(packed, axis=1, count=h * w, bitorder="little")
    return bits.view(bool).reshape(-1, h, w)  # 0/1 bytes are valid bools: no copy


# --- non-maximum suppression ----------------------------------------------------------


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of float boxes ``(r0, c0, r1, c1)`` (side = max - min)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float, block: int = 2048) -> torch.Tensor:
    """Greedy non-maximum suppression, exact and vectorised.

    Returns indices of the kept boxes, best score first (ties keep input order). A box is
    dropped when its IoU with a *kept* higher-ranked box exceeds ``iou_thresh``.

    Instead of a Python loop over boxes, the pairwise "ranked-before and overlapping" matrix
    is built once and the keep vector is iterated to its fixed point
    ``keep[j] = not any(keep[i] and suppresses[i, j])``: entry ``j`` depends only on entries
    ranked before it, so each iteration fixes at least one more entry and the fixed point is
    the greedy result (in practice a handful of iterations).
    """
    n = boxes.shape[0]
    order = torch.argsort(scores, descending=True, stable=True)
    if n == 0 or iou_thresh >= 1.0:
        return order
    b = boxes[order].to(torch.float32)
    rank = torch.arange(n, device=b.device)
    sup = torch.empty(n, n, dtype=torch.bool, device=b.device)
    for start in range(0, n, block):  # bounded memory for large n
        stop = min(start + block, n)
        iou = box_iou(b[start:stop], b)
        sup[start:stop] = (iou > iou_thresh) & (rank[start:stop, None] < rank[None, :])
    keep = torch.ones(n, dtype=torch.bool, device=b.device)
    for _ in range(n + 1):
        new = ~sup[keep].any(dim=0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


# --- small-region cleanup -------------------------------------------------------------


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``mode="islands"``) smaller than
    ``min_area`` pixels (8-connected). Islands: if every island is small, the largest stays.
    Returns the new mask and whether anything changed."""
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    region = ~mask if mode == "holes" else mask
    labels, n = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask, False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask, False
    if mode == "holes":
        return mask | (small[labels - 1] & (labels > 0)), True
    keep = ~small
    if not keep.any():
        keep[np.argmax(sizes)] = True
    return (labels > 0) & keep[labels - 1], True
