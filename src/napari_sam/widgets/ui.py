"""The widget's controls (qtpy only, no behaviour): choosers, buttons, status line, legend."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from ..weights import REGISTRY

MODEL_FILE = "Checkpoint file (.pth)…"
NEW_LABELS = "New layer: SAM labels"

LEGEND = (
    "<b>Shortcuts</b> (on the SAM layers)<br>"
    "click: add point · <b>N</b>: next points negative/positive · "
    "<b>Ctrl</b>+click or right-click: negative point<br>"
    "<b>1</b>/<b>2</b>/<b>3</b>: choose mask · <b>C</b>: commit · <b>Esc</b>: clear object<br>"
    "<b>Ctrl+Z</b> / <b>Ctrl+Shift+Z</b>: undo / redo commit<br>"
    "Boxes: draw rectangles on <i>SAM boxes</i> (several boxes = several objects)"
)


def available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


@dataclass
class Panel:
    image: QComboBox
    model: QComboBox
    device: QComboBox
    load: QPushButton
    cancel: QPushButton
    labels: QComboBox
    overwrite: QCheckBox
    polarity: QPushButton
    choose: list[QPushButton]
    commit: QPushButton
    clear: QPushButton
    undo: QPushButton
    redo: QPushButton
    export: QPushButton
    status: QLabel
    propagate: QPushButton


def build_panel(parent: QWidget) -> Panel:
    """Create the controls inside ``parent`` (which gets a vertical layout)."""
    root = QVBoxLayout(parent)
    form = QFormLayout()
    image = QComboBox()
    image.setToolTip("Image layer to segment: grayscale or RGB, 2D or nD (plane by plane)")
    model = QComboBox()
    for name in reversed(list(REGISTRY)):  # vit_b, vit_l, vit_h; item data: what to load
        model.addItem(name, name)
    model.addItem(MODEL_FILE, None)
    model.setToolTip("SAM model: an official checkpoint (downloaded once) or a .pth file")
    device = QComboBox()
    device.addItems(available_devices())
    load, cancel = QPushButton("Load model"), QPushButton("Cancel")
    cancel.setEnabled(False)
    model_row = QHBoxLayout()
    for w in (model, device, load):
        model_row.addWidget(w)
    labels = QComboBox()
    labels.setToolTip("Labels layer that committed objects are written into")
    overwrite = QCheckBox("Overwrite existing labels")
    for combo in (image, model, labels):
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    form.addRow("Image", image)
    form.addRow("Model", model_row)
    form.addRow("Labels", labels)
    form.addRow("", overwrite)
    root.addLayout(form)

    status = QLabel("Choose an image and load a model.")
    status.setWordWrap(True)
    status.setObjectName("napari_sam_status")
    status_row = QHBoxLayout()
    status_row.addWidget(status, 1)
    status_row.addWidget(cancel)
    root.addLayout(status_row)

    polarity = QPushButton("Next points: positive (N)")
    polarity.setCheckable(True)
    choose = [QPushButton(f"Mask {k}") for k in (1, 2, 3)]
    commit, clear = QPushButton("Commit (C)"), QPushButton("Clear (Esc)")
    undo, redo = QPushButton("Undo"), QPushButton("Redo")
    export = QPushButton("Export labels…")
    propagate = QPushButton("Propagate through planes")
    propagate.setToolTip("Stacks and time series: segment the current object on the next and previous "
                         "planes too; Commit then writes it through all of them")
    grid = QGridLayout()
    for k, button in enumerate(choose):
        button.setEnabled(False)
        button.setToolTip(f"Choose candidate mask {k + 1} (key {k + 1})")
        grid.addWidget(button, 0, k)
    grid.addWidget(commit, 1, 0)
    grid.addWidget(clear, 1, 1)
    grid.addWidget(undo, 2, 0)
    grid.addWidget(redo, 2, 1)
    grid.addWidget(propagate, 3, 0, 1, 2)
    root.addWidget(polarity)
    root.addLayout(grid)
    root.addWidget(export)
    legend = QLabel(LEGEND)
    legend.setWordWrap(True)
    root.addWidget(legend)
    root.addStretch(1)
    return Panel(image, model, device, load, cancel, labels, overwrite, polarity, choose,
                 commit, clear, undo, redo, export, status, propagate)
