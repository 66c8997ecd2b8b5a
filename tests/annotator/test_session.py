"""The annotation session end to end, without Qt (random-weight tiny SAM, synchronous executor):
prompts -> candidates -> choice -> commit -> undo/redo -> export, refinement, boxes, targets.
(Moved from the widget tests; the view's drawing of the same is in tests/widgets/.)"""

from __future__ import annotations

import re

import numpy as np

from napari_sam.annotator import ArrayLabels, ImageSource
from napari_sam.io import read_labels_tiff

from .helpers import chosen_mask, record_predict_calls


def test_end_to_end_point_three_candidates_commit_undo_redo_export(ready, prompts, tmp_path):
    s = ready
    cleared = []
    s.events.prompts_cleared.connect(lambda: cleared.append(1))
    prompts.add(80, 100)
    cands = s.object.candidates
    assert len(cands) == 3
    assert [c.index for c in cands] == [0, 1, 2]
    ious = [c.iou for c in cands]
    assert all(isinstance(v, float) for v in ious) and ious == sorted(ious, reverse=True)
    for k, (cand, iou) in enumerate(zip(cands, ious)):
        assert cand.name == f"SAM mask {k + 1} · IoU {iou:.2f}"
        assert re.fullmatch(r"SAM mask \d · IoU -?\d\.\d\d", cand.name)
        assert cand.mask.shape == (300, 400)
    assert s.object.chosen == 0  # best one chosen (the view highlights it)

    assert s.select(2)
    assert s.object.chosen == 2
    chosen = cands[2].mask > 0
    assert chosen.any()
    assert s.commit()
    labels = s.labels.target
    assert labels.name == "SAM labels"
    assert np.array_equal(labels.data, chosen.astype(labels.data.dtype))
    assert not s.object.candidates and cleared and not prompts.points

    assert s.undo()
    assert not labels.data.any()
    assert s.redo()
    assert np.array_equal(labels.data, chosen.astype(labels.data.dtype))
    assert not s.redo() and "Nothing to redo" in s.status_text

    out = s.export(tmp_path / "labels.tif")
    assert out is not None
    data, meta = read_labels_tiff(out)
    assert data.dtype == np.uint8 and np.array_equal(data, labels.data)
    assert meta["scale"] == [0.5, 0.5]


def test_second_object_gets_next_id_and_keeps_the_first(ready, prompts):
    s = ready
    prompts.add(80, 100)
    assert s.commit()
    labels = s.labels.target
    first = labels.data.copy()
    prompts.add(200, 300)
    new = chosen_mask(s)
    assert s.commit()
    assert set(np.unique(labels.data)) <= {0, 1, 2}
    assert np.array_equal(labels.data[first == 1], first[first == 1])  # never overwritten
    assert np.array_equal(labels.data == 2, new & (first == 0))


def test_refinement_feeds_chosen_logits_and_resets_between_objects(ready, prompts, monkeypatch):
    s = ready
    calls = record_predict_calls(s, monkeypatch)
    prompts.add(80, 100)
    assert calls[-1]["mask_input"] is None and calls[-1]["multimask"] is True
    s.select(1)
    expected = s.object.get(1).logits
    prompts.add(90, 110)
    assert calls[-1]["multimask"] is False
    np.testing.assert_array_equal(calls[-1]["mask_input"], expected[None])
    assert len(s.object.candidates) == 1  # several prompts: SAM's single mask

    assert s.commit()
    prompts.add(200, 300)
    assert calls[-1]["mask_input"] is None  # nothing leaks from the committed object

    prompts.add(210, 300)
    assert calls[-1]["mask_input"] is not None
    s.clear()
    prompts.add(220, 90)
    assert calls[-1]["mask_input"] is None  # nor from a cleared one


def test_commands_behind_the_keys(ready, prompts):
    """What the keys 1/2/3, Esc, C, Ctrl+Z, Ctrl+Shift+Z and N do (the view binds them)."""
    s = ready
    prompts.add(80, 100)
    s.select(2)
    assert s.object.chosen == 2
    s.select(1)
    assert s.object.chosen == 1
    s.clear()
    assert not s.object.candidates and not prompts.points
    prompts.add(80, 100)
    s.commit()
    labels = s.labels.target
    assert labels.data.max() == 1
    s.undo()
    assert labels.data.max() == 0
    s.redo()
    assert labels.data.max() == 1
    s.set_polarity(not s.positive)
    assert not s.positive
    prompts.add(5, 5)
    assert prompts.positive == [False]


def test_negative_points_are_sent_as_label_0(ready, prompts, monkeypatch):
    calls = record_predict_calls(ready, monkeypatch)
    prompts.add(80, 100)
    prompts.add(60, 60, positive=False)
    prompts.add(90, 95)
    assert calls[-1]["labels"].tolist() == [1, 0, 1]
    polarities = []
    ready.events.polarity.connect(polarities.append)
    ready.set_polarity(False)
    assert not ready.positive and polarities == [False] and "negative" in ready.status_text


def test_several_boxes_are_several_objects(ready, prompts):
    s = ready
    prompts.boxes(((40, 60), (120, 140)), ((150, 250), (260, 350)))
    (cand,) = s.object.candidates
    assert cand.index == 0 and len(cand.ious) == 2
    assert set(np.unique(cand.mask)) <= {0, 1, 2}
    assert s.commit()
    assert set(np.unique(s.labels.target.data)) - {0} == {1, 2}
    assert not prompts.shapes
    assert "Committed objects 1, 2" in s.status_text


def test_points_and_one_box_are_one_object(ready, prompts, monkeypatch):
    calls = record_predict_calls(ready, monkeypatch)
    prompts.box((40, 60), (120, 140))
    prompts.add(80, 100)
    assert calls[-1]["box"].tolist() == [40, 60, 120, 140] and calls[-1]["points"].tolist() == [[80, 100]]
    assert len(ready.object.candidates) == 1


def test_prompts_before_the_model_are_decoded_when_the_embedding_is_ready(session, prompts, rgb_image,
                                                                          tiny_checkpoint):
    session.set_image(ImageSource(rgb_image, rgb=True, name="discs"))
    prompts.add(80, 100)
    assert "No model" in session.status_text
    session.load_model(str(tiny_checkpoint), device="cpu")
    assert len(session.object.candidates) == 3


def test_commit_keeps_existing_labels_unless_overwrite(ready, prompts):
    s = ready
    existing = np.zeros((300, 400), np.uint16)
    existing[:, :200] = 7
    manual = ArrayLabels(existing.copy(), "manual")
    s.set_target(manual)
    prompts.box((20, 150), (200, 300))
    mask = chosen_mask(s)
    assert (mask[:, :200]).any() and (mask[:, 200:]).any()
    assert s.commit()
    assert np.array_equal(manual.data[:, :200], existing[:, :200])
    assert np.array_equal(manual.data[:, 200:] == 8, mask[:, 200:])

    s.labels.overwrite = True
    prompts.box((20, 150), (200, 300))
    mask = chosen_mask(s)
    assert s.commit()
    assert np.array_equal(manual.data == 9, mask)


def test_commit_that_paints_nothing_says_so(ready, prompts):
    s = ready
    s.set_target(ArrayLabels(np.ones((300, 400), np.uint8), "full"))
    prompts.add(80, 100)
    assert not s.commit()
    assert "Nothing was painted" in s.status_text
    assert len(s.object.candidates) == 3  # the object is kept to try again


def test_a_target_of_another_shape_is_not_written(ready, prompts):
    """A target chosen for another image: the commit goes to a new labels array."""
    s = ready
    small = ArrayLabels(np.zeros((50, 60), np.uint32), "small")
    s.set_target(small)
    prompts.add(80, 100)
    assert s.commit()
    assert not small.data.any() and s.labels.target is not small and s.labels.target.data.shape == (300, 400)


def test_switching_image_resets_refinement(ready, prompts, monkeypatch):
    s = ready
    calls = record_predict_calls(s, monkeypatch)
    prompts.add(80, 100)
    s.set_image(ImageSource(np.zeros((300, 400), np.uint8), name="other"))
    assert not s.object.candidates and not prompts.points
    prompts.add(80, 100)
    assert calls[-1]["mask_input"] is None and len(s.object.candidates) == 3


def test_switching_back_keeps_the_image_identity(ready, prompts):
    s = ready
    discs = s.image
    key = s.current_key()
    s.set_image(ImageSource(np.zeros((30, 40), np.uint8), name="other"))
    assert s.current_key().layer_id != key.layer_id
    s.set_image(discs)
    assert s.current_key() == key and s.embedding[0] == key
    prompts.add(80, 100)
    assert len(s.object.candidates) == 3


def test_events_announce_what_the_view_draws(ready, prompts):
    s = ready
    seen = []
    for name in ("candidates", "chosen", "prompts_cleared", "labels"):
        getattr(s.events, name).connect(lambda *args, name=name: seen.append(name))
    prompts.add(80, 100)
    s.select(1)
    s.commit()
    assert seen[:2] == ["candidates", "chosen"] and "labels" in seen and "prompts_cleared" in seen
    flat_written = []
    s.events.labels.connect(lambda target, flat: flat_written.append(flat.size))
    s.undo()
    assert flat_written and flat_written[0] == int(np.count_nonzero(s.history.undone[-1].after))

