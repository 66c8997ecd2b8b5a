"""*Segment everything* in the widget (random-weight tiny SAM, headless viewer).

Random weights give masks that rarely pass SAM's filters, so runs switch them off
(``OPEN``) and compare the new layer with a direct ``generate_masks`` call on the same embedding.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.engine import generate_masks, masks_to_labels

from .helpers import go_to, points_layer, with_role

OPEN = dict(points_per_side=4, pred_iou_thresh=-1, stability_score_thresh=0, box_nms_thresh=1.0)


def everything_layers(viewer):
    return [lay for lay in viewer.layers if lay.name.startswith("SAM everything")]


def expected_labels(w, **params):
    key, emb = w.embedding
    masks = generate_masks(emb, model=w.model.predictor, **params)
    return masks_to_labels(masks, shape=tuple(emb.original_size))


@pytest.fixture()
def ready(viewer, widget, rgb_image, tiny_checkpoint):
    viewer.add_image(rgb_image, name="discs", scale=(0.5, 0.5), translate=(3, 4))
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding is not None, widget.status_text
    return widget


def test_new_labels_layer_matches_generate_masks_and_commits_are_untouched(ready, viewer):
    w = ready
    points_layer(viewer).add([[80, 100]])
    assert w.wait_idle(60) and w.commit()
    (committed,) = with_role(viewer, "labels")
    before = committed.data.copy()

    assert w.segment_everything(**OPEN)
    assert w.wait_idle(60), w.status_text
    (layer,) = everything_layers(viewer)
    assert layer.metadata["napari_sam"] == {"role": "labels"}
    assert layer.data.shape == (300, 400) and layer.data.dtype == np.uint32
    assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (3, 4)
    expected = expected_labels(w, **OPEN)
    assert expected.max() > 0
    np.testing.assert_array_equal(layer.data, expected)
    assert "Segment everything" in w.status_text and "objects" in w.status_text
    np.testing.assert_array_equal(committed.data, before)  # committed labels untouched
    assert w.ui.labels.currentText() == committed.name  # commits still go where they went


def test_panel_values_are_used_and_auto_points_follow_the_device(ready):
    w = ready
    panel = w.ui.everything
    assert panel.points.value() == 0 and w.everything.params()["points_per_side"] == 16  # CPU: auto is 16
    assert panel.iou.value() == pytest.approx(0.88) and panel.stability.value() == pytest.approx(0.95)
    assert panel.nms.value() == pytest.approx(0.7) and panel.crops.value() == 0 and panel.min_area.value() == 0
    assert not panel.options.isVisibleTo(w)
    panel.toggle.setChecked(True)
    assert panel.options.isVisibleTo(w)
    panel.points.setValue(3)
    assert w.everything.params(box_nms_thresh=1.0)["points_per_side"] == 3
    with pytest.raises(TypeError):
        w.segment_everything(points=4)


def test_crop_layers(ready, viewer):
    w = ready
    params = {**OPEN, "points_per_side": 2, "crop_n_layers": 1}
    assert w.segment_everything(**params)
    assert w.wait_idle(60), w.status_text
    (layer,) = everything_layers(viewer)
    pred = w.model.predictor
    pred.set_image(viewer.layers["discs"].data)
    masks = generate_masks(pred, **params)
    np.testing.assert_array_equal(layer.data, masks_to_labels(masks, shape=(300, 400)))


def test_cancel_adds_no_layer(ready, viewer):
    w = ready
    assert w.segment_everything(**{**OPEN, "points_per_side": 32})
    assert w.ui.cancel.isEnabled()
    w.cancel()
    assert w.wait_idle(60)
    assert not everything_layers(viewer) and "cancelled" in w.status_text
    assert not w.ui.cancel.isEnabled()


def test_no_image_or_no_model_gives_a_message(viewer, widget, rgb_image):
    assert not widget.segment_everything() and "needs an image" in widget.status_text
    viewer.add_image(rgb_image)
    assert widget.wait_idle(10)
    assert not widget.segment_everything() and "Load model" in widget.status_text
    assert not everything_layers(viewer)


def test_nd_fills_only_the_current_plane_and_a_moved_slider_discards(viewer, widget, stack, tiny_checkpoint):
    w = widget
    viewer.add_image(stack, name="stack")
    go_to(viewer, 2)
    w.load_model(str(tiny_checkpoint), device="cpu")
    assert w.wait_idle(120) and w.embedding is not None
    assert w.segment_everything(**OPEN)
    go_to(viewer, 3)  # computed for plane 2: must not land anywhere
    assert w.wait_idle(60)
    assert not everything_layers(viewer) and "discarded" in w.status_text

    go_to(viewer, 2)
    assert w.wait_idle(60) and w.embedding is not None
    assert w.segment_everything(**OPEN)
    assert w.wait_idle(60), w.status_text
    (layer,) = everything_layers(viewer)
    assert layer.data.shape == stack.shape and layer.metadata["napari_sam"]["role"] == "labels"
    np.testing.assert_array_equal(layer.data[2], expected_labels(w, **OPEN))
    assert not layer.data[[0, 1, 3, 4]].any()


def test_tiled_planes_are_refused(viewer, widget, tiny_checkpoint):
    viewer.add_image(np.zeros((2600, 300), np.uint8), name="wide")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    assert not widget.segment_everything(**OPEN) and "tiled" in widget.status_text
