"""The session's current object and committed labels: prompts, decoding, candidates, commits,
undo/redo, export (a part of :class:`~napari_sam.annotator.session.Session`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import prompts as P
from . import tasks
from .executor import Task
from .objects import Candidate


class ObjectCommands:
    """Mixed into :class:`~napari_sam.annotator.session.Session` (its state and events)."""

    def set_polarity(self, positive: bool) -> None:
        """Polarity of the next points added by a plain click."""
        self.positive = bool(positive)
        self.events.polarity.emit(self.positive)
        self.message(f"Next points are {'positive' if self.positive else 'negative'}.")

    def set_prompts(self, points=None, positive=None, shapes=(), kinds=()) -> None:
        """The current object's prompts: ``points (N, 2)`` with ``positive (N,)`` bool, and
        ``shapes`` (vertex arrays, e.g. rectangles) with their ``kinds``; decoded at once."""
        pts = np.zeros((0, 2)) if points is None else np.asarray(points, float).reshape(-1, 2)
        pos = np.ones(len(pts), bool) if positive is None else np.asarray(positive, bool).reshape(-1)
        self._prompts = (pts, pos, [np.asarray(s, float) for s in shapes], list(kinds))
        self.request_decode()

    def request_decode(self) -> None:
        """Decode the current prompts (latest wins); no prompts: no object."""
        self.object.generation += 1
        self.slots.drop_waiting("decode")
        pts, pos, shapes, kinds = self._prompts
        if not len(pts) and not shapes:
            self.drop_candidates()
            return
        shape = self.image.plane_shape if self.image is not None else None
        if shape is None:
            self.message("No 2D image chosen: choose an image layer before placing prompts.", warn=True)
            return
        found = P.collect(pts, pos, shapes, kinds, shape)
        plan, notes = P.plan(found, self.object.mask_input())
        self._notes = "; ".join(found.problems + notes)
        if self._notes:
            self.message(self._notes, warn=True)
        if plan is None:
            self.drop_candidates()
            return
        key = self.current_key()
        if self.model is None:
            self.message("No model loaded: press 'Load model' first (your prompts are kept).", warn=True)
        elif self.embedding is None or self.embedding[0] != key:
            self.message("Prompts noted: they are decoded as soon as the embedding is ready.")
        else:
            request = tasks.DecodeRequest(self.object.generation, key, self.volume, self.model, plan)
            task = Task("decoding", request, tasks.decode(request), urgent=True)
            task.cleanups.append(self.urgent.hold())
            self.slots.submit_latest("decode", task, self._decoded, self._decode_failed)

    def _decoded(self, task: Task, candidates: list[Candidate]) -> None:
        request = task.key
        if request.generation != self.object.generation or request.key != self.current_key():
            return  # the prompts, plane, image or model changed meanwhile
        self.show(candidates, request.key.plane)

    def _decode_failed(self, task: Task, exc: BaseException) -> None:
        if task.key.generation == self.object.generation:
            self.message(f"decoding failed: {exc}", warn=True)

    def show(self, candidates: list[Candidate], plane: tuple[int, ...] | None = None) -> None:
        obj = self.object
        had_planes = bool(obj.planes)
        obj.candidates, obj.chosen, obj.planes = list(candidates), candidates[0].index, {}
        obj.plane = self.plane if plane is None else tuple(plane)
        self.events.candidates.emit()
        if had_planes:
            self.events.object_planes.emit(())
        if len(candidates) > 1:
            listing = ", ".join(f"{c.index + 1}: {c.iou:.2f}" for c in candidates)
            text = f"{len(candidates)} candidates (IoU {listing}); keys 1-3 choose, C commits."
        else:
            what = f"{len(candidates[0].ious)} objects" if candidates[0].ious else "1 mask"
            text = f"{what} (IoU {candidates[0].iou:.2f}); C commits, Esc clears."
        self.message(f"{text} Note: {self._notes}." if self._notes else text)

    def select(self, index: int) -> bool:
        """Choose candidate ``index`` (0-based rank)."""
        cand = self.object.get(index)
        if cand is None:
            have = len(self.object.candidates)
            self.message(f"No candidate {index + 1}: there {'is' if have == 1 else 'are'} {have}.", warn=True)
            return False
        if index != self.object.chosen and self.object.planes:  # they followed the other candidate
            self.object.planes = {}
            self.events.object_planes.emit(())
        self.object.chosen = index
        self.events.chosen.emit(index)
        self.message(f"Chose {cand.name}.")
        return True

    def drop_candidate(self, index: int) -> None:
        """Forget candidate ``index`` (the view lost it)."""
        self.object.drop(index)
        self.events.candidates.emit()

    # --- the object ------------------------------------------------------------------
    def drop_candidates(self) -> None:
        """Forget the current candidates and the object's masks (and the mask fed back)."""
        had = bool(self.object.candidates or self.object.planes)
        self.object.reset()
        if had:
            self.events.candidates.emit()
            self.events.object_planes.emit(())

    def reset_object(self, clear_prompts: bool) -> None:
        self.object.generation += 1
        self.slots.drop_waiting("decode")
        self.drop_candidates()
        if clear_prompts:
            self._prompts = (np.zeros((0, 2)), np.ones(0, bool), [], [])
            self.events.prompts_cleared.emit()

    def clear(self) -> None:
        """Drop the current object's prompts and candidates."""
        self.reset_object(clear_prompts=True)
        self.message("Cleared the current object.")

    # --- committed labels ------------------------------------------------------------
    def set_target(self, target) -> None:
        """Commit into ``target`` (a :class:`~.history.LabelsTarget`; None: a new one on commit)."""
        self.labels.target = target

    def commit(self) -> bool:
        """Write the chosen candidate (and the object's masks on other planes) with new ids."""
        if not self._say(self.labels.commit(self.object, self.planes, self.image)):
            return False
        self.reset_object(clear_prompts=True)
        return True

    def undo(self, exists=lambda target: True) -> bool:
        return self._say(self.labels.undo(exists))

    def redo(self, exists=lambda target: True) -> bool:
        return self._say(self.labels.redo(exists))

    def forget_target(self, target) -> None:
        if self.labels.forget(target):
            self.message(f"Labels layer '{target.name}' was removed; its commits can no longer be undone.")

    def export(self, path) -> Path | None:
        outcome = self.labels.export(path, self.planes, self.image)
        self._say(outcome)
        return outcome.value
