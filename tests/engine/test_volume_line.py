"""engine.VolumeLine (one line of a volume's embeddings as frames) and the Tracker's hooks for
the annotator: ``volume=`` (embeddings shared, never computed twice) and ``propagate(objects=)``
(one object re-tracked, the others untouched)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine import Predictor, Tracker, VolumeEmbeddings, VolumeLine
from tests.synthetic import cell_centres, two_cells


@pytest.fixture()
def predictor(sam2_model):
    return Predictor(sam2_model, "cpu")


def test_line_frames_are_the_volumes_planes(predictor):
    data = np.stack([two_cells((3,)), two_cells((3,), seed=9)], axis=1)  # (T=3, Z=2, H, W)
    vol = VolumeEmbeddings(data, predictor, contrast_limits=(0.0, 3500.0))
    line = VolumeLine(vol, (1, 1), axis=0)  # z = 1, through t
    assert line.shape == (3, 64, 80) and line.plane_at(2) == (2, 1)
    assert line.frame_of((0, 1)) == 0 and line.frame_of((0, 0)) is None
    emb = line.embedding((2, 0, 0))
    assert vol.cached((2, 1, 0, 0)) is emb and line.cached(2) is emb
    expected = predictor.compute_embedding(data[2, 1], (0.0, 3500.0))
    assert torch.equal(emb.features, expected.features)
    with pytest.raises(ValueError, match="axis 2 is not a leading axis"):
        VolumeLine(vol, (0, 0), axis=2)
    with pytest.raises(ValueError, match="must index the volume's leading axes"):
        VolumeLine(vol, (0,), axis=0)
    big = VolumeEmbeddings(np.zeros((2, 2100, 100), np.uint8), predictor)
    with pytest.raises(ValueError, match="tracking needs whole planes"):
        VolumeLine(big, (0,), axis=0)


def test_tracker_on_a_shared_volume_embeds_nothing_twice(predictor, monkeypatch):
    data = two_cells((4,))
    vol = VolumeEmbeddings(data, predictor, contrast_limits=(0.0, 3500.0))
    vol.precompute()
    point = np.array([cell_centres(0)[0]])
    plain = Tracker(predictor, data, contrast_limits=(0.0, 3500.0))
    expected = [plain.add_prompt(0, 1, points=point).logits[1]] + [r.logits[1] for r in plain.propagate()]
    calls = []
    monkeypatch.setattr(predictor, "compute_embedding", lambda *a, **k: calls.append(1))
    line = VolumeLine(vol, (0,), axis=0)
    shared = Tracker(predictor, line, volume=line)
    got = [shared.add_prompt(0, 1, points=point).logits[1]] + [r.logits[1] for r in shared.propagate()]
    assert calls == [] and all(np.array_equal(a, b) for a, b in zip(got, expected))
    with pytest.raises(ValueError, match="volume= brings its own"):
        Tracker(predictor, line, volume=line, contrast_limits=(0.0, 1.0))


def test_propagating_one_object_leaves_the_others_alone(predictor):
    data = two_cells((5,))
    t = Tracker(predictor, data)
    t.add_prompt(1, "a", points=np.array([cell_centres(1)[0]]))
    t.add_prompt(1, "b", points=np.array([cell_centres(1)[1]]))
    first = {r.frame: r for r in t.propagate(start=1)}
    b_before = {f: e.logits.clone() for f, e in t._objects["b"].tracked.items()}
    t.add_prompt(3, "a", points=np.array([cell_centres(3)[0]]) + 2)  # a correction of "a" on frame 3
    again = list(t.propagate(start=3, objects=["a"]))
    assert [r.frame for r in again] == [3, 4] and all(set(r.masks) == {"a"} for r in again)
    assert not np.array_equal(again[0].logits["a"], first[3].logits["a"])
    assert {f: e.logits for f, e in t._objects["b"].tracked.items()}.keys() == b_before.keys()
    assert all(torch.equal(t._objects["b"].tracked[f].logits, b_before[f]) for f in b_before)
    with pytest.raises(ValueError, match="objects must be ids of tracked objects"):
        t.propagate(objects=["c"])
