"""*Segment everything* in the session (random-weight tiny SAM): a job whose label image goes
to a new layer (``new_labels``). Random weights give masks that rarely pass SAM's filters, so
runs switch them off (``OPEN``) and compare with a direct ``generate_masks`` call on the same
embedding. (Moved from the widget tests.)"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.annotator import ImageSource, Session, SyncExecutor
from napari_sam.engine import GeneratorSettings, generate_masks, masks_to_labels

OPEN = dict(points_per_side=4, pred_iou_thresh=-1, stability_score_thresh=0, box_nms_thresh=1.0)


def expected_labels(s, **params):
    key, emb = s.embedding
    masks = generate_masks(emb, model=s.model.predictor, **params)
    return masks_to_labels(masks, shape=tuple(emb.original_size))


@pytest.fixture()
def new_labels(session):
    out = []
    session.events.new_labels.connect(lambda name, data: out.append((name, data)))
    return out


def test_new_label_image_matches_generate_masks_and_commits_are_untouched(ready, prompts, new_labels):
    s = ready
    prompts.add(80, 100)
    assert s.commit()
    committed = s.labels.target
    before = committed.data.copy()

    assert s.segment_everything(**OPEN)
    ((name, data),) = new_labels
    assert name == "SAM everything"
    assert data.shape == (300, 400) and data.dtype == np.uint32
    expected = expected_labels(s, **OPEN)
    assert expected.max() > 0
    np.testing.assert_array_equal(data, expected)
    assert "Segment everything" in s.status_text and "objects" in s.status_text
    np.testing.assert_array_equal(committed.data, before)  # committed labels untouched
    assert s.labels.target is committed  # commits still go where they went


def test_settings_and_auto_points_follow_the_device(ready):
    s = ready
    assert s.settings.everything.points_per_side == 0 and s.everything_params()["points_per_side"] == 16  # CPU
    assert s.everything_params()["pred_iou_thresh"] == pytest.approx(0.88)
    s.settings.everything = s.settings.everything.with_values(points_per_side=3)
    assert s.everything_params(box_nms_thresh=1.0)["points_per_side"] == 3
    assert set(s.everything_params()) == set(GeneratorSettings.names())
    with pytest.raises(TypeError, match="points"):
        s.segment_everything(points=4)


def test_crop_layers(ready, new_labels, rgb_image):
    s = ready
    params = {**OPEN, "points_per_side": 2, "crop_n_layers": 1}
    assert s.segment_everything(**params)
    ((_, data),) = new_labels
    pred = s.model.predictor
    pred.set_image(rgb_image)
    masks = generate_masks(pred, **params)
    np.testing.assert_array_equal(data, masks_to_labels(masks, shape=(300, 400)))


def test_cancel_gives_no_label_image(rgb_image, tiny_checkpoint):
    executor = SyncExecutor(deferred=True)
    s = Session(executor)
    s.set_image(ImageSource(rgb_image, rgb=True, name="discs"))
    s.load_model(str(tiny_checkpoint), device="cpu")
    executor.run_all()
    out, busy = [], []
    s.events.new_labels.connect(lambda *a: out.append(a))
    s.events.busy.connect(busy.append)
    assert s.segment_everything(**{**OPEN, "points_per_side": 32})
    assert busy == [True]
    s.cancel()
    executor.run_all()
    assert not out and "cancelled" in s.status_text and busy == [True, False]


def test_no_image_or_no_model_gives_a_message(session, new_labels, rgb_image):
    assert not session.segment_everything() and "needs an image" in session.status_text
    session.set_image(ImageSource(rgb_image, rgb=True))
    assert not session.segment_everything() and "Load model" in session.status_text
    assert not new_labels


def test_nd_fills_only_the_current_plane_and_a_moved_slider_discards(stack, tiny_checkpoint):
    executor = SyncExecutor(deferred=True)
    s = Session(executor)
    out = []
    s.events.new_labels.connect(lambda name, data: out.append(data))
    s.set_image(ImageSource(stack, name="stack"))
    s.set_position((2,))
    s.load_model(str(tiny_checkpoint), device="cpu")
    executor.run_all()
    assert s.segment_everything(**OPEN)
    s.set_position((3,))  # computed for plane 2: must not land anywhere
    executor.run_all()
    assert not out and "discarded" in s.status_text

    s.set_position((2,))
    executor.run_all()
    assert s.segment_everything(**OPEN)
    executor.run_all()
    (data,) = out
    assert data.shape == stack.shape
    np.testing.assert_array_equal(data[2], expected_labels(s, **OPEN))
    assert not data[[0, 1, 3, 4]].any()


def test_tiled_planes_are_refused(session, tiny_checkpoint):
    session.set_image(ImageSource(np.zeros((2600, 300), np.uint8), name="wide"))
    session.load_model(str(tiny_checkpoint), device="cpu")
    assert not session.segment_everything(**OPEN) and "tiled" in session.status_text
