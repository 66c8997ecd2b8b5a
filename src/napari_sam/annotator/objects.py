"""The object being segmented: its candidates on the plane of its prompts, and its masks on
other planes (propagation, tracking). Pure NumPy.

Masks are *id images* of a plane (napari ``(row, col)``): 0 is background and ``k >= 1`` is
the object's ``k``-th part object (several boxes give several objects at once; most masks hold
object 1 only). An object keeps its number ``k`` on every plane, so a commit gives it one label
id through all of them. Low-res logits are ``(256, 256)`` float32 (``mask_input[None]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """One mask to choose from. ``index`` is its 0-based rank by predicted IoU (0 = best).

    ``mask`` is uint8: 0/1 for one object, or ids ``1..K`` for K objects decoded from K boxes
    (then ``ious`` holds each object's score and ``iou`` their mean; ``logits`` is None).
    ``offset`` is the ``(row, col)`` of ``mask[0, 0]`` in the plane (tiled images).
    """

    index: int
    mask: np.ndarray
    iou: float
    logits: np.ndarray | None = None
    ious: tuple[float, ...] = ()
    offset: tuple[int, int] = (0, 0)

    @property
    def objects(self) -> list[np.ndarray]:
        """Boolean masks, one per object, in id order."""
        return id_objects(self.mask, len(self.ious) or 1)

    @property
    def name(self) -> str:
        if self.ious:
            return f"SAM masks · {len(self.ious)} objects · IoU {self.iou:.2f}"
        return f"SAM mask {self.index + 1} · IoU {self.iou:.2f}"


def id_objects(mask: np.ndarray, n: int) -> list[np.ndarray]:
    """Boolean masks of objects ``1..n`` of an id image (any nonzero value for ``n == 1``)."""
    return [mask > 0] if n == 1 else [mask == k for k in range(1, n + 1)]


def rank_single(masks: np.ndarray, scores: np.ndarray, logits: np.ndarray,
                offset: tuple[int, int] = (0, 0)) -> list[Candidate]:
    """Candidates of one object, best first: ``masks (K, H, W)``, ``scores (K,)``, ``logits (K, g, g)``."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [Candidate(rank, masks[k].astype(np.uint8), float(scores[k]), np.asarray(logits[k]), (), offset)
            for rank, k in enumerate(order)]


def merge_objects(masks: np.ndarray, scores: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Candidate:
    """One candidate holding N objects: ``masks (N, H, W)`` bool, ``scores (N,)``.
    Where objects overlap, the higher-scoring one wins."""
    merged = np.zeros(masks.shape[1:], np.uint8 if len(masks) < 256 else np.uint16)
    for k in np.argsort(np.asarray(scores), kind="stable"):  # best painted last
        merged[masks[k]] = k + 1
    ious = tuple(float(s) for s in scores)
    return Candidate(0, merged, float(np.mean(ious)), None, ious, offset)


@dataclass
class CurrentObject:
    """The object being segmented.

    ``plane`` is where its prompts and ``candidates`` are (the chosen one is ``chosen``);
    ``planes`` holds its id masks on other planes by *labels index* (see
    :mod:`napari_sam.annotator.source`), filled by propagation or tracking jobs; a commit writes
    the chosen candidate and all of them with one id per object. ``generation`` changes with
    every change of the object's prompts: work computed for an older one is stale.
    """

    plane: tuple[int, ...] = ()
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int = 0
    planes: dict[tuple, np.ndarray] = field(default_factory=dict)
    generation: int = 0

    def reset(self) -> None:
        """Forget the candidates and masks (the prompts changed or were dropped)."""
        self.candidates, self.chosen, self.planes = [], 0, {}

    def get(self, index: int) -> Candidate | None:
        return next((c for c in self.candidates if c.index == index), None)

    def drop(self, index: int) -> None:
        """Forget candidate ``index``; if it was chosen, choose the best one left."""
        self.candidates = [c for c in self.candidates if c.index != index]
        if self.chosen == index and self.candidates:
            self.chosen = min(c.index for c in self.candidates)

    @property
    def chosen_candidate(self) -> Candidate | None:
        return self.get(self.chosen)

    @property
    def objects(self) -> int:
        """How many part objects the chosen candidate holds (0 without one)."""
        cand = self.chosen_candidate
        return 0 if cand is None else (len(cand.ious) or 1)

    def mask_input(self) -> np.ndarray | None:
        """``(1, 256, 256)`` logits of the chosen candidate, for refining this object."""
        cand = self.chosen_candidate
        return None if cand is None or cand.logits is None else cand.logits[None]
