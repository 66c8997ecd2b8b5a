"""The panel's tracking controls: with a SAM 2 model the *Propagate* button becomes *Track*,
with a direction choice and "also track the committed objects on this plane" (no annotation
logic: the session tracks; progress and Cancel come with every job)."""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..annotator import Session
from ..annotator.tracking import DIRECTIONS
from .ui import Panel

PROPAGATE = "Propagate through planes"
TRACK = "Track"
PROPAGATE_TIP = ("Stacks and time series: segment the current object on the next and previous planes too; "
                 "Commit then writes it through all of them")
TRACK_TIP = ("SAM 2: track the current object (and the committed objects on this plane, if ticked) through "
             "the stack; click a tracked plane to correct it there; Commit writes one id per object")


@dataclass
class TrackControls:
    row: QWidget
    direction: QComboBox
    committed: QCheckBox


def build_track_controls(ui: Panel, root: QVBoxLayout) -> TrackControls:
    """The row below the *Propagate* button (hidden unless a SAM 2 model segments a stack)."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    direction = QComboBox()
    direction.addItems(list(DIRECTIONS))
    direction.setCurrentText("both")
    direction.setToolTip("Track forward (higher planes), backward, or both ways from the prompted planes")
    committed = QCheckBox("also the committed objects here")
    committed.setToolTip("Also track the committed objects on the plane on screen, each keeping its label id")
    committed.setFocusPolicy(Qt.NoFocus)
    layout.addWidget(QLabel("Direction"))
    layout.addWidget(direction)
    layout.addWidget(committed, 1)
    row.setVisible(False)
    index = next((i for i in range(root.count()) if root.itemAt(i).layout() is not None
                  and root.itemAt(i).layout().indexOf(ui.propagate) >= 0), root.count() - 1)
    root.insertWidget(index + 1, row)
    return TrackControls(row, direction, committed)


class TrackPanel:
    """Keeps the button and the row in step with the model and the image; runs the button."""

    def __init__(self, ui: Panel, session: Session, root: QVBoxLayout, refocus=lambda: None) -> None:
        """``refocus()`` gives the keyboard back to the canvas after our controls were used."""
        self.ui, self.session = ui, session
        self.controls = build_track_controls(ui, root)
        ui.propagate.clicked.connect(lambda _=False: self.run())
        self.controls.direction.activated.connect(lambda _: refocus())
        session.events.model.connect(self.refresh)
        session.events.image.connect(self.refresh)
        self.refresh()

    @property
    def sam2(self) -> bool:
        return self.session.model is not None and self.session.model.kind == "sam2"

    def refresh(self) -> None:
        planes = self.session.planes
        self.ui.propagate.setText(TRACK if self.sam2 else PROPAGATE)
        self.ui.propagate.setToolTip(TRACK_TIP if self.sam2 else PROPAGATE_TIP)
        self.controls.row.setVisible(self.sam2 and planes is not None and planes.through_axis() is not None)

    def run(self) -> bool:
        """The button: Track with a SAM 2 model (the panel's direction and objects), else Propagate."""
        if not self.sam2:
            return self.session.propagate()
        objects = self.session.committed_on_plane() if self.controls.committed.isChecked() else None
        return self.session.track(self.controls.direction.currentText(), objects)
