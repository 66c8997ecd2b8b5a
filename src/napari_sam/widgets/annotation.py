"""The current object and the committed labels: prompt layers -> decode requests ->
candidate layers -> commits (with undo/redo) -> export.

Prompt data are the image's pixel ``(row, col)`` (the layers share its placement).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
from napari.layers import Labels

from . import layers as L
from . import prompts, work
from .state import Candidate, Commit, CurrentObject, History, paint, reapply, revert
from .ui import NEW_LABELS

FINISHED = {"added", "removed", "changed"}  # ignore adding / removing / changing (mid-edit)


class Annotation:
    """Prompts, candidates and commits of one :class:`SamWidget` (``owner``)."""

    def __init__(self, owner) -> None:
        self.w = owner
        self.viewer = owner.viewer
        self.points = None
        self.boxes = None
        self.cand_layers: dict[int, Labels] = {}
        self.propagated: dict | None = None  # {plane: (H, W) mask} of the current object
        self.prop_layer: Labels | None = None
        self.object = CurrentObject()
        self.history = History()
        self.generation = 0  # bumps on every prompt change: older decode results are stale
        self.positive = True
        self._click_positive: bool | None = None  # polarity of the point being clicked
        self._notes = ""  # problems with the prompts of the latest decode
        self._quiet = 0
        owner.listen(self.viewer.layers.selection.events.active, self._active_changed)

    @contextmanager
    def quiet(self):
        """Changes made by us: do not react to their layer events."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def keys(self) -> dict:
        return {"1": lambda: self.select(0), "2": lambda: self.select(1), "3": lambda: self.select(2),
                "C": self.commit, "Escape": self.clear, "N": lambda: self.set_polarity(not self.positive),
                "Control-Z": self.undo, "Control-Shift-Z": self.redo}

    # --- prompt layers ---------------------------------------------------------------
    def ensure_prompt_layers(self) -> None:
        """Create the prompt layers if missing (placed like the image); make points active."""
        image, shape = self.w.image, self.w.image_shape
        if image is None or shape is None:
            return
        with self.quiet():
            if self.boxes is None or self.boxes not in self.viewer.layers:
                self.boxes = L.make_boxes(image, shape)
                self.w.listen(self.boxes.events.data, self._prompt_changed)
                L.bind_keys(self.boxes, self.keys())
                self.viewer.add_layer(self.boxes)
                self.boxes.mode = "add_rectangle"
            if self.points is None or self.points not in self.viewer.layers:
                self.points = L.make_points(image, shape)
                self.w.listen(self.points.events.data, self._prompt_changed)
                self.points.mouse_drag_callbacks.insert(0, self._press)
                L.bind_keys(self.points, self.keys())
                self.viewer.add_layer(self.points)
            for layer in (self.boxes, self.points):
                L.place_like(layer, image)
            self.points.size = L.point_size(shape)
            L.set_next_polarity(self.points, self.positive)
            if self.viewer.layers.selection.active is not self.boxes:
                self.points.mode = "add"
                self.viewer.layers.selection.active = self.points

    def _press(self, layer, event) -> None:
        """Ctrl+click or right-click adds a negative point without leaving add mode."""
        if layer.mode == "add":
            negative = event.button == 2 or "Control" in event.modifiers
            self._click_positive = self.positive and not negative

    def set_polarity(self, positive: bool) -> None:
        """Polarity of the next points added by a plain click."""
        self.positive = bool(positive)
        if self.points is not None:
            L.set_next_polarity(self.points, self.positive)
        button = self.w.ui.polarity
        button.blockSignals(True)
        button.setChecked(not self.positive)
        button.setText(f"Next points: {'positive' if self.positive else 'negative'} (N)")
        button.blockSignals(False)
        self.w.message(f"Next points are {'positive' if self.positive else 'negative'}.")

    def _prompt_changed(self, event) -> None:
        if self._quiet or str(getattr(event, "action", "changed")) not in FINISHED:
            return
        if event.source is self.points and str(event.action) == "added":
            added = [i for i in event.data_indices if i < 0]  # from Points.add (a click)
            positive = self.positive if self._click_positive is None else self._click_positive
            self._click_positive = None
            L.set_polarity_of(self.points, added, positive)
        self.request_decode()

    def _raw_prompts(self):
        pts = np.zeros((0, 2)) if self.points is None else np.asarray(self.points.data)[:, -2:]
        pos = np.ones(0, bool) if self.points is None else L.point_polarity(self.points)
        shapes = [] if self.boxes is None else [np.asarray(s)[:, -2:] for s in self.boxes.data]
        kinds = [] if self.boxes is None else list(self.boxes.shape_type)
        return pts, pos, shapes, kinds

    # --- decoding --------------------------------------------------------------------
    def request_decode(self) -> None:
        """Decode the current prompts (latest wins); no prompts -> no object."""
        self.generation += 1
        self.w.drop_pending_decode()
        pts, pos, shapes, kinds = self._raw_prompts()
        if not len(pts) and not shapes:
            self.drop_candidates()
            return
        shape = self.w.image_shape
        if shape is None:
            self.w.message("No 2D image chosen: choose an image layer before placing prompts.", warn=True)
            return
        found = prompts.collect(pts, pos, shapes, kinds, shape)
        plan, notes = prompts.plan(found, self.object.mask_input())
        self._notes = "; ".join(found.problems + notes)
        if self._notes:
            self.w.message(self._notes, warn=True)
        if plan is None:
            self.drop_candidates()
            return
        key = self.w.current_key()
        if self.w.model is None:
            self.w.message("No model loaded: press 'Load model' first (your prompts are kept).", warn=True)
        elif self.w.embedding is None or self.w.embedding[0] != key:
            self.w.message("Prompts noted: they are decoded as soon as the embedding is ready.")
        else:
            self.w.submit_decode(work.DecodeRequest(self.generation, key, self.w.planes.volume, self.w.model, plan))

    def decoded(self, request: work.DecodeRequest, candidates: list[Candidate]) -> None:
        if request.generation != self.generation or request.key != self.w.current_key():
            return  # the prompts, image or model changed meanwhile
        self.show(candidates)

    def show(self, candidates: list[Candidate]) -> None:
        self.object.candidates = list(candidates)
        self.object.chosen = candidates[0].index
        image = self.w.image
        with self.quiet():
            active = self.viewer.layers.selection.active
            for index in [i for i in self.cand_layers if self.object.get(i) is None]:
                self._remove(self.cand_layers.pop(index))
            for cand in candidates:
                layer = self.cand_layers.get(cand.index)
                if layer is not None and layer in self.viewer.layers:
                    L.update_candidate(layer, cand, image)
                else:
                    layer = self.cand_layers[cand.index] = L.make_candidate(cand, image)
                    L.bind_keys(layer, self.keys())
                    self.viewer.layers.insert(self._candidate_slot(), layer)
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        self._highlight()
        if len(candidates) > 1:
            listing = ", ".join(f"{c.index + 1}: {c.iou:.2f}" for c in candidates)
            text = f"{len(candidates)} candidates (IoU {listing}); keys 1-3 choose, C commits."
        else:
            what = f"{len(candidates[0].ious)} objects" if candidates[0].ious else "1 mask"
            text = f"{what} (IoU {candidates[0].iou:.2f}); C commits, Esc clears."
        self.w.message(f"{text} Note: {self._notes}." if self._notes else text)

    def _candidate_slot(self) -> int:
        for layer in (self.boxes, self.points):
            if layer is not None and layer in self.viewer.layers:
                return self.viewer.layers.index(layer)
        return len(self.viewer.layers)

    def _remove(self, layer) -> None:
        if layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _highlight(self) -> None:
        for index, layer in self.cand_layers.items():
            L.highlight(layer, index == self.object.chosen)
        for k, button in enumerate(self.w.ui.choose):
            cand = self.object.get(k) if len(self.object.candidates) > 1 else None
            button.setEnabled(cand is not None)
            button.setText(f"{k + 1} · {cand.iou:.2f}" if cand else f"Mask {k + 1}")
            button.setStyleSheet("font-weight: bold" if cand is not None and k == self.object.chosen else "")

    def select(self, index: int) -> bool:
        """Choose candidate ``index`` (0-based rank)."""
        cand = self.object.get(index)
        if cand is None:
            have = len(self.object.candidates)
            self.w.message(f"No candidate {index + 1}: there {'is' if have == 1 else 'are'} {have}.", warn=True)
            return False
        self.object.chosen = index
        self._highlight()
        self.w.message(f"Chose {L.candidate_name(cand)}.")
        return True

    def _active_changed(self, event) -> None:
        layer = event.value
        if self._quiet or layer is None or L.role(layer) != "candidate":
            return
        index = layer.metadata[L.KEY]["index"]
        if self.object.get(index) is not None and index != self.object.chosen:
            self.select(index)
        self.w.defer(self._activate_points)

    def _activate_points(self) -> None:
        if self.points is not None and self.points in self.viewer.layers:
            self.viewer.layers.selection.active = self.points

    # --- object life -----------------------------------------------------------------
    def drop_candidates(self) -> None:
        """Forget the current candidates (and the mask fed back for refinement)."""
        self.object.reset()
        self.propagated = None
        with self.quiet():
            for layer in [*self.cand_layers.values(), self.prop_layer]:
                if layer is not None:
                    self._remove(layer)
        self.cand_layers.clear()
        self.prop_layer = None
        self._highlight()

    def show_propagated(self, planes: dict) -> None:
        """Show the current object propagated through ``planes`` ``{plane: (H, W) mask}``;
        commit writes it through all of them."""
        self.propagated = planes
        with self.quiet():
            if self.prop_layer is not None:
                self._remove(self.prop_layer)
            self.prop_layer = L.make_propagated(self.w.image, self.w.labels_shape, planes,
                                                f"SAM propagated · {len(planes)} planes")
            self.viewer.layers.insert(self._candidate_slot(), self.prop_layer)

    def reset_object(self, clear_prompts: bool) -> None:
        self.generation += 1
        self.w.drop_pending_decode()
        self.drop_candidates()
        if clear_prompts:
            with self.quiet():
                if self.points is not None and len(self.points.data):
                    self.points.data = np.zeros((0, 2))
                if self.boxes is not None and len(self.boxes.data):
                    self.boxes.data = []

    def clear(self) -> None:
        self.reset_object(clear_prompts=True)
        self.ensure_prompt_layers()
        self.w.message("Cleared the current object.")

    def layer_removed(self, layer) -> None:
        if self._quiet:
            return
        if layer is self.points or layer is self.boxes:
            name = layer.name
            if layer is self.points:
                self.points = None
            else:
                self.boxes = None
            self.request_decode()
            self.w.message(f"'{name}' was removed; press Clear (Esc) to get a new one.")
            self.w.warn_soon(f"'{name}' was removed; press Clear (Esc) to get a new one.")
        elif layer is self.prop_layer:
            self.prop_layer, self.propagated = None, None
        elif L.role(layer) == "candidate":
            index = next((i for i, lay in self.cand_layers.items() if lay is layer), None)
            if index is not None:
                del self.cand_layers[index]
                self.object.drop(index)
                self._highlight()
        elif isinstance(layer, Labels) and any(c.layer is layer for c in self.history.done + self.history.undone):
            self.history.forget_layer(layer)
            self.w.message(f"Labels layer '{layer.name}' was removed; its commits can no longer be undone.")

    # --- commits ---------------------------------------------------------------------
    def _target(self) -> Labels | None:
        name = self.w.ui.labels.currentText()
        if name != NEW_LABELS and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if isinstance(layer, Labels) and layer.data.shape == self.w.labels_shape:
                return layer
        return None

    def commit(self) -> bool:
        cand = self.object.chosen_candidate
        if cand is None:
            self.w.message("Nothing to commit: place a point or draw a box, then wait for the mask.", warn=True)
            return False
        target = self._target()
        data = np.zeros(self.w.labels_shape, np.uint32) if target is None else target.data
        if not isinstance(data, np.ndarray):
            self.w.message(f"'{target.name}' is not an in-memory array: choose another labels layer.", warn=True)
            return False
        try:
            where = {"planes": self.propagated} if self.propagated else \
                {"at": self.w.planes.labels_at(self.w.current_key().plane) if self.w.current_key() else (),
                 "offset": cand.offset}
            flat, before, after, ids = paint(data, cand.objects, overwrite=self.w.ui.overwrite.isChecked(), **where)
        except ValueError as exc:
            self.w.message(str(exc), warn=True)
            return False
        if not ids:
            self.w.message("Nothing was painted: the mask is empty or already fully labelled "
                           "(tick 'Overwrite existing labels' to paint over labels).", warn=True)
            return False
        if target is None:
            target = L.make_labels(self.w.image, self.w.labels_shape)
            target.data = data
            with self.quiet():
                self.viewer.layers.insert(self.viewer.layers.index(self.w.image) + 1, target)
            self.w.refresh_labels_choice()
            self.w.ui.labels.setCurrentText(target.name)
        else:
            target.refresh()
        self.history.push(Commit(target, flat, before, after, ids, data.size))
        self.reset_object(clear_prompts=True)
        self.ensure_prompt_layers()
        self.w.message(f"Committed object{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} "
                       f"({flat.size} pixels) to '{target.name}'.")
        return True

    def _step(self, source: list[Commit], dest: list[Commit], apply, verb: str) -> bool:
        if not source:
            self.w.message(f"Nothing to {verb}.")
            return False
        commit = source.pop()
        if commit.layer not in self.viewer.layers:
            self.w.message(f"Cannot {verb}: labels layer '{commit.layer.name}' was removed.", warn=True)
            return False
        data = commit.layer.data
        if not isinstance(data, np.ndarray) or data.size != commit.size:
            self.w.message(f"Cannot {verb}: the data of '{commit.layer.name}' was replaced.", warn=True)
            return False
        changed = apply(data, commit)
        commit.layer.refresh()
        dest.append(commit)
        self.w.message(f"{verb.capitalize()}: object {', '.join(map(str, commit.ids))} ({changed} pixels).")
        return True

    def undo(self) -> bool:
        return self._step(self.history.done, self.history.undone, revert, "undo")

    def redo(self) -> bool:
        return self._step(self.history.undone, self.history.done, reapply, "redo")

    def export(self, path) -> Path | None:
        from ..io import write_labels_tiff

        layer = self._target() or (self.history.done[-1].layer if self.history.done else None)
        if layer is None or layer not in self.viewer.layers or not np.any(np.asarray(layer.data)):
            self.w.message("Nothing to export: commit an object first.", warn=True)
            return None
        units = getattr(layer, "units", None)
        unit = str(units[-1]) if units else None
        data, scale, k = np.asarray(layer.data), tuple(layer.scale), self.w.planes.axes.channel_axis
        merged = k is not None and data.shape == self.w.labels_shape
        if merged:  # labels are spatial: one plane per channel position, merged (largest id)
            data, scale = data.max(axis=k), scale[:k] + scale[k + 1:]
        try:
            out = write_labels_tiff(path, data, scale=scale, unit=None if unit in (None, "pixel") else unit)
        except (OSError, ValueError) as exc:
            self.w.message(f"Export failed: {exc}", warn=True)
            return None
        self.w.message(f"Exported '{layer.name}' to {out}{' without the channel axis' if merged else ''}.")
        return out
