"""Fixtures of the widget tests: a viewer (real where a display exists), the widget, a stack."""

from __future__ import annotations

import os

import numpy as np
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


@pytest.fixture(scope="module")
def stack():
    """(5, 96, 128) uint16: a bright disc drifting through z on a noisy background."""
    rng = np.random.default_rng(11)
    rr, cc = np.mgrid[:96, :128]
    data = rng.integers(0, 400, (5, 96, 128)).astype(np.uint16)
    for z in range(5):
        data[z][(rr - 48) ** 2 + (cc - 50 - 3 * z) ** 2 < 22**2] += 3000
    return data


@pytest.fixture()
def count_embeddings(monkeypatch):
    """Every embedding computed from now on (in any thread) is counted."""
    from napari_sam.engine import Predictor

    calls = []
    original = Predictor.compute_embedding

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "compute_embedding", counting)
    return calls
