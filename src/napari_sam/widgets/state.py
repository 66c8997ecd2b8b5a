"""Small state holders of the annotator (pure NumPy, no Qt): candidates and commit history.

Masks are ``(H, W)`` arrays of the image's 2D shape (napari ``(row, col)``). Low-res logits
are ``(256, 256)`` float32, ready to go back to the predictor as ``mask_input[None]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """One mask to choose from. ``index`` is its 0-based rank by predicted IoU (0 = best).

    ``mask`` is uint8: 0/1 for one object, or ids ``1..K`` for K objects decoded from K boxes
    (then ``ious`` holds each object's score and ``iou`` their mean; ``logits`` is None).
    """

    index: int
    mask: np.ndarray
    iou: float
    logits: np.ndarray | None = None
    ious: tuple[float, ...] = ()
    offset: tuple[int, int] = (0, 0)  # (row, col) of mask[0, 0] in the plane (tiled images)

    @property
    def objects(self) -> list[np.ndarray]:
        """Boolean masks, one per object, in id order."""
        if not self.ious:
            return [self.mask > 0]
        return [self.mask == k for k in range(1, len(self.ious) + 1)]


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
    """The object being segmented: its candidates and the ``index`` of the chosen one."""

    candidates: list[Candidate] = field(default_factory=list)
    chosen: int = 0

    def reset(self) -> None:
        self.candidates, self.chosen = [], 0

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

    def mask_input(self) -> np.ndarray | None:
        """``(1, 256, 256)`` logits of the chosen candidate, for refining this object."""
        cand = self.chosen_candidate
        return None if cand is None or cand.logits is None else cand.logits[None]


@dataclass(frozen=True)
class Commit:
    """Pixels written by one commit into ``layer`` (an opaque handle, e.g. a Labels layer):
    flat indices into its ``(H, W)`` array of ``size`` pixels, values before and after, new ids."""

    layer: Any
    flat: np.ndarray
    before: np.ndarray
    after: np.ndarray
    ids: tuple[int, ...]
    size: int = -1  # pixels of the labels array it was made on


def plane_index(at: tuple) -> tuple:
    """NumPy index of plane ``at`` (leading indices; ``None``: every index of that axis)."""
    return tuple(slice(None) if i is None else i for i in at)


def plane_flat(shape: tuple[int, ...], mask: np.ndarray, at: tuple = (),
               offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Flat indices into an array of ``shape`` of the True pixels of a 2D ``mask`` that lies
    on plane ``at`` (leading indices; ``None`` for every index of an axis, e.g. a channel
    axis) with its corner at ``offset`` ``(row, col)``."""
    rr, cc = np.nonzero(mask)
    if not rr.size:
        return np.zeros(0, np.int64)
    lead = [np.arange(n) if i is None else np.array([i]) for i, n in zip(at, shape)]
    combos = np.stack(np.meshgrid(*lead, indexing="ij"), -1).reshape(-1, len(at)) if at else np.zeros((1, 0), int)
    idx = tuple(np.repeat(combos[:, j], rr.size) for j in range(len(at)))
    idx += (np.tile(rr + offset[0], len(combos)), np.tile(cc + offset[1], len(combos)))
    return np.ravel_multi_index(idx, shape)


def paint(data: np.ndarray, objects: list[np.ndarray], overwrite: bool = False, at: tuple[int, ...] = (),
          offset: tuple[int, int] = (0, 0), planes: dict[tuple[int, ...], np.ndarray] | None = None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Write each boolean 2D object mask into ``data`` in place with a new id (max+1).

    The masks lie on plane ``at`` of ``data`` (see :func:`plane_flat`; ``()`` for 2D labels) with
    their corner at ``offset``. ``planes`` ``{at: mask}`` instead paints one object through
    several planes with a single id. Existing labels are kept unless ``overwrite``. Returns
    ``(flat, before, after, ids)`` (flat indices into ``data``); ``flat`` is empty when
    nothing was painted. Raises ValueError when ``data``'s dtype cannot hold the new id.
    """
    if planes is not None:
        groups = [np.concatenate([plane_flat(data.shape, m, p) for p, m in planes.items()] or [np.zeros(0, int)])]
    else:
        groups = [plane_flat(data.shape, obj, at, offset) for obj in objects]
    flats, befores, afters, ids = [], [], [], []
    next_id = int(data.max()) + 1 if data.size else 1
    for flat in groups:
        if not overwrite:
            flat = flat[data.flat[flat] == 0]
        if flat.size == 0:
            continue
        if np.issubdtype(data.dtype, np.integer) and next_id > np.iinfo(data.dtype).max:
            raise ValueError(f"label id {next_id} does not fit into the labels layer's {data.dtype}")
        flats.append(flat)
        befores.append(data.flat[flat].copy())
        data.flat[flat] = next_id
        afters.append(np.full(flat.size, next_id, data.dtype))
        ids.append(next_id)
        next_id += 1
    if not flats:
        return np.zeros(0, np.int64), np.zeros(0, data.dtype), np.zeros(0, data.dtype), ()
    return np.concatenate(flats), np.concatenate(befores), np.concatenate(afters), tuple(ids)


def revert(data: np.ndarray, commit: Commit) -> int:
    """Undo ``commit`` in place where its pixels still hold what it wrote; returns pixels changed."""
    still = data.flat[commit.flat] == commit.after
    data.flat[commit.flat[still]] = commit.before[still]
    return int(still.sum())


def reapply(data: np.ndarray, commit: Commit) -> int:
    """Redo ``commit`` in place where its pixels still hold their old values; returns pixels changed."""
    still = data.flat[commit.flat] == commit.before
    data.flat[commit.flat[still]] = commit.after[still]
    return int(still.sum())


@dataclass
class History:
    """Undo/redo stacks of commits (newest last)."""

    done: list[Commit] = field(default_factory=list)
    undone: list[Commit] = field(default_factory=list)

    def push(self, commit: Commit) -> None:
        self.done.append(commit)
        self.undone.clear()

    def forget_layer(self, layer: Any) -> None:
        """Drop the entries of a layer that no longer exists."""
        self.done = [c for c in self.done if c.layer is not layer]
        self.undone = [c for c in self.undone if c.layer is not layer]
