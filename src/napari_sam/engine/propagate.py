"""Propagate an object's mask from one plane to the next (through z or time).

On each new plane the object is prompted with what the previous plane gave: the box
around its mask (with a small margin), its low-res logits as ``mask_input``, and a
positive point at its most interior pixel. Propagation stops when the predicted IoU falls
below ``min_score``, the mask vanishes (``< min_area`` pixels), or it jumps (overlap with
the previous mask, as IoU, below ``min_overlap``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .predictor import Cancelled, Embedding, Predictor


@dataclass(frozen=True)
class PropagationStep:
    """The object on plane ``index``: ``mask (H, W)`` bool, predicted IoU ``score``."""

    index: int
    mask: np.ndarray
    score: float
    logits: np.ndarray


@dataclass(frozen=True)
class PropagationStop:
    """Why propagation ended early, at plane ``index`` (``reason``: ``"score"``, ``"vanished"``
    or ``"jump"``). Reaching ``stop`` yields no stop: the steps simply end."""

    index: int
    reason: str


def bounding_box(mask: np.ndarray, margin: float = 0.05) -> np.ndarray | None:
    """``(min_row, min_col, max_row, max_col)`` of ``mask`` grown by ``margin`` of its size."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    r0, r1 = np.flatnonzero(rows)[[0, -1]]
    c0, c1 = np.flatnonzero(cols)[[0, -1]]
    dr, dc = max(1.0, margin * (r1 - r0 + 1)), max(1.0, margin * (c1 - c0 + 1))
    h, w = mask.shape
    return np.array([max(r0 - dr, 0), max(c0 - dc, 0), min(r1 + dr, h - 1), min(c1 + dc, w - 1)], float)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """The mask pixel farthest from the background, ``(1, 2)`` as (row, col)."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return np.array([np.unravel_index(int(np.argmax(dist)), mask.shape)], float)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def propagate(
    predictor: Predictor,
    embedding_for: Callable[[int], Embedding],
    start: int,
    stop: int,
    mask: np.ndarray,
    logits: np.ndarray | None = None,
    *,
    min_score: float = 0.5,
    min_area: int = 10,
    min_overlap: float = 0.1,
    use_point: bool = True,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[PropagationStep | PropagationStop]:
    """Walk from plane ``start`` (which holds ``mask``) towards ``stop`` (exclusive; smaller
    than ``start`` walks backwards). Yields a :class:`PropagationStep` per plane, then a
    :class:`PropagationStop` if it ended early. ``embedding_for(i)`` gives plane ``i``'s
    embedding (computing it if needed); ``logits`` ``(1, 256, 256)`` seeds ``mask_input``.
    """
    step = 1 if stop > start else -1
    prev_mask = np.asarray(mask, bool)
    prev_logits = None if logits is None else np.asarray(logits, np.float32).reshape(1, *np.shape(logits)[-2:])
    for index in range(start + step, stop, step):
        if cancel is not None and cancel():
            raise Cancelled("propagation cancelled")
        box = bounding_box(prev_mask)
        if box is None:
            yield PropagationStop(index, "vanished")
            return
        points = interior_point(prev_mask) if use_point else None
        pred = predictor.predict(points=points, labels=None if points is None else np.ones(1, int), box=box,
                                 mask_input=prev_logits, multimask=False, embedding=embedding_for(index))
        new_mask, score = pred.masks[0], float(pred.scores[0])
        if score < min_score:
            yield PropagationStop(index, "score")
            return
        if np.count_nonzero(new_mask) < min_area:
            yield PropagationStop(index, "vanished")
            return
        if mask_iou(prev_mask, new_mask) < min_overlap:
            yield PropagationStop(index, "jump")
            return
        yield PropagationStep(index, new_mask, score, pred.logits[:1])
        prev_mask, prev_logits = new_mask, pred.logits[:1]
