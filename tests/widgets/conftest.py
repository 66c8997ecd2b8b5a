"""Fixtures of the widget tests: a viewer (real where a display exists) and the widget."""

from __future__ import annotations

import os

import pytest
from napari.components import ViewerModel

from napari_sam.widgets import SamWidget

HAS_DISPLAY = bool(os.environ.get("DISPLAY")) and os.environ.get("QT_QPA_PLATFORM") not in (None, "offscreen")


@pytest.fixture()
def viewer(request):
    """A real napari viewer where a display with OpenGL exists, else the headless model."""
    if HAS_DISPLAY:
        return request.getfixturevalue("make_napari_viewer")()
    return ViewerModel()


@pytest.fixture()
def widget(qtbot, viewer):
    w = SamWidget(viewer)
    qtbot.addWidget(w)
    yield w
    w.cancel()
    assert w.wait_idle(60)
