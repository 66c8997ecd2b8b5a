"""The *Automatic instances* section of the panel (qtpy only, no behaviour): the button, the
scope (current plane or whole stack; shown for stacks only) and the post-processing settings
of :func:`napari_sam.engine.segment_instances` in a collapsible form."""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QPushButton, QSpinBox, QToolButton, QVBoxLayout, QWidget

from ..engine import instance_defaults
from .sections import collapsible

# name: (label, low, high, step or None for integers, tooltip)
SETTINGS = {
    "foreground_threshold": ("Foreground >", 0.0, 1.0, 0.05,
                             "Pixels whose foreground probability exceeds this belong to objects"),
    "center_distance_threshold": ("Centre distance <", 0.0, 1.0, 0.05,
                                  "Seeds: pixels closer to an object's centre than this (lower: fewer, "
                                  "better separated objects)"),
    "boundary_distance_threshold": ("Boundary distance <", 0.0, 1.0, 0.05,
                                    "Seeds: pixels farther from the object's boundary than this (lower: "
                                    "seeds only deep inside objects)"),
    "foreground_smoothing": ("Foreground smoothing", 0.0, 10.0, 0.1,
                             "Gaussian sigma (pixels) applied to the foreground map; 0: none"),
    "distance_smoothing": ("Distance smoothing", 0.0, 10.0, 0.1,
                           "Gaussian sigma (pixels) applied to both distance maps; 0: none"),
    "min_size": ("Minimum size (px)", 0, 10_000_000, None, "Objects with fewer pixels are dropped"),
}
SCOPES = (("current plane", "plane"), ("whole stack", "stack"))
TIP = ("Find every object (cells, nuclei, organelles...) with the model's instance decoder, on the plane on "
       "screen or the whole stack (merged across planes), into a new labels layer 'SAM instances'; "
       "committed labels are not touched")


@dataclass
class InstancesPanel:
    run: QPushButton
    scope: QComboBox
    toggle: QToolButton
    options: QWidget
    boxes: dict

    def values(self) -> dict:
        """The settings as :func:`napari_sam.engine.segment_instances` keywords."""
        return {name: box.value() for name, box in self.boxes.items()}

    def set_values(self, params: dict) -> None:
        for name, value in params.items():
            if name in self.boxes:
                self.boxes[name].setValue(value)

    def chosen_scope(self) -> str:
        """``"plane"`` or ``"stack"`` (the plane for 2D images, where the choice is hidden)."""
        return "plane" if self.scope.isHidden() else self.scope.currentData()


def build_instances(root: QVBoxLayout) -> InstancesPanel:
    """The *Automatic instances* row and its collapsible settings, added to ``root``."""
    run = QPushButton("Automatic instances")
    run.setToolTip(TIP)
    run.setEnabled(False)
    scope = QComboBox()
    for text, data in SCOPES:
        scope.addItem(text, data)
    scope.setToolTip("Segment the plane on screen, or every plane along the stack axis (objects are then "
                     "joined across planes by overlap)")
    scope.setVisible(False)
    toggle, options, form = collapsible(root, run, scope)
    boxes = {}
    defaults = instance_defaults(None)
    for name, (label, low, high, step, tip) in SETTINGS.items():
        box = QSpinBox() if step is None else QDoubleSpinBox()
        box.setRange(low, high)
        if step is not None:
            box.setDecimals(2)
            box.setSingleStep(step)
        box.setValue(defaults[name])
        box.setToolTip(tip + " (defaults: the model's, as micro-sam sets them)")
        form.addRow(label, box)
        boxes[name] = box
    return InstancesPanel(run, scope, toggle, options, boxes)
