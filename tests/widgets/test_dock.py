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
