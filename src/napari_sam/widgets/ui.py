"""The widget's controls (qtpy only, no behaviour): choosers, buttons, status line, legend."""

from __future__ import annotations

from dataclasses import dataclass, fields

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtGui import QFontMetrics
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..engine import GeneratorSettings, available_devices
from .instances_panel import InstancesPanel, build_instances
from .model_list import MODEL_FILE, fill_models
from .sections import collapsible

__all__ = ["MODEL_FILE", "NEW_LABELS", "EverythingPanel", "InstancesPanel", "Panel", "ScrollingPanel", "StatusLine",
           "build_panel"]
NEW_LABELS = "New layer: SAM labels"

LEGEND = (
    "<b>Shortcuts</b> (on the SAM layers)<br>"
    "click: add point · <b>N</b>: next points negative/positive · "
    "<b>Ctrl</b>+click or right-click: negative point<br>"
    "<b>1</b>/<b>2</b>/<b>3</b>: choose mask · <b>C</b>: commit · <b>Esc</b>: clear object<br>"
    "<b>Ctrl+Z</b> / <b>Ctrl+Shift+Z</b>: undo / redo commit<br>"
    "Boxes: draw rectangles on <i>SAM boxes</i> (several boxes = several objects)"
)


class StatusLine(QLabel):
    """A status area of fixed height (two lines): longer texts are elided, the full text is
    the tooltip (and :meth:`full_text`), so nothing around it moves."""

    LINES = 2

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self._text = ""
        self.setWordWrap(False)
        self.setTextFormat(Qt.PlainText)
        self.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self._fit_height()
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)  # new texts never relayout the panel
        self.setMinimumWidth(40)
        self.setText(text)

    def _fit_height(self) -> None:
        self.setFixedHeight(self.LINES * QFontMetrics(self.font()).lineSpacing() + 6)

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        super().changeEvent(event)
        if event.type() in (QEvent.FontChange, QEvent.StyleChange):  # napari's stylesheet sets its own font
            self._fit_height()
            self._fit()

    def full_text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 (Qt name)
        self._text = str(text)
        self.setToolTip(self._text)
        self._fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        metrics, width = QFontMetrics(self.font()), max(20, self.width() - 4)
        words, lines = self._text.split(" "), []
        while words and len(lines) < self.LINES - 1:
            line = words.pop(0)
            while words and metrics.horizontalAdvance(f"{line} {words[0]}") <= width:
                line = f"{line} {words.pop(0)}"
            lines.append(line)
        if words:
            lines.append(metrics.elidedText(" ".join(words), Qt.ElideRight, width))
        super().setText("\n".join(lines))


class ScrollingPanel(QScrollArea):
    """Holds the panel and scrolls it vertically when the dock is shorter than the panel (a
    small screen, docks stacked): the rows keep their height instead of being drawn over each
    other. Never takes the keyboard focus (the canvas keeps it); as wide as the panel needs,
    as tall as it asks for, and the dock hears when that changes. It becomes the only child of
    ``parent``'s (new) vertical layout."""

    def __init__(self, inner: QWidget, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWidget(inner)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setFocusPolicy(Qt.NoFocus)
        outer = QVBoxLayout(parent)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self)
        inner.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
        if watched is self.widget() and event.type() == QEvent.LayoutRequest:
            self.updateGeometry()  # the panel's needs changed (fuller choosers, a section shown): tell the dock
        return super().eventFilter(watched, event)

    def _bar(self) -> int:
        return self.verticalScrollBar().sizeHint().width()

    def sizeHint(self):  # noqa: N802 (Qt name)
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self._bar(), hint.height())

    def minimumSizeHint(self):  # noqa: N802 (Qt name)
        hint = self.widget().minimumSizeHint()
        return QSize(hint.width() + self._bar(), min(hint.height(), 120))


@dataclass
class EverythingPanel:
    """*Segment everything*: the button, and a spin box per panel setting of
    :class:`~napari_sam.engine.GeneratorSettings` in a section shown by ``toggle``.
    Points per side 0 means auto (16 per side on a CPU, 32 on a GPU)."""

    run: QPushButton
    toggle: QToolButton
    options: QWidget
    boxes: dict

    points = property(lambda self: self.boxes["points_per_side"])
    iou = property(lambda self: self.boxes["pred_iou_thresh"])
    stability = property(lambda self: self.boxes["stability_score_thresh"])
    nms = property(lambda self: self.boxes["box_nms_thresh"])
    crops = property(lambda self: self.boxes["crop_n_layers"])
    min_area = property(lambda self: self.boxes["min_mask_region_area"])

    def values(self) -> dict:
        """The panel's settings as :func:`napari_sam.engine.generate_masks` keywords (points 0: auto)."""
        return {name: box.value() for name, box in self.boxes.items()}


def _spin(spec, value, low=None):
    low, high = spec.metadata["range"][0] if low is None else low, spec.metadata["range"][1]
    box = QDoubleSpinBox() if spec.metadata["step"] is not None else QSpinBox()
    box.setRange(low, high)
    if spec.metadata["step"] is not None:
        box.setDecimals(2)
        box.setSingleStep(spec.metadata["step"])
    box.setValue(value)
    box.setToolTip(spec.metadata["tip"][:1].upper() + spec.metadata["tip"][1:])
    return box


def build_everything(root: QVBoxLayout) -> EverythingPanel:
    """The *Segment everything* row and its collapsible settings, added to ``root``."""
    run = QPushButton("Segment everything")
    run.setToolTip("Find all objects on the plane on screen (a grid of point prompts) into a new "
                   "labels layer 'SAM everything'; committed labels are not touched")
    toggle, options, form = collapsible(root, run)
    boxes = {}
    defaults = GeneratorSettings()
    for spec in fields(GeneratorSettings):
        if not spec.metadata["panel"]:
            continue
        auto = spec.name == "points_per_side"
        box = boxes[spec.name] = _spin(spec, 0 if auto else getattr(defaults, spec.name), 0 if auto else None)
        if auto:  # 0: auto
            box.setSpecialValueText("auto (16 CPU / 32 GPU)")
            box.setToolTip("Grid of points per side (0 = auto: 16 on a CPU, 32 on a GPU; the 32x32 grid "
                           "takes minutes on a CPU)")
        form.addRow(spec.metadata["label"], box)
    return EverythingPanel(run, toggle, options, boxes)


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
    status: StatusLine
    propagate: QPushButton
    everything: EverythingPanel
    channel_axis: QComboBox
    channel: QComboBox
    through: QComboBox
    open_store: QPushButton
    stack_rows: QWidget  # hidden for 2D images
    model_info: StatusLine  # one line on the model chosen (what it is for, download size)
    instances: InstancesPanel


def _combo(tip: str, enabled: bool = True) -> QComboBox:
    combo = QComboBox()
    combo.setToolTip(tip)
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    combo.setEnabled(enabled)
    return combo


def build_panel(parent: QWidget) -> Panel:
    """Create the controls inside ``parent`` (which gets a vertical layout). Buttons never take
    the keyboard focus, so the canvas keeps it (and our keys keep working) after a click."""
    root = QVBoxLayout(parent)
    form = QFormLayout()
    image = _combo("Image layer to segment: grayscale or RGB, 2D or nD (plane by plane)")
    model = _combo("Model, by what it was trained for (downloaded once), or a checkpoint file")
    fill_models(model)  # item data: what to load
    model_info = StatusLine()
    model_info.setObjectName("napari_sam_model_info")
    device = QComboBox()
    device.addItems(available_devices())
    load, cancel = QPushButton("Load model"), QPushButton("Cancel")
    cancel.setEnabled(False)
    model_row = QHBoxLayout()
    for w in (model, device, load):
        model_row.addWidget(w)
    labels = _combo("Labels layer that committed objects are written into")
    overwrite = QCheckBox("Overwrite existing labels")
    form.addRow("Image", image)
    form.addRow("Model", model_row)
    form.addRow("", model_info)
    form.addRow("Labels", labels)
    form.addRow("", overwrite)
    root.addLayout(form)
    channel_axis, channel, through, open_store, stack_rows = build_stack_rows()
    root.addWidget(stack_rows)
    form_store = QFormLayout()
    form_store.addRow("Embeddings", open_store)
    root.addLayout(form_store)

    status = StatusLine("Choose an image and load a model.")
    status.setObjectName("napari_sam_status")
    status_row = QHBoxLayout()
    status_row.addWidget(status, 1)
    status_row.addWidget(cancel, 0, Qt.AlignTop)
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
    instances = build_instances(root)
    legend = QLabel(LEGEND)
    legend.setWordWrap(True)
    root.addWidget(legend)
    root.addStretch(1)
    for button in [*parent.findChildren(QPushButton), *parent.findChildren(QToolButton)]:
        button.setFocusPolicy(Qt.NoFocus)
    return Panel(image, model, device, load, cancel, labels, overwrite, polarity, choose,
                 commit, clear, undo, redo, export, status, propagate, everything,
                 channel_axis, channel, through, open_store, stack_rows, model_info, instances)


def build_stack_rows() -> tuple[QComboBox, QComboBox, QComboBox, QPushButton, QWidget]:
    """Controls for stacks, time series and multichannel images, in a section of their own
    (hidden for 2D images)."""
    channel_axis = _combo("Multichannel images: the leading axis that holds channels ('none': every "
                          "slider is a plane, SAM sees the channel on screen)", False)
    channel = _combo("What SAM segments: one channel, whatever the channel slider shows, or up to three "
                     "channels as red, green, blue (each scaled to its own range)", False)
    through = _combo("The axis that prefetch and 'Propagate through planes' walk (Z, T, ...)", False)
    open_store = QPushButton("Open embedding store…")
    open_store.setToolTip("Reuse embeddings precomputed by 'napari-sam embed' (a .zarr folder) for the image")
    rows = QWidget()
    form = QFormLayout(rows)
    form.setContentsMargins(0, 0, 0, 0)
    form.addRow("Channel axis", channel_axis)
    form.addRow("Channel", channel)
    form.addRow("Propagate along", through)
    rows.setVisible(False)
    return channel_axis, channel, through, open_store, rows
