"""Panel building blocks shared by the job sections (qtpy only): a row of controls with an
*Options* toggle that shows or hides a form of settings below it."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QToolButton, QVBoxLayout, QWidget


def collapsible(root: QVBoxLayout, *controls: QWidget) -> tuple[QToolButton, QWidget, QFormLayout]:
    """Add ``controls`` as one row (the first stretched) with an *Options* toggle, and a hidden
    settings form under it, to ``root``; returns ``(toggle, options, form)``."""
    toggle = QToolButton()
    toggle.setText("Options")
    toggle.setCheckable(True)
    toggle.setArrowType(Qt.RightArrow)
    toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
    row = QHBoxLayout()
    for k, control in enumerate(controls):
        row.addWidget(control, 1 if k == 0 else 0)
    row.addWidget(toggle)
    options = QWidget()
    form = QFormLayout(options)
    form.setContentsMargins(0, 0, 0, 0)
    options.setVisible(False)

    def shown(on: bool) -> None:
        options.setVisible(on)
        toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)

    toggle.toggled.connect(shown)
    root.addLayout(row)
    root.addWidget(options)
    return toggle, options, form
