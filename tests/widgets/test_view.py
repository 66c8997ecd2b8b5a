"""The widget as a view of its session (random-weight tiny SAM, no downloads): layers drawn in
place, prompt layers feeding the session, keys, choosers, the status line and notifications.

Without a display, tests drive a headless ``napari.components.ViewerModel`` (layers, events,
key bindings, no OpenGL canvas); with one (``xvfb-run`` and ``QT_QPA_PLATFORM=xcb``) the same
tests run on a real ``napari.Viewer``. Annotation behaviour itself is tested on the session in
tests/annotator/.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.io import read_labels_tiff
from napari_sam.widgets import layers as L

from .helpers import add_point, boxes_layer, candidate_layer, points_layer, press, shown_candidates, with_role


@pytest.fixture()
def warnings(monkeypatch):
    """Texts of napari warning notifications shown by the widget."""
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", shown.append)
    return shown


@pytest.fixture()
def ready(viewer, widget, rgb_image, tiny_checkpoint):
    """Image shown, tiny model loaded, embedding computed."""
    viewer.add_image(rgb_image, name="discs", scale=(0.5, 0.5))
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    assert widget.embedding is not None, widget.status_text
    return widget


def test_end_to_end_point_candidates_commit_undo_redo_export(ready, viewer, tmp_path):
    w = ready
    assert len(with_role(viewer, "points")) == 1 and len(with_role(viewer, "boxes")) == 1
    assert viewer.layers.selection.active is points_layer(viewer)
    layer = candidate_layer(viewer)
    names = [lay.name for lay in viewer.layers]
    add_point(viewer, 80, 100)
    assert w.wait_idle(60)

    assert candidate_layer(viewer) is layer and [lay.name for lay in viewer.layers if lay is not layer] == \
        [n for n in names if n != L.EMPTY_NAME]  # no layer added or removed: drawn in place
    metas = shown_candidates(viewer)
    assert [m["index"] for m in metas] == [0, 1, 2]
    ious = [m["iou"] for m in metas]
    assert all(isinstance(v, float) for v in ious) and ious == sorted(ious, reverse=True)
    meta = layer.metadata["napari_sam"]
    assert meta["role"] == "candidate" and meta["index"] == 0 and meta["iou"] == ious[0]
    assert layer.name == f"SAM mask 1 · IoU {ious[0]:.2f}"
    assert layer.data.shape == (300, 400) and layer.scale.tolist() == [0.5, 0.5]
    masks = L.candidate_masks(layer)
    for cand in w.session.object.candidates:
        assert np.array_equal(masks[cand.index], cand.mask > 0)
    bright = layer.colormap.map(np.array([1]))[0, 3]
    assert bright > layer.colormap.map(np.array([2]))[0, 3]  # the best one highlighted

    assert w.select_candidate(2)
    assert layer.metadata["napari_sam"]["index"] == 2 and layer.name.startswith("SAM mask 3")
    assert layer.colormap.map(np.array([4]))[0, 3] > layer.colormap.map(np.array([1]))[0, 3]
    chosen = masks[2]
    assert chosen.any()
    assert w.commit()
    (labels,) = with_role(viewer, "labels")
    assert labels.name == "SAM labels" and w.ui.labels.currentText() == "SAM labels"
    assert np.array_equal(labels.data, chosen.astype(labels.dtype))
    assert not layer.data.any() and layer.name == L.EMPTY_NAME and len(points_layer(viewer).data) == 0

    assert w.undo()
    assert not labels.data.any()
    assert w.redo()
    assert np.array_equal(labels.data, chosen.astype(labels.dtype))
    assert not w.redo() and "Nothing to redo" in w.status_text

    out = w.export_labels(tmp_path / "labels.tif")
    data, meta = read_labels_tiff(out)
    assert data.dtype == np.uint8 and np.array_equal(data, labels.data)
    assert meta["scale"] == [0.5, 0.5]


def test_keys_on_our_layers(ready, viewer):
    w = ready
    pts = points_layer(viewer)
    add_point(viewer, 80, 100)
    assert w.wait_idle(60)
    press(pts, "3")
    assert w.session.object.chosen == 2
    press(candidate_layer(viewer), "2")
    assert w.session.object.chosen == 1
    press(pts, "Escape")
    assert not w.session.object.candidates and len(pts.data) == 0 and not candidate_layer(viewer).data.any()
    add_point(viewer, 80, 100)
    assert w.wait_idle(60)
    press(boxes_layer(viewer), "C")
    (labels,) = with_role(viewer, "labels")
    assert labels.data.max() == 1
    press(pts, "Control-Z")
    assert labels.data.max() == 0
    press(pts, "Control-Shift-Z")
    assert labels.data.max() == 1
    press(pts, "N")
    assert not w.session.positive and "negative" in w.ui.polarity.text()
    pts.add([[5, 5]])
    assert pts.features["positive"].tolist() == [False]


def test_negative_points_by_toggle_ctrl_click_and_right_click(ready, viewer):
    w = ready
    pts = points_layer(viewer)

    class Click:
        button, modifiers = 1, ("Control",)

    class RightClick:
        button, modifiers = 2, ()

    pts.add([[80, 100]])
    w.sync._press(pts, Click())  # Ctrl+click in add mode: the next point is negative
    pts.add([[60, 60]])
    pts.add([[90, 95]])  # and only that one
    w.sync._press(pts, RightClick())
    pts.add([[70, 90]])
    assert pts.features["positive"].tolist() == [True, False, True, False]
    assert w.wait_idle(60)
    assert w.session._prompts[1].tolist() == [True, False, True, False]
    w.ui.polarity.click()
    assert not w.session.positive and "negative" in w.ui.polarity.text()
    pts.add([[70, 70]])
    assert pts.features["positive"].tolist()[-1] is False


def test_boxes_layer_feeds_several_objects(ready, viewer):
    w = ready
    boxes = boxes_layer(viewer)
    boxes.add_rectangles([np.array([[40, 60], [120, 140]]), np.array([[150, 250], [260, 350]])])
    assert w.wait_idle(60)
    layer = candidate_layer(viewer)
    meta = layer.metadata["napari_sam"]
    assert meta["index"] == 0 and len(meta["ious"]) == 2 and set(np.unique(layer.data)) <= {0, 1, 2}
    assert w.commit()
    assert len(boxes.data) == 0


def test_labels_chooser_and_overwrite_box_drive_the_commit(ready, viewer):
    w = ready
    existing = np.zeros((300, 400), np.uint16)
    existing[:, :200] = 7
    viewer.add_labels(existing.copy(), name="manual", scale=(0.5, 0.5))
    assert w.wait_idle(10)
    w.ui.labels.setCurrentText("manual")
    boxes_layer(viewer).add_rectangles(np.array([[20, 150], [200, 300]]))
    assert w.wait_idle(60)
    mask = w.session.object.chosen_candidate.mask > 0
    assert w.commit()
    manual = viewer.layers["manual"]
    assert np.array_equal(manual.data[:, :200], existing[:, :200])
    assert np.array_equal(manual.data[:, 200:] == 8, mask[:, 200:])
    w.ui.overwrite.setChecked(True)
    boxes_layer(viewer).add_rectangles(np.array([[20, 150], [200, 300]]))
    assert w.wait_idle(60)
    mask = w.session.object.chosen_candidate.mask > 0
    assert w.commit()
    assert np.array_equal(manual.data == 9, mask)


def test_choosers_follow_renames_and_find_our_labels_again(ready, viewer, qtbot):
    w = ready
    viewer.layers["discs"].name = "renamed"
    qtbot.waitUntil(lambda: w.ui.image.currentText() == "renamed", timeout=2000)
    add_point(viewer, 80, 100)
    assert w.wait_idle(60) and w.commit()
    assert w.ui.labels.currentText() == "SAM labels"
    viewer.add_image(np.zeros((50, 60), np.uint8), name="small")
    assert w.wait_idle(10)
    w.ui.image.setCurrentText("small")
    assert w.wait_idle(60)
    assert w.ui.labels.currentText() == "New layer: SAM labels"  # wrong shape for "small"
    w.ui.image.setCurrentText("renamed")
    assert w.wait_idle(60)
    assert w.ui.labels.currentText() == "SAM labels"  # the image's labels layer, not a new one
    add_point(viewer, 200, 300)
    assert w.wait_idle(60)
    assert len(shown_candidates(viewer)) == 3
    assert w.commit()
    assert len(with_role(viewer, "labels")) == 1 and with_role(viewer, "labels")[0].data.max() == 2


def test_script_order_widget_first_then_image(viewer, widget, rgb_image, tiny_checkpoint):
    """A script may add the image after creating the widget and load at once."""
    viewer.add_image(rgb_image, name="late")
    widget.load_model(tiny_checkpoint, device="cpu")  # a Path works too
    assert widget.image is viewer.layers["late"] and with_role(viewer, "points")
    assert widget.wait_idle(60) and widget.embedding is not None
    assert viewer.layers.selection.active is points_layer(viewer)


def test_an_image_added_later_gets_our_layers_on_top(ready, viewer):
    viewer.add_image(np.zeros((300, 400), np.uint8), name="other")
    assert ready.wait_idle(10)
    ready.ui.image.setCurrentText("other")
    assert ready.wait_idle(60)
    names = [lay.name for lay in viewer.layers]
    assert names.index("other") < names.index("SAM points") and names.index("other") < names.index(L.EMPTY_NAME)


def test_removing_prompt_layers_is_survivable(ready, viewer, warnings):
    pts = points_layer(viewer)
    pts.add([[80, 100]])
    assert ready.wait_idle(60) and len(shown_candidates(viewer)) == 3
    viewer.layers.remove(pts)
    assert ready.wait_idle(60)
    assert "'SAM points' was removed" in ready.status_text and warnings
    assert not ready.session.object.candidates and not candidate_layer(viewer).data.any()  # its object is gone
    viewer.layers.remove(boxes_layer(viewer))
    assert ready.wait_idle(60)
    ready.clear()
    ready.sync.ensure_layers(ready.image)  # Clear brings new prompt layers
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60) and len(shown_candidates(viewer)) == 3
    assert len(with_role(viewer, "boxes")) == 1


def test_removing_the_candidate_layer_or_the_labels_layer(ready, viewer):
    add_point(viewer, 80, 100)
    assert ready.wait_idle(60)
    viewer.layers.remove(candidate_layer(viewer))
    assert not ready.session.object.candidates and not ready.commit()
    ready.sync.ensure_layers(ready.image)
    add_point(viewer, 80, 100)
    assert ready.wait_idle(60) and ready.commit()
    viewer.layers.remove(with_role(viewer, "labels")[0])
    assert not ready.undo() and "Nothing to undo" in ready.status_text


def test_bad_actions_are_notified(viewer, widget, rgb_image, warnings):
    assert "No image" in widget.status_text
    assert not widget.commit() and "Nothing to commit" in widget.status_text and warnings
    viewer.add_image([np.zeros((64, 64), np.uint8), np.zeros((32, 32), np.uint8)], multiscale=True, name="pyramid")
    assert widget.wait_idle(10)
    assert "multiscale" in widget.status_text and any("multiscale" in w for w in warnings)
    assert not with_role(viewer, "points")
    viewer.add_image(rgb_image, name="rgb")
    assert widget.wait_idle(10)
    widget.ui.image.setCurrentText("rgb")
    points_layer(viewer).add([[10, 10]])
    assert "No model loaded" in widget.status_text and warnings[-1].endswith("first (your prompts are kept).")
    widget.load_model("vit_b", device="cuda:7")
    assert "not available" in widget.status_text or "does not exist" in widget.status_text


def test_status_line_keeps_its_height_and_elides_long_texts(widget):
    status = widget.ui.status
    height = status.height()
    long = "Ready: click on 'a very long image name' to segment " + "(a note about the embedding store) " * 12
    widget.message(long)
    assert status.height() == height and widget.status_text == long and status.toolTip() == long
    assert status.text() != long and status.text().endswith("…") and status.text().count("\n") == 1
    widget.message("short")
    assert status.text() == "short" and status.height() == height


def test_stack_rows_are_hidden_for_2d_images(ready, viewer):
    assert not ready.ui.stack_rows.isVisibleTo(ready)
    viewer.add_image(np.zeros((3, 40, 50), np.uint8), name="stack")
    assert ready.wait_idle(10)
    ready.ui.image.setCurrentText("stack")
    assert ready.wait_idle(60)
    assert ready.ui.stack_rows.isVisibleTo(ready)
    assert [ready.ui.through.itemText(i) for i in range(ready.ui.through.count())] == ["axis 0 (3)"]
