"""Bad actions get a message in the status line (and a napari notification), never a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import boxes_layer, candidates, points_layer, with_role


@pytest.fixture()
def warnings(monkeypatch):
    """Texts of napari warning notifications shown by the widget."""
    shown = []
    monkeypatch.setattr("napari_sam.widgets.sam_widget.show_warning", shown.append)
    return shown


@pytest.fixture()
def ready(viewer, widget, rgb_image, tiny_checkpoint):
    viewer.add_image(rgb_image, name="discs")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding is not None
    return widget


def test_no_image(widget, warnings):
    assert "No image" in widget.status_text
    assert not widget.commit() and "Nothing to commit" in widget.status_text
    assert widget.export_labels("never.tif") is None and "Nothing to export" in widget.status_text
    assert warnings


def test_no_model_keeps_the_prompts(viewer, widget, rgb_image, warnings):
    viewer.add_image(rgb_image)
    assert widget.wait_idle(10)
    points_layer(viewer).add([[10, 10]])
    assert "No model loaded" in widget.status_text and warnings
    assert len(points_layer(viewer).data) == 1 and not candidates(viewer)


def test_point_outside_the_image_is_ignored_with_a_message(ready, viewer, warnings):
    pts = points_layer(viewer)
    pts.add([[-40, 500]])
    assert ready.wait_idle(60)
    assert "outside the 300×400 image" in ready.status_text and warnings
    assert not candidates(viewer)
    pts.add([[80, 100]])  # a good point next to it still works
    assert ready.wait_idle(60)
    assert len(candidates(viewer)) == 3 and "outside" in ready.status_text


def test_degenerate_box_is_ignored_with_a_message(ready, viewer, warnings):
    boxes_layer(viewer).add_rectangles(np.array([[50, 50], [50.2, 120]]))
    assert ready.wait_idle(60)
    assert "too small" in ready.status_text and warnings and not candidates(viewer)
    boxes_layer(viewer).add_rectangles(np.array([[-100, -100], [-50, -20]]))
    assert ready.wait_idle(60)
    assert "outside the image" in ready.status_text


def test_only_negative_points_say_so(ready, viewer):
    ready.annotation.set_polarity(False)
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60)
    assert "negative points only" in ready.status_text and not candidates(viewer)


def test_removing_prompt_layers_is_survivable(ready, viewer, warnings):
    pts = points_layer(viewer)
    pts.add([[80, 100]])
    assert ready.wait_idle(60) and len(candidates(viewer)) == 3
    viewer.layers.remove(pts)
    assert ready.wait_idle(60)
    assert "'SAM points' was removed" in ready.status_text and warnings
    assert not candidates(viewer)  # its prompts are gone, so is the object
    viewer.layers.remove(boxes_layer(viewer))
    assert ready.wait_idle(60)
    ready.clear()  # brings new prompt layers
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60) and len(candidates(viewer)) == 3
    assert len(with_role(viewer, "boxes")) == 1


def test_removing_a_candidate_layer(ready, viewer):
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60)
    viewer.layers.remove(candidates(viewer)[0])
    assert ready.annotation.object.chosen == 1
    assert not ready.select_candidate(0) and "No candidate 1" in ready.status_text
    assert ready.commit()


def test_removing_the_labels_layer_keeps_undo_safe(ready, viewer):
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60) and ready.commit()
    viewer.layers.remove(with_role(viewer, "labels")[0])
    assert not ready.undo() and "Nothing to undo" in ready.status_text


def test_multiscale_image_gets_a_clear_message(viewer, widget, warnings):
    viewer.add_image([np.zeros((64, 64), np.uint8), np.zeros((32, 32), np.uint8)], multiscale=True, name="pyramid")
    assert widget.wait_idle(10)
    assert "multiscale" in widget.status_text and warnings
    assert not with_role(viewer, "points")


def test_unknown_model_and_bad_device(widget, tmp_path, warnings):
    widget.load_model("vit_x", device="cpu")
    assert widget.wait_idle(30)
    assert "failed" in widget.status_text and "vit_x" in widget.status_text
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    widget.load_model(str(junk), device="cpu")
    assert widget.wait_idle(30)
    assert "not a readable PyTorch checkpoint" in widget.status_text
    widget.load_model("vit_b", device="cuda:7")
    assert "not available" in widget.status_text or "does not exist" in widget.status_text
    assert widget.model is None


def test_export_to_an_unwritable_place(ready, viewer, tmp_path):
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60) and ready.commit()
    assert ready.export_labels(tmp_path / "missing-folder" / "x.tif") is None
    assert "Export failed" in ready.status_text


def test_undo_after_the_labels_data_was_replaced(ready, viewer):
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60) and ready.commit()
    labels = with_role(viewer, "labels")[0]
    labels.data = np.zeros((10, 10), np.uint8)
    assert not ready.undo() and "was replaced" in ready.status_text


def test_rgba_image_is_embedded_without_alpha(viewer, widget, rgb_image, tiny_checkpoint):
    rgba = np.concatenate([rgb_image, np.full(rgb_image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    viewer.add_image(rgba, name="rgba")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    assert widget.embedding is not None and widget.embedding[1].original_size == (300, 400)
    assert boxes_layer(viewer).mode == "add_rectangle"


def test_export_with_nothing_committed_says_so(ready, viewer, tmp_path, warnings):
    """Image and model ready, a candidate shown but nothing committed: a message, no file."""
    points_layer(viewer).add([[80, 100]])
    assert ready.wait_idle(60) and len(candidates(viewer)) == 3
    assert ready.export_labels(tmp_path / "labels.tif") is None
    assert "Nothing to export" in ready.status_text and any("Nothing to export" in w for w in warnings)
    assert list(tmp_path.iterdir()) == []
