"""Propagation of one object through the planes of a stack (SAM 1, plane by plane)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.engine import Cancelled
from napari_sam.engine.predictor import Prediction
from napari_sam.engine.propagate import PropagationStep, PropagationStop, bounding_box, interior_point, propagate
from napari_sam.engine.volume import VolumeEmbeddings


def test_propagation_through_z(predictor, stack):
    vol = VolumeEmbeddings(stack, predictor)
    start = vol.predict((1,), points=[[48.0, 44.0]], labels=[1], multimask=False)
    mask = np.zeros((96, 128), bool)
    mask[30:66, 25:65] = True  # the object's mask on z=1
    steps = list(propagate(predictor, lambda z: vol.embedding((z, 0, 0)), 1, 4, mask,
                           start.prediction.logits, min_score=-1e9, min_overlap=0.0, min_area=0))
    assert [s.index for s in steps] == [2, 3]
    assert all(isinstance(s, PropagationStep) and s.mask.shape == (96, 128) for s in steps)
    back = list(propagate(predictor, lambda z: vol.embedding((z, 0, 0)), 1, -1, mask,
                          min_score=-1e9, min_overlap=0.0, min_area=0))
    assert [s.index for s in back] == [0]
    stopped = list(propagate(predictor, lambda z: vol.embedding((z, 0, 0)), 1, 4, mask, min_score=1e9))
    assert stopped == [PropagationStop(2, "score")]
    empty = list(propagate(predictor, lambda z: vol.embedding((z, 0, 0)), 1, 4, np.zeros((96, 128), bool)))
    assert empty == [PropagationStop(2, "vanished")]


def test_prompt_helpers():
    mask = np.zeros((50, 60), bool)
    mask[10:30, 20:50] = True
    np.testing.assert_allclose(bounding_box(mask, margin=0.0), [9, 19, 30, 50])
    assert bounding_box(np.zeros((5, 5), bool)) is None
    r, c = interior_point(mask)[0]
    assert 17 <= r <= 22 and 27 <= c <= 42 and mask[int(r), int(c)]



class JumpingPredictor:
    """Decodes every plane to a confident mask far away from the prompt."""

    def __init__(self):
        self.boxes = []

    def predict(self, points, labels, box, mask_input, multimask, embedding):
        self.boxes.append(box)
        mask = np.zeros((1, 50, 60), bool)
        mask[0, 35:48, 45:58] = True
        return Prediction(mask, np.array([0.99], np.float32), np.zeros((1, 256, 256), np.float32))


def test_propagation_stops_on_a_jump():
    mask = np.zeros((50, 60), bool)
    mask[5:15, 5:20] = True
    fake = JumpingPredictor()
    assert list(propagate(fake, lambda i: None, 2, 5, mask)) == [PropagationStop(3, "jump")]
    np.testing.assert_allclose(fake.boxes[0], bounding_box(mask))  # prompted with the previous mask's box
    steps = list(propagate(fake, lambda i: None, 2, 5, mask, min_overlap=0.0))  # jumps allowed
    assert [type(s) for s in steps] == [PropagationStep, PropagationStep] and [s.index for s in steps] == [3, 4]


def test_propagation_cancel(predictor, stack):
    vol = VolumeEmbeddings(stack, predictor)
    mask = np.zeros((96, 128), bool)
    mask[30:66, 25:65] = True
    seen = []

    def embedding_for(z):
        seen.append(z)
        return vol.embedding((z, 0, 0))

    steps = propagate(predictor, embedding_for, 0, 4, mask, cancel=lambda: len(seen) >= 2,
                      min_score=-1e9, min_overlap=0.0, min_area=0)
    assert [next(steps).index, next(steps).index] == [1, 2]
    with pytest.raises(Cancelled):
        next(steps)
    assert seen == [1, 2]  # plane 3 was never embedded
