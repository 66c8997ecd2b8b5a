"""Session ⇄ napari layers: the prompt layers feed the session, the session's state is drawn
into our layers (no annotation logic here).

- *SAM points* / *SAM boxes*: every finished edit becomes :meth:`Session.set_prompts`;
  Ctrl+click or right-click adds a negative point without leaving add mode.
- The candidate layer and the propagated layer are made once and updated in place.
- Committed labels are written into Labels layers through :class:`LayerLabels`, which paints
  only the changed pixels (napari's ``data_setitem``: a partial texture update).
- Our keys (1/2/3, C, Esc, N, Ctrl+Z, Ctrl+Shift+Z) are bound on our layers; after we add a
  layer the points layer is made active again, so the keys stay where the user is.
"""

from __future__ import annotations

from contextlib import contextmanager
from weakref import WeakKeyDictionary

import numpy as np
from napari.layers import Image, Labels

from ..annotator import ImageSource, Session
from ..annotator.history import plane_index
from ..annotator.source import known_name
from ..io.images import axis_names
from . import layers as L

FINISHED = {"added", "removed", "changed"}  # ignore adding / removing / changing (mid-edit)


class LayerLabels:
    """A napari Labels layer as the session's labels target (see :mod:`napari_sam.annotator.history`)."""

    def __init__(self, layer: Labels) -> None:
        self.layer = layer

    name = property(lambda self: self.layer.name)
    data = property(lambda self: self.layer.data)
    scale = property(lambda self: tuple(self.layer.scale))
    unit = property(lambda self: str(self.layer.units[-1]) if getattr(self.layer, "units", None) else None)

    def write(self, flat: np.ndarray, values: np.ndarray) -> None:
        if flat.size:
            with self.layer.block_history():  # one napari undo step too (Ctrl+Z on the labels layer)
                self.layer.data_setitem(np.unravel_index(flat, self.layer.data.shape), values)


def source_for(layer: Image, viewer) -> ImageSource:
    """A fresh description of ``layer`` for the session (names: the layer's axis labels, else the viewer's)."""
    source = ImageSource(layer.data, rgb=bool(layer.rgb), name=layer.name, multiscale=bool(layer.multiscale))
    refresh_source(source, layer, viewer)
    return source


def refresh_source(source: ImageSource, layer: Image, viewer) -> None:
    source.data, source.rgb, source.name = layer.data, bool(layer.rgb), layer.name
    source.multiscale = bool(layer.multiscale)
    source.contrast_limits = None if layer.rgb else tuple(float(v) for v in layer.contrast_limits)
    own = [known_name(n) for n in layer.axis_labels]
    dims = [known_name(n) for n in list(viewer.dims.axis_labels)[-layer.ndim:]]
    names = [o or d for o, d in zip(own, dims + [""] * (len(own) - len(dims)))]  # the layer's, else the viewer's
    if not any(names):  # a TIFF opened by napari's reader: its ImageJ/OME axes
        axes = axis_names(getattr(layer.source, "path", None) or "")
        letters = [a.lower() for a in axes if a != "S" or not layer.rgb] if axes else []
        names = letters if len(letters) == len(names) else names
    source.axis_names = tuple(names) + (("",) if layer.rgb else ())
    source.scale = tuple(float(s) for s in layer.scale)
    units = getattr(layer, "units", None)
    source.unit = str(units[-1]) if units else None


class LayerSync:
    """Our layers for ``session`` in ``viewer``; ``links`` connects to napari events."""

    def __init__(self, viewer, session: Session, links) -> None:
        self.viewer, self.session, self.links = viewer, session, links
        self.image: Image | None = None
        self.points = self.boxes = self.cand = self.prop = None
        self.targets: WeakKeyDictionary = WeakKeyDictionary()  # Labels layer -> LayerLabels
        self._quiet = 0
        self._click_positive: bool | None = None
        self.on_target = lambda layer: None  # called with each labels layer we make for commits
        ev = session.events
        ev.candidates.connect(self.draw_candidates)
        ev.chosen.connect(self._chosen)
        ev.object_planes.connect(self._object_planes)
        ev.prompts_cleared.connect(self._clear_prompts)
        ev.prompts_restored.connect(self._restore_prompts)
        ev.polarity.connect(self._polarity)
        ev.new_labels.connect(self._new_labels)
        ev.model.connect(self._prepare_propagated)
        session.labels.make_target = self._make_target

    def keys(self) -> dict:
        s = self.session
        return {"1": lambda: s.select(0), "2": lambda: s.select(1), "3": lambda: s.select(2), "C": s.commit,
                "Escape": s.clear, "N": lambda: s.set_polarity(not s.positive),
                "Control-Z": lambda: s.undo(self.exists), "Control-Shift-Z": lambda: s.redo(self.exists)}

    @contextmanager
    def quiet(self):
        """Changes made by us: do not react to their layer events."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _ours(self, layer) -> bool:
        return layer is not None and layer in self.viewer.layers

    def exists(self, target) -> bool:
        return isinstance(target, LayerLabels) and target.layer in self.viewer.layers

    def target_for(self, layer: Labels) -> LayerLabels:
        if layer not in self.targets:
            self.targets[layer] = LayerLabels(layer)
        return self.targets[layer]

    def focus_points(self) -> None:
        """Make the points layer active (in add mode), so our keys work where the user is."""
        if self._ours(self.points) and self.viewer.layers.selection.active is not self.boxes:
            with self.quiet():
                self.viewer.layers.selection.active = self.points
                if self.points.mode != "add":
                    self.points.mode = "add"

    def _insert(self, layer, index: int | None = None) -> None:
        with self.quiet():
            if index is None:
                self.viewer.add_layer(layer)
            else:
                self.viewer.layers.insert(index, layer)
        self.focus_points()

    def _candidate_slot(self) -> int:
        for layer in (self.boxes, self.points):
            if self._ours(layer):
                return self.viewer.layers.index(layer)
        return len(self.viewer.layers)

    # --- prompt layers ---------------------------------------------------------------
    def ensure_layers(self, image: Image | None) -> None:
        """Our prompt and candidate layers for ``image`` (made if missing, placed like it)."""
        self.image = image
        shape = self.session.image.plane_shape if image is not None and self.session.image is not None else None
        if image is None or shape is None:
            return
        with self.quiet():
            if not self._ours(self.boxes):
                self.boxes = L.make_boxes(image, shape)
                self.links.listen(self.boxes.events.data, self._prompt_changed)
                L.bind_keys(self.boxes, self.keys())
                self.viewer.add_layer(self.boxes)
                self.boxes.mode = "add_rectangle"
            if not self._ours(self.points):
                self.points = L.make_points(image, shape)
                self.links.listen(self.points.events.data, self._prompt_changed)
                self.points.mouse_drag_callbacks.insert(0, self._press)
                L.bind_keys(self.points, self.keys())
                self.viewer.add_layer(self.points)
            if not self._ours(self.cand) or self.cand.data.shape != shape:
                if self._ours(self.cand):
                    self.viewer.layers.remove(self.cand)
                self.cand = L.make_candidates(image, shape)
                L.bind_keys(self.cand, self.keys())
                self.viewer.layers.insert(self._candidate_slot(), self.cand)
            for layer in (self.boxes, self.points, self.cand):
                L.place_like(layer, image)
            layers = self.viewer.layers
            below = [lay for lay in (self.cand, self.boxes, self.points) if layers.index(lay) < layers.index(image)]
            for layer in below:  # an image added later: bring our layers above it
                layers.move(layers.index(layer), len(layers))
            self.points.size = L.point_size(shape)
            L.set_next_polarity(self.points, self.session.positive)
        self.focus_points()

    def _press(self, layer, event) -> None:
        if layer.mode == "add":
            negative = event.button == 2 or "Control" in event.modifiers
            self._click_positive = self.session.positive and not negative

    def _prompt_changed(self, event) -> None:
        if self._quiet or str(getattr(event, "action", "changed")) not in FINISHED:
            return
        if event.source is self.points and str(event.action) == "added":
            added = [i for i in event.data_indices if i < 0]  # from Points.add (a click)
            positive = self.session.positive if self._click_positive is None else self._click_positive
            self._click_positive = None
            L.set_polarity_of(self.points, added, positive)
        self.send_prompts()

    def send_prompts(self) -> None:
        pts, pos = (np.zeros((0, 2)), np.ones(0, bool)) if not self._ours(self.points) else \
            (np.asarray(self.points.data)[:, -2:], L.point_polarity(self.points))
        shapes = [np.asarray(s)[:, -2:] for s in self.boxes.data] if self._ours(self.boxes) else []
        kinds = list(self.boxes.shape_type) if self._ours(self.boxes) else []
        self.session.set_prompts(pts, pos, shapes, kinds)

    def _clear_prompts(self) -> None:
        with self.quiet():
            if self._ours(self.points) and len(self.points.data):
                self.points.data = np.zeros((0, 2))
            if self._ours(self.boxes) and len(self.boxes.data):
                self.boxes.data = []

    def _restore_prompts(self, prompts) -> None:
        points, positive, shapes, kinds = prompts
        with self.quiet():
            if self._ours(self.points):
                self.points.data = np.asarray(points, float).reshape(-1, 2)
                for polarity in (True, False):
                    L.set_polarity_of(self.points, [i for i, p in enumerate(positive) if bool(p) == polarity], polarity)
            if self._ours(self.boxes) and len(shapes):
                self.boxes.data = [np.asarray(v, float) for v in shapes]

    def _polarity(self, positive: bool) -> None:
        if self._ours(self.points):
            L.set_next_polarity(self.points, positive)

    # --- candidates and the object on other planes -------------------------------------
    def draw_candidates(self) -> None:
        obj = self.session.object
        if self._ours(self.cand) and self.image is not None:
            with self.quiet():
                L.show_candidates(self.cand, obj.candidates, obj.chosen, self.image)

    def _chosen(self, index: int) -> None:
        if self._ours(self.cand):
            with self.quiet():
                L.choose_candidate(self.cand, self.session.object.candidates, index)

    def _prepare_propagated(self) -> None:
        """A SAM 2 model on a stack: make the layer that shows tracks now, not when tracking starts."""
        model, planes = self.session.model, self.session.planes
        if model is not None and model.kind == "sam2" and planes is not None and planes.through_axis() is not None:
            self._propagated_layer(self.session.image.labels_shape)

    def _propagated_layer(self, shape):
        if not self._ours(self.prop) or self.prop.data.shape != shape:
            if self.image is None:
                return None
            self.prop = L.make_propagated(self.image, shape)
            L.bind_keys(self.prop, self.keys())
            self._insert(self.prop, self._candidate_slot())
        return self.prop

    def _object_planes(self, changed) -> None:
        """Draw the object's masks on other planes (a propagation's, a track's) on the planes
        ``changed`` (labels indices; ``()``: all of them again)."""
        shape = self.session.image.labels_shape if self.session.image is not None else None
        if self.image is None or shape is None:
            return
        ats = tuple(changed) or tuple(self.session.shown_planes())
        if (not self._ours(self.prop) or self.prop.data.shape != shape) and not ats:
            return
        data = self._propagated_layer(shape).data
        if not changed and data.any():
            data[...] = 0
        for at in ats:
            mask = self.session.shown_mask(at)
            data[plane_index(at)] = 0 if mask is None else np.asarray(mask)
        self.prop.refresh(thumbnail=False)

    # --- labels ----------------------------------------------------------------------
    def _make_target(self, shape, name, source) -> LayerLabels:
        layer = L.make_labels(self.image, shape, name)
        self._insert(layer, self.viewer.layers.index(self.image) + 1 if self._ours(self.image) else None)
        self.on_target(layer)
        return self.target_for(layer)

    def _new_labels(self, name: str, data: np.ndarray) -> None:
        if self.image is not None:
            self.add_result(L.make_labels(self.image, data.shape, name, data=data))

    def add_result(self, layer) -> None:
        """A job's result layer, inserted just above the image (our keys stay where the user is)."""
        self._insert(layer, self.viewer.layers.index(self.image) + 1 if self._ours(self.image) else None)

    def layer_removed(self, layer) -> str | None:
        """Forget ``layer`` if it was ours; returns a message for the user, if any."""
        if self._quiet:
            return None
        if layer is self.points or layer is self.boxes:
            name = layer.name
            self.points, self.boxes = (None, self.boxes) if layer is self.points else (self.points, None)
            self.send_prompts()
            return f"'{name}' was removed; press Clear (Esc) to get a new one."
        if layer is self.cand:
            self.cand = None
            self.session.drop_candidates()
        elif layer is self.prop:
            self.prop = None
            if self.session.object.planes:
                self.session.object.planes = {}
            self.session.drop_track()
        elif isinstance(layer, Labels) and layer in self.targets:
            self.session.forget_target(self.targets.pop(layer))
        return None
