"""*Automatic instances* in the view: the panel section follows the session (enabled only with a
model that has an instance decoder, its settings reset to the model's defaults when one loads,
the scope shown for stacks), and each result becomes a labels layer.

The layer carries ``metadata["napari_sam"] = {"role": "instances", "scope", "planes", "model",
"params", "count"}``. A new run replaces the data of the layer the previous run made, but only
while that layer is untouched (still in the viewer, same image, same name, never painted or
given other data); otherwise it makes another layer. A layer the user made, or edited, is
never written.
"""

from __future__ import annotations

from contextlib import contextmanager

from napari.layers import Labels

from ..annotator import Session
from ..engine import instance_defaults
from . import layers as L
from .instances_panel import TIP, InstancesPanel
from .sync import LayerSync

NEEDS = ("Needs a model with an instance decoder: the light-microscopy, EM, histopathology and medical models "
         "(e.g. vit_b_lm, vit_b_em_organelles), or a micro-sam export with its decoder")


class InstancesView:
    def __init__(self, ui: InstancesPanel, session: Session, viewer, sync: LayerSync, links) -> None:
        self.ui, self.session, self.viewer, self.sync, self.links = ui, session, viewer, sync, links
        self.layer: Labels | None = None  # the layer the last run made
        self._made_for = self._name = None
        self._touched = False
        self._writing = 0
        self._token = None  # the model load whose defaults the settings show
        session.events.model.connect(self.refresh)
        session.events.image.connect(self.refresh)
        session.events.instances.connect(self.show)
        ui.run.clicked.connect(lambda _=False: self.run())
        self.refresh()

    def refresh(self) -> None:
        """Button state and tooltip, scope visibility, settings for a newly loaded model."""
        model, planes = self.session.model, self.session.planes
        decoder = model.decoder if model is not None else None
        self.ui.run.setEnabled(decoder is not None)
        if model is None:
            tip = f"Load a model first. {NEEDS}."
        elif decoder is None:
            tip = f"{model.label} has no instance decoder. {NEEDS}; or use Segment everything."
        else:
            tip = TIP
        self.ui.run.setToolTip(tip)
        self.ui.scope.setVisible(planes is not None and planes.through_axis() is not None)
        if model is not None and model.token != self._token:
            self._token = model.token
            self.ui.set_values(instance_defaults(getattr(decoder, "model_name", None)))

    def run(self, scope: str | None = None, **params) -> bool:
        """Start the job with the panel's settings (``params`` override them) on ``scope``
        (None: the panel's choice)."""
        self.session.settings.instances = self.ui.values()
        return self.session.segment_instances(scope or self.ui.chosen_scope(), **params)

    # --- the result layer --------------------------------------------------------------
    def _reusable(self) -> bool:
        layer = self.layer
        return (layer is not None and layer in self.viewer.layers and not self._touched
                and self._made_for is self.sync.image and layer.name == self._name)

    @contextmanager
    def _ours(self):
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1

    def _edited(self, event=None) -> None:
        if not self._writing:
            self._touched = True

    def show(self, name: str, data, info: dict) -> None:
        """Draw a result (the session's ``instances`` event) into our layer or a new one."""
        image = self.sync.image
        if image is None:
            return
        meta = {L.KEY: {"role": "instances", **info}}
        if self._reusable() and self.layer.data.shape == data.shape:
            with self._ours():
                self.layer.data = data
                self.layer.metadata = meta
        else:
            layer = L.make_labels(image, data.shape, name, data=data, role_name="instances")
            layer.metadata = meta
            self.sync.add_result(layer)
            for emitter in (layer.events.paint, layer.events.data):  # painted, or given other data
                self.links.listen(emitter, self._edited)
            self.layer, self._made_for, self._touched = layer, image, False
        self._name = self.layer.name
