"""Committed labels: where they are written, what a commit changed, undo and redo. Pure NumPy.

Labels are an integer array of the image's labels shape. The session writes through a
:class:`LabelsTarget` (``write(flat, values)``), so a view can refresh only what changed (the
napari view writes into its Labels layer); :class:`ArrayLabels` is a plain array. A commit
records flat indices, values before and after, and the ids it gave; it may span many planes
(an object propagated or tracked through a stack is one commit, one undo step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class LabelsTarget(Protocol):
    """Where committed labels go: ``data`` (read), ``name``, ``write``; ``scale``/``unit`` for export."""

    name: str
    data: np.ndarray
    scale: tuple[float, ...] | None
    unit: str | None

    def write(self, flat: np.ndarray, values: np.ndarray) -> None:
        """Set ``data.flat[flat] = values``."""


@dataclass(eq=False)
class ArrayLabels:
    """A labels target that is just an array."""

    data: np.ndarray
    name: str = "SAM labels"
    scale: tuple[float, ...] | None = None
    unit: str | None = None

    def write(self, flat: np.ndarray, values: np.ndarray) -> None:
        self.data.flat[flat] = values


@dataclass(frozen=True)
class Piece:
    """An id mask ``(h, w)`` on the plane with labels index ``at`` (``None`` entries: every index
    of that axis, e.g. a channel axis), its corner at ``offset`` ``(row, col)``."""

    at: tuple
    mask: np.ndarray
    offset: tuple[int, int] = (0, 0)


def plane_index(at: tuple) -> tuple:
    """NumPy index of plane ``at`` (leading indices; ``None``: every index of that axis)."""
    return tuple(slice(None) if i is None else i for i in at)


def plane_flat(shape: tuple[int, ...], mask: np.ndarray, at: tuple = (),
               offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Flat indices into an array of ``shape`` of the True pixels of a 2D ``mask`` that lies
    on plane ``at`` with its corner at ``offset`` ``(row, col)``."""
    rr, cc = np.nonzero(mask)
    if not rr.size:
        return np.zeros(0, np.int64)
    lead = [np.arange(n) if i is None else np.array([i]) for i, n in zip(at, shape)]
    combos = np.stack(np.meshgrid(*lead, indexing="ij"), -1).reshape(-1, len(at)) if at else np.zeros((1, 0), int)
    idx = tuple(np.repeat(combos[:, j], rr.size) for j in range(len(at)))
    idx += (np.tile(rr + offset[0], len(combos)), np.tile(cc + offset[1], len(combos)))
    return np.ravel_multi_index(idx, shape)


@dataclass(frozen=True)
class Change:
    """Pixels to write: flat indices, values before and after, the new ids."""

    flat: np.ndarray
    before: np.ndarray
    after: np.ndarray
    ids: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return self.flat.size == 0


def plan_paint(data: np.ndarray, pieces: list[Piece], objects: int = 1, overwrite: bool = False) -> Change:
    """What painting ``pieces`` into ``data`` changes (``data`` is not written): object ``k`` of
    every piece gets the same new id, the next free ones (max+1, ...) in object order. Existing
    labels are kept unless ``overwrite``; an object that would paint nothing gets no id. Raises
    ValueError when ``data``'s dtype cannot hold an id."""
    flats, afters, ids = [], [], []
    next_id = int(data.max()) + 1 if data.size else 1
    taken = np.zeros(0, np.int64)
    for k in range(1, objects + 1):
        parts = [plane_flat(data.shape, p.mask == k if objects > 1 else p.mask > 0, p.at, p.offset) for p in pieces]
        flat = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts or [np.zeros(0, np.int64)]))
        if not overwrite:
            flat = flat[data.flat[flat] == 0]
        if taken.size:
            flat = np.setdiff1d(flat, taken, assume_unique=True)
        if flat.size == 0:
            continue
        if np.issubdtype(data.dtype, np.integer) and next_id > np.iinfo(data.dtype).max:
            raise ValueError(f"label id {next_id} does not fit into the labels' {data.dtype}")
        flats.append(flat)
        afters.append(np.full(flat.size, next_id, data.dtype))
        ids.append(next_id)
        taken = np.concatenate([taken, flat])
        next_id += 1
    if not flats:
        return Change(np.zeros(0, np.int64), np.zeros(0, data.dtype), np.zeros(0, data.dtype), ())
    flat = np.concatenate(flats)
    return Change(flat, data.flat[flat].copy(), np.concatenate(afters), tuple(ids))


def paint(data: np.ndarray, objects: list[np.ndarray], overwrite: bool = False, at: tuple = (),
          offset: tuple[int, int] = (0, 0), planes: dict[tuple, np.ndarray] | None = None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Write boolean 2D ``objects`` (one new id each) on plane ``at`` into ``data`` in place, or
    with ``planes`` ``{at: mask}`` one object through several planes; returns ``(flat, before,
    after, ids)`` (see :func:`plan_paint`)."""
    if planes is not None:
        pieces, n = [Piece(p, np.asarray(m) > 0) for p, m in planes.items()], 1
    else:
        merged = np.zeros(objects[0].shape, np.int32) if objects else np.zeros((0, 0), np.int32)
        for k, obj in enumerate(objects, 1):
            merged[obj & (merged == 0)] = k
        pieces, n = [Piece(tuple(at), merged, offset)], len(objects)
    change = plan_paint(data, pieces, n, overwrite)
    data.flat[change.flat] = change.after
    return change.flat, change.before, change.after, change.ids


@dataclass(frozen=True)
class Commit:
    """Pixels written by one commit into ``target`` (an opaque handle: a :class:`LabelsTarget`)
    of ``size`` pixels: flat indices, values before and after, new ids; ``pixels`` counts the
    label image's positions painted (channel copies counted once), ``planes`` the planes."""

    target: object
    flat: np.ndarray
    before: np.ndarray
    after: np.ndarray
    ids: tuple[int, ...]
    size: int = -1
    pixels: int = -1
    planes: tuple = ()
    channel_axis: int | None = None  # of the labels, for counting positions

    @property
    def layer(self) -> object:  # the name of issue 3's widget
        return self.target


def undo_change(data: np.ndarray, commit: Commit) -> tuple[np.ndarray, np.ndarray]:
    """``(flat, values)`` undoing ``commit`` where its pixels still hold what it wrote."""
    still = data.flat[commit.flat] == commit.after
    return commit.flat[still], commit.before[still]


def redo_change(data: np.ndarray, commit: Commit) -> tuple[np.ndarray, np.ndarray]:
    """``(flat, values)`` redoing ``commit`` where its pixels still hold their old values."""
    still = data.flat[commit.flat] == commit.before
    return commit.flat[still], commit.after[still]


def revert(data: np.ndarray, commit: Commit) -> int:
    """Undo ``commit`` in place where its pixels still hold what it wrote; returns pixels changed."""
    flat, values = undo_change(data, commit)
    data.flat[flat] = values
    return int(flat.size)


def reapply(data: np.ndarray, commit: Commit) -> int:
    """Redo ``commit`` in place where its pixels still hold their old values; returns pixels changed."""
    flat, values = redo_change(data, commit)
    data.flat[flat] = values
    return int(flat.size)


def positions(shape: tuple[int, ...], flat: np.ndarray, channel_axis: int | None) -> int:
    """How many label-image positions ``flat`` (distinct indices) covers, channel copies once."""
    if channel_axis is None or not flat.size:
        return int(flat.size)  # commits hold every index once
    coords = list(np.unravel_index(flat, shape))
    del coords[channel_axis]
    rest = shape[:channel_axis] + shape[channel_axis + 1:]
    return int(np.unique(np.ravel_multi_index(tuple(coords), rest)).size)


@dataclass
class History:
    """Undo/redo stacks of commits (newest last)."""

    done: list[Commit] = field(default_factory=list)
    undone: list[Commit] = field(default_factory=list)

    def push(self, commit: Commit) -> None:
        self.done.append(commit)
        self.undone.clear()

    def forget_layer(self, target: object) -> None:
        """Drop the entries of a target that no longer exists."""
        self.done = [c for c in self.done if c.target is not target]
        self.undone = [c for c in self.undone if c.target is not target]

    forget_target = forget_layer

    def targets(self) -> list[object]:
        return [c.target for c in self.done + self.undone]
