"""The Segment Anything widget end to end, with a random-weight tiny SAM (no downloads).

Without a display, tests drive a headless ``napari.components.ViewerModel`` (layers, events,
key bindings, no OpenGL canvas); with one (e.g. ``xvfb-run`` and ``QT_QPA_PLATFORM=xcb``) the
same tests run on a real ``napari.Viewer``. ``test_dock.py`` covers the manifest.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_sam.io import read_labels_tiff
from napari_sam.widgets import SamWidget  # noqa: F401

from .helpers import boxes_layer, candidates, points_layer, record_predict_calls, with_role  # noqa: F401


@pytest.fixture()
def ready(viewer, widget, rgb_image, tiny_checkpoint):
    """Image shown, tiny model loaded, embedding computed."""
    viewer.add_image(rgb_image, name="discs", scale=(0.5, 0.5))
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    assert widget.embedding is not None, widget.status_text
    return widget


def test_end_to_end_point_three_candidates_commit_undo_redo_export(ready, viewer, tmp_path):
    w = ready
    assert len(with_role(viewer, "points")) == 1 and len(with_role(viewer, "boxes")) == 1
    assert viewer.layers.selection.active is points_layer(viewer)
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60)

    cands = candidates(viewer)
    assert len(cands) == 3
    metas = [c.metadata["napari_sam"] for c in cands]
    assert [m["index"] for m in metas] == [0, 1, 2]
    ious = [m["iou"] for m in metas]
    assert all(isinstance(v, float) for v in ious) and ious == sorted(ious, reverse=True)
    for k, (layer, iou) in enumerate(zip(cands, ious)):
        assert layer.name == f"SAM mask {k + 1} · IoU {iou:.2f}"
        assert re.fullmatch(r"SAM mask \d · IoU -?\d\.\d\d", layer.name)
        assert layer.data.shape == (300, 400) and layer.scale.tolist() == [0.5, 0.5]
    assert cands[0].opacity > cands[1].opacity == cands[2].opacity  # best one highlighted

    assert w.select_candidate(2)
    assert cands[2].opacity > cands[0].opacity
    chosen = cands[2].data > 0
    assert chosen.any()
    assert w.commit()
    (labels,) = with_role(viewer, "labels")
    assert labels.name == "SAM labels"
    assert np.array_equal(labels.data, chosen.astype(labels.dtype))
    assert not with_role(viewer, "candidate") and len(points_layer(viewer).data) == 0

    assert w.undo()
    assert not labels.data.any()
    assert w.redo()
    assert np.array_equal(labels.data, chosen.astype(labels.dtype))
    assert not w.redo() and "Nothing to redo" in w.status_text

    out = w.export_labels(tmp_path / "labels.tif")
    assert out is not None
    data, meta = read_labels_tiff(out)
    assert data.dtype == np.uint8 and np.array_equal(data, labels.data)
    assert meta["scale"] == [0.5, 0.5]


def test_second_object_gets_next_id_and_keeps_the_first(ready, viewer):
    w = ready
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60) and w.commit()
    (labels,) = with_role(viewer, "labels")
    first = labels.data.copy()
    points_layer(viewer).add([[200, 300]])
    assert w.wait_idle(60)
    new = candidates(viewer)[0].data > 0
    assert w.commit()
    assert set(np.unique(labels.data)) <= {0, 1, 2}
    assert np.array_equal(labels.data[first == 1], first[first == 1])  # never overwritten
    assert np.array_equal(labels.data == 2, new & (first == 0))


def test_refinement_feeds_chosen_logits_and_resets_between_objects(ready, viewer, monkeypatch):
    w = ready
    predictor = w.model.predictor
    calls = []
    original = predictor.predict

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict", spy)
    pts = points_layer(viewer)
    pts.add([[80, 100]])
    assert w.wait_idle(60)
    assert calls[-1]["mask_input"] is None and calls[-1]["multimask"] is True
    w.select_candidate(1)
    expected = w.annotation.object.get(1).logits
    pts.add([[90, 110]])
    assert w.wait_idle(60)
    assert calls[-1]["multimask"] is False
    np.testing.assert_array_equal(calls[-1]["mask_input"], expected[None])
    assert len(candidates(viewer)) == 1  # several prompts: SAM's single mask

    assert w.commit()
    pts.add([[200, 300]])
    assert w.wait_idle(60)
    assert calls[-1]["mask_input"] is None  # nothing leaks from the committed object

    pts.add([[210, 300]])
    assert w.wait_idle(60)
    assert calls[-1]["mask_input"] is not None
    w.clear()
    pts.add([[220, 90]])
    assert w.wait_idle(60)
    assert calls[-1]["mask_input"] is None  # nor from a cleared one


def test_keys_on_prompt_layers(ready, viewer):
    from napari.utils.key_bindings import coerce_keybinding

    w = ready
    pts = points_layer(viewer)

    def press(layer, key):
        layer.keymap[coerce_keybinding(key)](layer)

    pts.add([[80, 100]])
    assert w.wait_idle(60)
    press(pts, "3")
    assert w.annotation.object.chosen == 2
    press(candidates(viewer)[0], "2")
    assert w.annotation.object.chosen == 1
    press(pts, "Escape")
    assert not candidates(viewer) and len(pts.data) == 0
    pts.add([[80, 100]])
    assert w.wait_idle(60)
    press(boxes_layer(viewer), "C")
    (labels,) = with_role(viewer, "labels")
    assert labels.data.max() == 1
    press(pts, "Control-Z")
    assert labels.data.max() == 0
    press(pts, "Control-Shift-Z")
    assert labels.data.max() == 1
    press(pts, "N")
    assert not w.annotation.positive
    pts.add([[5, 5]])
    assert pts.features["positive"].tolist() == [False]


def test_selecting_a_candidate_layer_chooses_it(ready, viewer, qtbot):
    w = ready
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60)
    viewer.layers.selection.active = candidates(viewer)[1]
    assert w.annotation.object.chosen == 1
    qtbot.waitUntil(lambda: viewer.layers.selection.active is points_layer(viewer), timeout=2000)


def test_negative_points_by_toggle_and_ctrl_click(ready, viewer, monkeypatch):
    w = ready
    pts = points_layer(viewer)
    calls = record_predict_calls(w, monkeypatch)

    class Click:
        button, modifiers = 1, ("Control",)

    pts.add([[80, 100]])
    w.annotation._press(pts, Click())  # Ctrl+click in add mode: the next point is negative
    pts.add([[60, 60]])
    pts.add([[90, 95]])  # and only that one
    assert pts.features["positive"].tolist() == [True, False, True]
    assert w.wait_idle(60)
    assert calls[-1]["labels"].tolist() == [1, 0, 1]
    w.ui.polarity.click()
    assert not w.annotation.positive and "negative" in w.ui.polarity.text()
    pts.add([[70, 70]])
    assert pts.features["positive"].tolist()[-1] is False


def test_right_click_adds_a_negative_point(ready, viewer, monkeypatch):
    w = ready
    pts = points_layer(viewer)
    calls = record_predict_calls(w, monkeypatch)

    class RightClick:
        button, modifiers = 2, ()

    assert w.annotation.positive  # plain clicks add positive points
    pts.add([[80, 100]])
    w.annotation._press(pts, RightClick())  # right-click in add mode: the next point is negative
    pts.add([[60, 60]])
    pts.add([[90, 95]])  # and only that one
    assert pts.features["positive"].tolist() == [True, False, True]
    assert w.wait_idle(60)
    assert calls[-1]["labels"].tolist() == [1, 0, 1]
    assert w.annotation.positive

def test_several_boxes_are_several_objects(ready, viewer):
    w = ready
    boxes = boxes_layer(viewer)
    boxes.add_rectangles([np.array([[40, 60], [120, 140]]), np.array([[150, 250], [260, 350]])])
    assert w.wait_idle(60)
    (cand,) = candidates(viewer)
    meta = cand.metadata["napari_sam"]
    assert meta["role"] == "candidate" and meta["index"] == 0 and len(meta["ious"]) == 2
    assert set(np.unique(cand.data)) <= {0, 1, 2}
    assert w.commit()
    (labels,) = with_role(viewer, "labels")
    assert set(np.unique(labels.data)) - {0} == {1, 2}
    assert len(boxes.data) == 0


def test_points_and_one_box_are_one_object(ready, viewer, monkeypatch):
    w = ready
    calls = record_predict_calls(w, monkeypatch)
    boxes_layer(viewer).add_rectangles(np.array([[40, 60], [120, 140]]))
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60)
    assert calls[-1]["box"].tolist() == [40, 60, 120, 140] and calls[-1]["points"].tolist() == [[80, 100]]
    assert len(candidates(viewer)) == 1


def test_prompts_before_the_model_are_decoded_when_the_embedding_is_ready(viewer, widget, rgb_image, tiny_checkpoint):
    w = widget
    viewer.add_image(rgb_image, name="discs")
    assert w.wait_idle(10)  # the widget notices the new image once napari is done adding it
    points_layer(viewer).add([[80, 100]])
    assert "No model" in w.status_text
    w.load_model(str(tiny_checkpoint), device="cpu")
    assert w.wait_idle(60)
    assert len(candidates(viewer)) == 3


def test_commit_keeps_existing_labels_unless_overwrite(ready, viewer):
    w = ready
    existing = np.zeros((300, 400), np.uint16)
    existing[:, :200] = 7
    viewer.add_labels(existing.copy(), name="manual", scale=(0.5, 0.5))
    assert w.wait_idle(10)
    w.ui.labels.setCurrentText("manual")
    assert w.ui.labels.currentText() == "manual"
    boxes_layer(viewer).add_rectangles(np.array([[20, 150], [200, 300]]))
    assert w.wait_idle(60)
    mask = candidates(viewer)[0].data > 0
    assert (mask[:, :200]).any() and (mask[:, 200:]).any()
    assert w.commit()
    manual = viewer.layers["manual"]
    assert np.array_equal(manual.data[:, :200], existing[:, :200])
    assert np.array_equal(manual.data[:, 200:] == 8, mask[:, 200:])

    w.ui.overwrite.setChecked(True)
    boxes_layer(viewer).add_rectangles(np.array([[20, 150], [200, 300]]))
    assert w.wait_idle(60)
    mask = candidates(viewer)[0].data > 0
    assert w.commit()
    assert np.array_equal(manual.data == 9, mask)


def test_commit_that_paints_nothing_says_so(ready, viewer):
    w = ready
    viewer.add_labels(np.ones((300, 400), np.uint8), name="full", scale=(0.5, 0.5))
    assert w.wait_idle(10)
    w.ui.labels.setCurrentText("full")
    assert w.ui.labels.currentText() == "full"
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60)
    assert not w.commit()
    assert "Nothing was painted" in w.status_text
    assert len(candidates(viewer)) == 3  # the object is kept to try again


def test_choosers_follow_renames_and_find_our_labels_again(ready, viewer, qtbot):
    w = ready
    viewer.layers["discs"].name = "renamed"
    qtbot.waitUntil(lambda: w.ui.image.currentText() == "renamed", timeout=2000)
    points_layer(viewer).add([[80, 100]])
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
    points_layer(viewer).add([[200, 300]])
    assert w.wait_idle(60)
    assert len(candidates(viewer)) == 3
    assert w.commit()
    assert len(with_role(viewer, "labels")) == 1 and with_role(viewer, "labels")[0].data.max() == 2


def test_switching_image_resets_refinement(ready, viewer, monkeypatch):
    w = ready
    calls = record_predict_calls(w, monkeypatch)
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60)
    viewer.add_image(np.zeros((300, 400), np.uint8), name="other")
    assert w.wait_idle(10)
    w.ui.image.setCurrentText("other")
    assert w.wait_idle(60)
    assert not candidates(viewer) and len(points_layer(viewer).data) == 0
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60)
    assert calls[-1]["mask_input"] is None and len(candidates(viewer)) == 3


def test_script_order_widget_first_then_image(viewer, widget, rgb_image, tiny_checkpoint):
    """A script may add the image after creating the widget and load at once."""
    viewer.add_image(rgb_image, name="late")
    widget.load_model(tiny_checkpoint, device="cpu")  # a Path works too
    assert widget.image is viewer.layers["late"] and with_role(viewer, "points")
    assert widget.wait_idle(60) and widget.embedding is not None
    assert viewer.layers.selection.active is points_layer(viewer)
