"""The panel's choosers ⇄ the viewer and the session: which image (and where its sliders are),
which labels layer commits go to, which model and device, which axes (no annotation logic).

An image layer is described to the session by an :class:`~napari_sam.annotator.ImageSource`
kept per layer (its identity is the layer's); data changes of the layer become
:meth:`Session.image_changed`, slider moves :meth:`Session.set_position`.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import numpy as np
from napari.layers import Image, Labels

from ..annotator import RGB, Session
from . import layers as L
from .model_list import add_file, describe
from .sync import LayerSync, refresh_source, source_for
from .ui import NEW_LABELS, Panel


def _fill(combo, items: list[tuple[str, object]], current) -> None:
    combo.blockSignals(True)
    combo.clear()
    for text, data in items:
        combo.addItem(text, data)
    datas = [d for _, d in items]
    if current in datas:
        combo.setCurrentIndex(datas.index(current))
    combo.setEnabled(len(items) > 1)
    combo.blockSignals(False)


class Choosers:
    def __init__(self, ui: Panel, viewer, session: Session, sync: LayerSync, links) -> None:
        self.ui, self.viewer, self.session, self.sync, self.links = ui, viewer, session, sync, links
        self.layer: Image | None = None  # the image layer chosen
        self.sources: WeakKeyDictionary = WeakKeyDictionary()  # image layer -> ImageSource
        self.labels_pick: str | None = None  # labels layer chosen by the user (or last created)
        ui.image.currentIndexChanged.connect(lambda _: self.image_picked())
        ui.labels.currentTextChanged.connect(self._labels_picked)
        ui.channel_axis.currentIndexChanged.connect(lambda _: self._axes_picked(channel=False))
        ui.channel.currentIndexChanged.connect(lambda _: self._axes_picked(channel=True))
        ui.through.currentIndexChanged.connect(lambda _: self._through_picked())
        ui.model.currentIndexChanged.connect(lambda _: ui.model_info.setText(describe(ui.model.currentData())))
        ui.model_info.setText(describe(ui.model.currentData()))
        session.events.image.connect(self.refresh_axes)
        links.listen(viewer.dims.events.current_step, self.dims_changed)

    # --- the image -------------------------------------------------------------------
    def refresh(self, event=None) -> None:
        """Fill the image and labels choosers from the layers (following renames)."""
        for layer in self.viewer.layers:
            if isinstance(layer, (Image, Labels)) and L.role(layer) in (None, "labels") \
                    and not self.links.listens_to(layer):
                self.links.listen(layer.events.name, lambda _: self.links.defer(self.refresh))
        images = [lay for lay in self.viewer.layers if isinstance(lay, Image)]
        current = self.layer if self.layer in images else None
        _fill(self.ui.image, [(lay.name, lay.name) for lay in images], None if current is None else current.name)
        self.ui.image.setEnabled(True)
        if current is not None and self.sources.get(current) is not None:
            self.sources[current].name = current.name
        self.refresh_labels()
        if current is None:
            self.image_picked()

    def image_picked(self) -> None:
        name = self.ui.image.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        self.choose(layer if isinstance(layer, Image) else None)

    def choose(self, layer: Image | None) -> None:
        """Segment ``layer`` from now on."""
        if layer is self.layer:
            return
        if self.layer is not None:
            self.links.unlisten(self.layer.events.data, self._data_changed)
            self.links.unlisten(self.layer.events.contrast_limits, self._limits_changed)
        self.layer = layer
        source = None
        if layer is not None:
            source = self.sources.get(layer)
            if source is None:
                source = self.sources[layer] = source_for(layer, self.viewer)
            else:
                refresh_source(source, layer, self.viewer)
            self.links.listen(layer.events.data, self._data_changed)
            self.links.listen(layer.events.contrast_limits, self._limits_changed)
            if self.ui.image.currentText() != layer.name:
                self.ui.image.blockSignals(True)
                self.ui.image.setCurrentText(layer.name)
                self.ui.image.blockSignals(False)
        self.session.set_image(source, self.position(source))
        self.sync.ensure_layers(layer)
        self.dims_changed()
        self.refresh_labels()

    def _data_changed(self, event=None) -> None:
        if self.layer is not None:
            refresh_source(self.sources[self.layer], self.layer, self.viewer)
            self.session.image_changed()
            self.sync.ensure_layers(self.layer)
            self.refresh_labels()

    def _limits_changed(self, event=None) -> None:  # used by the next embedding (not re-embedded)
        source = self.sources.get(self.layer) if self.layer is not None else None
        if source is not None and not self.layer.rgb:
            source.contrast_limits = tuple(float(v) for v in self.layer.contrast_limits)

    def position(self, source=None) -> tuple[int, ...]:
        """Leading index of the image that the viewer shows (``()`` for 2D images)."""
        source = source or self.session.image
        lead = source.lead_shape if source is not None and self.layer is not None else ()
        if not lead:
            return ()
        point = np.asarray(self.viewer.dims.point, float)
        data = np.asarray(self.layer.world_to_data(point[-self.layer.ndim:]), float)
        return tuple(int(i) for i in np.clip(np.round(data[: len(lead)]).astype(int), 0, np.array(lead) - 1))

    def dims_changed(self, event=None) -> None:
        if self.layer is not None:
            self.session.set_position(self.position())

    # --- axes ------------------------------------------------------------------------
    def refresh_axes(self) -> None:
        ui, planes = self.ui, self.session.planes
        lead = planes.lead if planes is not None else ()
        ui.stack_rows.setVisible(bool(lead))
        axes = self.session.axes
        channels = []
        if planes is not None and axes.channel_axis is not None:
            n = lead[axes.channel_axis]
            channels = [(f"channel {c}", c) for c in range(n)]
            if n >= 2 and not planes.source.rgb:
                channels.append((f"RGB: channels 0-{min(3, n) - 1}", RGB))
        through = [(planes.axis_label(a), a) for a in planes.through_choices()] if planes is not None else []
        _fill(ui.channel_axis, [("none", None)] + [(planes.axis_label(a), a) for a in range(len(lead))],
              axes.channel_axis)
        _fill(ui.channel, channels, axes.channel)
        _fill(ui.through, through, planes.through_image_axis() if planes is not None else None)

    def _axes_picked(self, channel: bool) -> None:
        axis = self.ui.channel_axis.currentData()
        value = self.ui.channel.currentData() if channel and axis == self.session.axes.channel_axis else 0
        self._set_axes(channel_axis=axis, channel=0 if value is None else value)

    def _through_picked(self) -> None:
        self._set_axes(through=self.ui.through.currentData())

    def _set_axes(self, **axes) -> None:
        try:
            self.session.set_axes(**axes)
        except ValueError as exc:
            self.session.message(str(exc), warn=True)
            self.refresh_axes()

    # --- labels target ---------------------------------------------------------------
    def refresh_labels(self) -> None:
        source = self.session.image
        shape = source.labels_shape if source is not None else None
        layers = [lay for lay in self.viewer.layers if isinstance(lay, Labels)
                  and L.role(lay) in (None, "labels") and shape is not None and lay.data.shape == shape]
        names = [lay.name for lay in layers]
        ours = [lay.name for lay in layers if L.role(lay) == "labels"]
        pick = self.labels_pick
        if pick not in names and pick != NEW_LABELS:  # default: our labels layer of this image
            pick = ours[-1] if ours else NEW_LABELS
        _fill(self.ui.labels, [(n, n) for n in [NEW_LABELS, *names]], pick)
        self.ui.labels.setEnabled(True)
        self._apply_target(pick)

    def _labels_picked(self, text: str) -> None:
        self.labels_pick = text
        self._apply_target(text)

    def _apply_target(self, name: str) -> None:
        layer = self.viewer.layers[name] if name != NEW_LABELS and name in self.viewer.layers else None
        self.session.set_target(self.sync.target_for(layer) if isinstance(layer, Labels) else None)

    def target_created(self, layer: Labels) -> None:
        """Our new labels layer is the target from now on (and shown in the chooser)."""
        self.labels_pick = layer.name
        self.refresh_labels()

    # --- model -----------------------------------------------------------------------
    def source_choice(self) -> tuple[str, str]:
        return self.ui.model.currentData() or self.ui.model.currentText(), self.ui.device.currentText()

    def show_model(self, model: str, device: str) -> None:
        """Make the model and device choosers show what is loaded."""
        combo = self.ui.model
        combo.setCurrentIndex(combo.findData(model) if combo.findData(model) >= 0 else add_file(combo, model))
        if self.ui.device.findText(device) >= 0:
            self.ui.device.setCurrentIndex(self.ui.device.findText(device))

