"""The plugin as napari sees it: manifest, dock widget, sample data; and, where a display
with OpenGL exists, the ``napari-sam`` start-up view rendered to a screenshot."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_sam.widgets import SamWidget


@pytest.fixture(scope="module")
def manifest():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm.get_manifest("napari-sam-annotator")


def test_manifest_contributions(manifest):
    contrib = manifest.contributions
    assert [w.display_name for w in contrib.widgets] == ["Segment Anything"]
    (writer,) = contrib.writers
    assert writer.layer_types == ["labels"] and set(writer.filename_extensions) == {".tif", ".tiff"}
    assert {s.key for s in contrib.sample_data} == {"cell", "coins", "immunohistochemistry"}


@pytest.mark.parametrize(("key", "shape"), [("cell", (660, 550)), ("coins", (303, 384)),
                                            ("immunohistochemistry", (512, 512, 3))])
def test_sample_data_is_offline(manifest, key, shape):
    (sample,) = [s for s in manifest.contributions.sample_data if s.key == key]
    ((data, meta, kind),) = sample.open()
    assert kind == "image" and data.shape == shape and data.dtype == np.uint8
    assert meta["rgb"] == (len(shape) == 3)


def test_add_plugin_dock_widget_returns_our_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sam-annotator", "Segment Anything")
    assert isinstance(widget, SamWidget) and widget.viewer is viewer
    assert dock.widget() is not None
    assert "No image" in widget.status_text


HAS_DISPLAY = bool(os.environ.get("DISPLAY")) and os.environ.get("QT_QPA_PLATFORM") not in (None, "offscreen")


@pytest.mark.skipif(not HAS_DISPLAY, reason="needs a display with OpenGL (e.g. xvfb-run, QT_QPA_PLATFORM=xcb)")
def test_start_command_view_renders(qtbot, tiny_checkpoint):
    """What ``napari-sam`` opens: the coins sample with the widget docked; a click segments."""
    from napari_sam.widgets.launch import open_viewer

    viewer, widget = open_viewer(model=str(tiny_checkpoint), device="cpu", show=True)
    try:
        assert viewer.layers[0].name == "coins" and widget.image is viewer.layers[0]
        assert widget.wait_idle(60) and widget.embedding is not None
        points = viewer.layers["SAM points"]
        points.add([[150, 190]])
        assert widget.wait_idle(60)
        shot = viewer.screenshot(canvas_only=False)
        assert shot.ndim == 3 and shot[..., :3].std() > 5  # not a blank window
    finally:
        viewer.close()


@pytest.mark.skipif(not HAS_DISPLAY, reason="needs a display with OpenGL (e.g. xvfb-run, QT_QPA_PLATFORM=xcb)")
def test_canvas_clicks_right_click_and_ctrl_click_are_negative(make_napari_viewer):
    from qtpy.QtWidgets import QApplication
    from vispy.util import keys

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((100, 100), np.uint8), name="img")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam-annotator", "Segment Anything")
    assert widget.wait_idle(10)
    points = viewer.layers["SAM points"]
    assert viewer.layers.selection.active is points and points.mode == "add"
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    pos = np.array(canvas.size) / 2
    for button, modifiers in [(1, ()), (2, ()), (1, (keys.CONTROL,)), (1, ())]:
        canvas.events.mouse_press(pos=pos, button=button, modifiers=modifiers)
        canvas.events.mouse_release(pos=pos, button=button, modifiers=modifiers)
        QApplication.processEvents()
        pos = pos + 10
    assert points.features["positive"].tolist() == [True, False, False, True]


def _key(viewer, key) -> None:
    """A real key press on the focused widget (the canvas, where the user is)."""
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    QTest.keyClick(QApplication.focusWidget() or viewer.window._qt_viewer.canvas.native, key)
    QApplication.processEvents()


@pytest.mark.skipif(not HAS_DISPLAY, reason="needs a display with OpenGL (e.g. xvfb-run, QT_QPA_PLATFORM=xcb)")
def test_keys_keep_working_after_propagate_segment_everything_and_buttons(make_napari_viewer, qtbot, tiny_checkpoint,
                                                                          stack):
    """Clicks on our buttons leave the keyboard focus on the canvas and our layer active, so C,
    Esc, 1/2/3, N and Ctrl+Z still reach us after Propagate and Segment everything."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    viewer.add_image(stack, name="stack")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam-annotator", "Segment Anything")
    canvas = viewer.window._qt_viewer.canvas.native
    viewer.window._qt_window.activateWindow()
    canvas.setFocus()
    qtbot.waitUntil(canvas.hasFocus, timeout=5000)
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    widget.session.settings.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    viewer.layers["SAM points"].add([[48, 56]])
    assert widget.wait_idle(60)
    QTest.mouseClick(widget.ui.propagate, Qt.LeftButton)
    assert widget.wait_idle(120) and widget.session.object.planes
    assert QApplication.focusWidget() is canvas and viewer.layers.selection.active is viewer.layers["SAM points"]
    _key(viewer, Qt.Key_C)
    labels = viewer.layers["SAM labels"]
    assert all(labels.data[z].any() for z in range(5))
    _key(viewer, Qt.Key_N)
    assert not widget.session.positive
    _key(viewer, Qt.Key_N)

    widget.ui.everything.points.setValue(4)
    widget.ui.everything.boxes["pred_iou_thresh"].setValue(-1)
    widget.ui.everything.boxes["stability_score_thresh"].setValue(0)
    QTest.mouseClick(widget.ui.everything.run, Qt.LeftButton)
    assert widget.wait_idle(120) and "SAM everything" in viewer.layers
    assert QApplication.focusWidget() is canvas and viewer.layers.selection.active is viewer.layers["SAM points"]
    viewer.layers["SAM points"].add([[48, 56]])
    assert widget.wait_idle(60) and len(widget.session.object.candidates) == 3
    _key(viewer, Qt.Key_2)
    assert widget.session.object.chosen == 1
    _key(viewer, Qt.Key_Escape)
    assert not widget.session.object.candidates
    QTest.mouseClick(widget.ui.undo, Qt.LeftButton)
    assert widget.wait_idle(5)
    assert not labels.data.any() and QApplication.focusWidget() is canvas
    QTest.keyClick(canvas, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert labels.data.any()
