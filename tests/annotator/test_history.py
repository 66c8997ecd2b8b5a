"""Pure parts of the session: prompt validation and planning, commits and their history (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.annotator.history import Commit, History, Piece, paint, plan_paint, positions, reapply, revert
from napari_sam.annotator.prompts import collect, plan


def test_undo_and_redo_never_touch_pixels_edited_since():
    labels = np.zeros((6, 6), np.uint16)
    labels[0, :] = 4
    mask = np.zeros((6, 6), bool)
    mask[:3, :3] = True
    commit = Commit("layer", *paint(labels, [mask]), size=labels.size)
    assert commit.ids == (5,) and (labels[0, :3] == 4).all() and (labels[1:3, :3] == 5).all()
    labels[1, 1] = 9  # the user paints over the object afterwards
    assert revert(labels, commit) == 5
    assert labels[1, 1] == 9 and (labels[0] == 4).all() and labels[2, 2] == 0
    labels[2, 2] = 7  # ... and over the emptied area
    assert reapply(labels, commit) == 4
    assert labels[2, 2] == 7 and labels[1, 1] == 9 and labels[1, 0] == 5


def test_paint_overwrite_and_dtype_limit():
    labels = np.full((2, 2), 3, np.uint8)
    flat, *_, ids = paint(labels, [np.ones((2, 2), bool)])
    assert flat.size == 0 and ids == ()
    assert paint(labels, [np.ones((2, 2), bool)], overwrite=True)[3] == (4,)
    full = np.full((2, 2), 255, np.uint8)
    full[0, 0] = 0
    with pytest.raises(ValueError, match="does not fit"):
        paint(full, [np.ones((2, 2), bool)])  # uint8 cannot hold id 256


def test_collect_clips_boxes_and_drops_bad_prompts():
    found = collect(np.array([[5, 5], [50, 5], [5, -3]]), np.array([True, False, True]),
                    [np.array([[-10, -10], [-10, 20], [8, 20], [8, -10]]), np.array([[1, 1], [1.3, 9]]),
                     np.array([[0, 0], [4, 4]])],
                    ["rectangle", "rectangle", "ellipse"], (10, 30))
    assert found.points.tolist() == [[5, 5]] and found.labels.tolist() == [1]
    assert found.boxes.tolist() == [[-0.5, -0.5, 8, 20]]
    assert len(found.problems) == 4  # two points outside, one flat box, one ellipse


def test_plan_rules():
    one = collect(np.array([[5, 5]]), np.array([True]), [], [], (10, 10))
    decode, notes = plan(one, None)
    assert decode.multimask and decode.mask_input is None and not notes
    logits = np.zeros((1, 256, 256), np.float32)
    assert plan(one, logits)[0].mask_input is logits
    two = collect(np.array([[5, 5], [6, 6]]), np.array([True, False]), [], [], (10, 10))
    assert not plan(two, None)[0].multimask
    boxes = collect(np.array([[5, 5]]), np.array([True]),
                    [np.array([[0, 0], [4, 4]]), np.array([[5, 5], [9, 9]])], ["rectangle"] * 2, (10, 10))
    decode, notes = plan(boxes, logits)
    assert decode.several_objects and decode.mask_input is None and "ignored" in notes[0]
    negative = collect(np.array([[5, 5]]), np.array([False]), [], [], (10, 10))
    assert plan(negative, None)[0] is None


def test_one_object_through_planes_and_channels_gets_one_id():
    labels = np.zeros((3, 2, 4, 4), np.uint16)  # (Z, C, Y, X)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    change = plan_paint(labels, [Piece((0, None), mask), Piece((2, None), mask)])
    assert change.ids == (1,) and change.flat.size == 2 * 2 * 4 and not labels.any()  # planned, not written
    assert positions(labels.shape, change.flat, channel_axis=1) == 8  # channel copies counted once
    labels.flat[change.flat] = change.after
    assert np.array_equal(labels[0, 0], mask) and np.array_equal(labels[2, 1], mask) and not labels[1].any()


def test_part_objects_keep_their_number_on_every_plane():
    labels = np.zeros((2, 5, 5), np.uint8)
    ids = np.zeros((5, 5), np.uint8)
    ids[0, :2], ids[4, 3:] = 1, 2
    change = plan_paint(labels, [Piece((0,), ids), Piece((1,), ids)], objects=2)
    labels.flat[change.flat] = change.after
    assert change.ids == (1, 2) and np.array_equal(labels[0], ids) and np.array_equal(labels[1], ids)


def test_history_forgets_a_target():
    history = History()
    a, b = Commit("a", np.zeros(0, int), np.zeros(0), np.zeros(0), (1,)), Commit("b", np.zeros(0, int), np.zeros(0),
                                                                               np.zeros(0), (2,))
    history.push(a)
    history.push(b)
    history.forget_layer("a")
    assert history.done == [b] and history.targets() == ["b"]
