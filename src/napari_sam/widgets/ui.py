"""The widget's controls (qtpy only, no behaviour): choosers, buttons, status line, legend."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
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
class EverythingPanel:
    """*Segment everything*: the button, and its parameters in a section shown by ``toggle``.
    ``points`` 0 means auto (16 per side on a CPU, 32 on a GPU)."""

    run: QPushButton
    toggle: QToolButton
    options: QWidget
    points: QSpinBox
    iou: QDoubleSpinBox
    stability: QDoubleSpinBox
    nms: QDoubleSpinBox
    crops: QSpinBox
    min_area: QSpinBox

    def values(self) -> dict:
        """The parameters as :func:`napari_sam.engine.generate_masks` keywords (points 0: auto)."""
        return {"points_per_side": self.points.value(), "pred_iou_thresh": self.iou.value(),
                "stability_score_thresh": self.stability.value(), "box_nms_thresh": self.nms.value(),
                "crop_n_layers": self.crops.value(), "min_mask_region_area": self.min_area.value()}


def _spin(cls, lo, hi, value, tip: str, step=None):
    box = cls()
    box.setRange(lo, hi)
    if step is not None:
        box.setDecimals(2)
        box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def build_everything(root: QVBoxLayout) -> EverythingPanel:
    """The *Segment everything* row and its collapsible parameter section, added to ``root``."""
    run = QPushButton("Segment everything")
    run.setToolTip("Find all objects on the plane on screen (a grid of point prompts) into a new "
                   "labels layer 'SAM everything'; committed labels are not touched")
    toggle = QToolButton()
    toggle.setText("Options")
    toggle.setCheckable(True)
    toggle.setArrowType(Qt.RightArrow)
    toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
    row = QHBoxLayout()
    row.addWidget(run, 1)
    row.addWidget(toggle)
    options = QWidget()
    form = QFormLayout(options)
    form.setContentsMargins(0, 0, 0, 0)
    points = _spin(QSpinBox, 0, 128, 0, "Grid of points per side (0 = auto: 16 on a CPU, 32 on a GPU; "
                   "the 32x32 grid takes minutes on a CPU)")
    points.setSpecialValueText("auto (16 CPU / 32 GPU)")
    iou = _spin(QDoubleSpinBox, -1.0, 1.0, 0.88, "Keep masks with predicted IoU above this", 0.01)
    stability = _spin(QDoubleSpinBox, 0.0, 1.0, 0.95, "Keep masks at least this stable (0 = off)", 0.01)
    nms = _spin(QDoubleSpinBox, 0.0, 1.0, 0.7, "Drop masks whose box overlaps a better one more "
                "than this (1 = keep duplicates)", 0.05)
    crops = _spin(QSpinBox, 0, 3, 0, "Layers of overlapping crops for small objects (each re-embeds crops: slow)")
    min_area = _spin(QSpinBox, 0, 1_000_000, 0, "Fill holes and remove islands smaller than this (pixels)")
    for label, box in (("Points per side", points), ("Pred. IoU threshold", iou), ("Stability threshold",
                       stability), ("Box NMS threshold", nms), ("Crop layers", crops), ("Min region area", min_area)):
        form.addRow(label, box)
    options.setVisible(False)

    def shown(on: bool) -> None:
        options.setVisible(on)
        toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)

    toggle.toggled.connect(shown)
    root.addLayout(row)
    root.addWidget(options)
    return EverythingPanel(run, toggle, options, points, iou, stability, nms, crops, min_area)


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
    everything: EverythingPanel
    channel_axis: QComboBox
    channel: QComboBox
    through: QComboBox
    open_store: QPushButton


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
    channel_axis, channel, through, store_row = build_stack_rows()
    form.addRow("Channel axis", channel_axis)
    form.addRow("Channel", channel)
    form.addRow("Propagate along", through)
    form.addRow("Embeddings", store_row)
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
    everything = build_everything(root)
    legend = QLabel(LEGEND)
    legend.setWordWrap(True)
    root.addWidget(legend)
    root.addStretch(1)
    return Panel(image, model, device, load, cancel, labels, overwrite, polarity, choose,
                 commit, clear, undo, redo, export, status, propagate, everything,
                 channel_axis, channel, through, store_row)


def build_stack_rows() -> tuple[QComboBox, QComboBox, QComboBox, QPushButton]:
    """Controls for stacks, time series and multichannel images (filled by ``axes.Axes``)."""
    channel_axis, channel, through = QComboBox(), QComboBox(), QComboBox()
    channel_axis.setToolTip("Multichannel images: the leading axis that holds channels ('none': every "
                            "slider is a plane, SAM sees the channel on screen)")
    channel.setToolTip("What SAM segments: one channel, whatever the channel slider shows, or up to three "
                       "channels as red, green, blue (each scaled to its own range)")
    through.setToolTip("The axis that prefetch and 'Propagate through planes' walk (z, time, ...)")
    for combo in (channel_axis, channel, through):
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
        combo.setEnabled(False)
    open_store = QPushButton("Open embedding store…")
    open_store.setToolTip("Reuse embeddings precomputed by 'napari-sam embed' (a .zarr folder) for the image")
    return channel_axis, channel, through, open_store
