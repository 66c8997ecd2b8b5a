"""Turning prompt-layer contents into one decode request (pure NumPy, no Qt).

All coordinates are napari data coordinates of the image, ``(row, col)`` in pixels; the
engine converts them to model ``(x, y)``. Boxes are ``(min_row, min_col, max_row, max_col)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine.preprocess import points_inside


@dataclass(frozen=True)
class Prompts:
    """Usable prompts of the current object and the messages about ignored ones.

    ``points (N, 2)`` float64 ``(row, col)``; ``labels (N,)`` int64, 1 positive / 0 negative;
    ``boxes (M, 4)`` float64.
    """

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and len(self.boxes) == 0


@dataclass(frozen=True)
class DecodePlan:
    """What to ask the predictor: one object (points and/or one box) or one object per box.

    ``multimask`` is True for a lone point: SAM's three whole/part/subpart candidates.
    ``mask_input (1, 256, 256)`` feeds back the chosen candidate's low-res logits.
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    boxes: np.ndarray | None  # several boxes: several objects, decoded together
    multimask: bool
    mask_input: np.ndarray | None = field(default=None, repr=False)

    @property
    def several_objects(self) -> bool:
        return self.boxes is not None


def collect(points: np.ndarray, positive: np.ndarray, shapes: list[np.ndarray], shape_types: list[str],
            image_shape: tuple[int, int]) -> Prompts:
    """Validate raw layer contents against the image ``(H, W)``.

    Points outside the image are dropped; rectangles become boxes clipped to the image;
    boxes without area and non-rectangular shapes are dropped. Each drop adds a message.
    """
    h, w = image_shape
    problems: list[str] = []
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lab = np.asarray(positive, dtype=bool).reshape(-1).astype(np.int64)
    if len(lab) != len(pts):  # should not happen; be safe: treat all as positive
        lab = np.ones(len(pts), np.int64)
    inside = points_inside(pts, image_shape)
    for r, c in pts[~inside]:
        problems.append(f"point ({r:.0f}, {c:.0f}) lies outside the {h}×{w} image: ignored")
    boxes = []
    for verts, kind in zip(shapes, shape_types):
        verts = np.asarray(verts, dtype=np.float64).reshape(-1, 2)
        if kind != "rectangle":
            problems.append(f"a {kind} is not a box: only rectangles are used")
            continue
        lo = np.clip(verts.min(axis=0), -0.5, [h - 0.5, w - 0.5])
        hi = np.clip(verts.max(axis=0), -0.5, [h - 0.5, w - 0.5])
        if np.any(hi - lo < 1.0):
            where = "outside the image" if np.any(verts.max(axis=0) < 0) or np.any(verts.min(axis=0) > [h, w]) \
                else "too small (no area)"
            problems.append(f"box at ({verts[0, 0]:.0f}, {verts[0, 1]:.0f}) is {where}: ignored")
            continue
        boxes.append(np.concatenate([lo, hi]))
    return Prompts(pts[inside], lab[inside], np.asarray(boxes, np.float64).reshape(-1, 4), tuple(problems))


def plan(prompts: Prompts, mask_input: np.ndarray | None) -> tuple[DecodePlan | None, tuple[str, ...]]:
    """The decode for ``prompts`` (None when there is nothing to decode) and notes for the user.

    - several boxes: one object per box (``Predictor.predict_boxes``); points and
      ``mask_input`` are not used (a note says so when there are points);
    - otherwise one object from the points and the box (if any), with ``mask_input``;
      three candidates for a single point, SAM's single-mask output for anything more.
    """
    if prompts.empty:
        return None, ()
    if len(prompts.boxes) > 1:
        notes = ("points are ignored while there are several boxes (one object per box)",) \
            if len(prompts.points) else ()
        return DecodePlan(None, None, None, prompts.boxes, multimask=False), notes
    box = prompts.boxes[0] if len(prompts.boxes) else None
    if box is None and not prompts.labels.any():
        return None, ("negative points only say what is not the object: add a positive point or a box",)
    points = prompts.points if len(prompts.points) else None
    labels = prompts.labels if len(prompts.points) else None
    single_point = box is None and len(prompts.points) == 1
    return DecodePlan(points, labels, box, None, multimask=single_point, mask_input=mask_input), ()
