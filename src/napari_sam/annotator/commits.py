"""The committed labels of a session: the target they go to, commits with undo/redo, export.

Every operation returns an :class:`Outcome` (what to tell the user) and announces written
pixels with ``on_written(target, flat)``. A commit writes the current object's chosen
candidate on its plane and its masks on other planes, one new id per part object through all
of them, as one history entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .history import (
    ArrayLabels,
    Change,
    Commit,
    History,
    LabelsTarget,
    Piece,
    plan_paint,
    positions,
    redo_change,
    undo_change,
)
from .objects import CurrentObject
from .source import Planes

NEW_TARGET_NAME = "SAM labels"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str
    warn: bool = False
    value: object = None


def array_target(shape: tuple[int, ...], name: str, source) -> LabelsTarget:
    """The default factory of new targets: a uint32 array (placed like the image on export)."""
    scale = tuple(source.scale[-len(shape):]) if source is not None and source.scale is not None else None
    return ArrayLabels(np.zeros(shape, np.uint32), name, scale, getattr(source, "unit", None))


class CommittedLabels:
    """Target, history and the ``make_target(shape, name, source)`` factory used by the first
    commit when no target is chosen (a view makes a layer there)."""

    def __init__(self, on_written: Callable[[LabelsTarget, np.ndarray], None]) -> None:
        self.target: LabelsTarget | None = None
        self.history = History()
        self.overwrite = False
        self.make_target: Callable[..., LabelsTarget] = array_target
        self.on_written = on_written

    def _write(self, target: LabelsTarget, flat: np.ndarray, values: np.ndarray) -> None:
        target.write(flat, values)
        self.on_written(target, flat)

    def commit(self, obj: CurrentObject, planes: Planes | None, source) -> Outcome:
        cand = obj.chosen_candidate
        if cand is None or planes is None or source is None or source.labels_shape is None:
            return Outcome(False, "Nothing to commit: place a point or draw a box, then wait for the mask.", True)
        pieces = [Piece(planes.labels_at(obj.plane), cand.mask, cand.offset)]
        pieces += [Piece(at, mask) for at, mask in obj.planes.items()]
        return self.commit_planned(lambda data: plan_paint(data, pieces, obj.objects, self.overwrite), planes, source,
                                   tuple(p.at for p in pieces), planes.plane_label(obj.plane))

    def data_for(self, source) -> tuple[LabelsTarget | None, np.ndarray | None]:
        """The target commits for ``source`` go to (None: a new one on the first commit) and its data."""
        target, shape = self.target, source.labels_shape
        if target is not None and tuple(np.shape(target.data)) != shape:
            target = None  # chosen for another image
        return target, np.zeros(shape, np.uint32) if target is None else target.data

    def commit_planned(self, plan: Callable[[np.ndarray], Change], planes: Planes, source, ats: tuple,
                       where: str = "") -> Outcome:
        """Commit what ``plan(labels data)`` paints (one history entry) on the planes ``ats``."""
        target, data = self.data_for(source)
        shape = source.labels_shape
        if not isinstance(data, np.ndarray):
            return Outcome(False, f"'{target.name}' is not an in-memory array: choose another labels layer.", True)
        try:
            change = plan(data)
        except ValueError as exc:
            return Outcome(False, str(exc), True)
        if change.empty:
            return Outcome(False, "Nothing was painted: the mask is empty or already fully labelled "
                                  "(tick 'Overwrite existing labels' to paint over labels).", True)
        if target is None:
            target = self.target = self.make_target(shape, NEW_TARGET_NAME, source)
        self._write(target, change.flat, change.after)
        pixels = positions(shape, change.flat, planes.axes.channel_axis)
        self.history.push(Commit(target, change.flat, change.before, change.after, change.ids, data.size, pixels,
                                 ats, planes.axes.channel_axis))
        ids = ", ".join(map(str, change.ids))
        on = f" on {len(ats)} planes" if len(ats) > 1 else (f" at {where}" if where else "")
        return Outcome(True, f"Committed object{'s' if len(change.ids) > 1 else ''} {ids} ({pixels} pixels{on}) "
                             f"to '{target.name}'.")

    def _step(self, source: list[Commit], dest: list[Commit], change, verb: str, exists) -> Outcome:
        if not source:
            return Outcome(False, f"Nothing to {verb}.")
        commit = source.pop()
        target = commit.target
        if not exists(target):
            return Outcome(False, f"Cannot {verb}: labels layer '{target.name}' was removed.", True)
        data = target.data
        if not isinstance(data, np.ndarray) or data.size != commit.size:
            return Outcome(False, f"Cannot {verb}: the data of '{target.name}' was replaced.", True)
        flat, values = change(data, commit)
        self._write(target, flat, values)
        dest.append(commit)
        pixels = commit.pixels if flat.size == commit.flat.size else positions(data.shape, flat, commit.channel_axis)
        return Outcome(True, f"{verb.capitalize()}: object {', '.join(map(str, commit.ids))} ({pixels} pixels).")

    def undo(self, exists: Callable[[object], bool] = lambda t: True) -> Outcome:
        return self._step(self.history.done, self.history.undone, undo_change, "undo", exists)

    def redo(self, exists: Callable[[object], bool] = lambda t: True) -> Outcome:
        return self._step(self.history.undone, self.history.done, redo_change, "redo", exists)

    def forget(self, target: object) -> bool:
        """``target`` is gone: drop its history (True if it had any) and stop writing to it."""
        had = target in self.history.targets()
        self.history.forget_target(target)
        if self.target is target:
            self.target = None
        return had

    def export(self, path, planes: Planes | None, source) -> Outcome:
        from ..io import write_labels_tiff

        target = self.target or (self.history.done[-1].target if self.history.done else None)
        if target is None or not np.any(np.asarray(target.data)):
            return Outcome(False, "Nothing to export: commit an object first.", True)
        unit = target.unit
        data = np.asarray(target.data)
        scale = tuple(target.scale) if target.scale is not None else None
        k = planes.axes.channel_axis if planes is not None else None
        merged = k is not None and source is not None and data.shape == source.labels_shape
        if merged:  # labels are spatial: one plane per channel position, merged (largest id)
            data = data.max(axis=k)
            scale = None if scale is None else scale[:k] + scale[k + 1:]
        try:
            out = write_labels_tiff(path, data, scale=scale, unit=None if unit in (None, "pixel") else unit)
        except (OSError, ValueError) as exc:
            return Outcome(False, f"Export failed: {exc}", True)
        return Outcome(True, f"Exported '{target.name}' to {out}{' without the channel axis' if merged else ''}.",
                       value=Path(out))
