"""engine.Tracker: API, lazy frames, bounded memory, cancel, stores, errors (our side only;
the parity with Meta's predictor is in test_tracker_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine import Cancelled, EmbeddingCache, EmbeddingStore, Predictor, Tracker, TrackResult, memory_bank
from napari_sam.engine.memory_bank import KEEP_WITHIN, MAX_POINTERS, NUM_MASKMEM
from tests.synthetic import moving_discs


class CountingFrames:
    """A read-only array-like that records which frames are read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.reads = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, index):
        self.reads.append(index[0] if isinstance(index, tuple) else index)
        return self.data[index]


@pytest.fixture()
def predictor(sam2_model):
    return Predictor(sam2_model, "cpu")


@pytest.fixture(scope="module")
def frames():
    return moving_discs(6)


def test_prompt_and_propagate_results(predictor, frames):
    t = Tracker(predictor, frames)
    r = t.add_prompt(0, 7, points=np.array([[80.0, 100.0]]))
    assert isinstance(r, TrackResult) and r.frame == 0 and list(r.masks) == [7]
    assert r.masks[7].shape == (300, 400) and r.masks[7].dtype == bool and r.masks[7].any()
    assert isinstance(r.scores[7], float) and 0 < r.scores[7] < 1 and isinstance(r.object_scores[7], float)
    assert r.logits[7].shape == (64, 64)
    r2 = t.add_prompt(1, "b", box=np.array([140.0, 230.0, 250.0, 340.0]))
    assert list(r2.masks) == ["b"]  # object 7 has no output on frame 1 yet
    results = list(t.propagate())
    assert [r.frame for r in results] == list(range(6))
    assert all(set(r.masks) == {7, "b"} for r in results)
    assert np.array_equal(results[0].masks[7], r.masks[7])  # a prompted frame gives its prompted output
    assert [r.frame for r in t.propagate(start=4, reverse=True)] == [4, 3, 2, 1, 0]
    assert [r.frame for r in t.propagate(start=2, max_frames=2)] == [2, 3]
    assert list(t.propagate(start=0, reverse=True)) == []  # as in Meta's predictor
    t.remove_object(7)
    assert t.object_ids == ["b"] and set(next(t.propagate()).masks) == {"b"}
    t.reset()
    assert t.object_ids == []
    with pytest.raises(RuntimeError, match="add_prompt"):
        list(t.propagate())


def test_frames_are_read_lazily(predictor, frames):
    data = CountingFrames(frames.astype(np.uint16) * 200)
    t = Tracker(predictor, data, contrast_limits=(0.0, 51000.0))
    assert data.reads == []
    t.add_prompt(2, 1, points=np.array([[80.0, 100.0]]))
    assert data.reads == [2]
    list(t.propagate(max_frames=2))
    assert data.reads == [2, 3]  # frame 2 came from the embedding cache


@pytest.mark.parametrize("kind", ["zarr", "dask", "memmap"])
def test_frames_from_any_array_like(predictor, frames, kind, tmp_path):
    data = frames[:3, ..., 0]
    if kind == "zarr":
        import zarr

        z = zarr.open_array(str(tmp_path / "f.zarr"), mode="w", shape=data.shape, chunks=(1, 300, 400), dtype="uint8")
        z[:] = data
        stack = zarr.open_array(str(tmp_path / "f.zarr"), mode="r")
    elif kind == "dask":
        import dask.array as da

        stack = da.from_array(data, chunks=(1, 300, 400))
    else:
        stack = np.memmap(tmp_path / "f.raw", dtype=np.uint8, mode="w+", shape=data.shape)
        stack[:] = data
    t = Tracker(predictor, stack)
    first = t.add_prompt(0, 1, points=np.array([[80.0, 100.0]]))
    plain = Tracker(predictor, data).add_prompt(0, 1, points=np.array([[80.0, 100.0]]))
    assert np.array_equal(first.logits[1], plain.logits[1])
    assert [r.frame for r in t.propagate()] == [0, 1, 2]


def test_history_is_bounded(predictor, monkeypatch):
    """Tracked frames' outputs are kept only near the last decoded frame (prompted frames' always),
    memories in bf16, embeddings in the bounded cache."""
    monkeypatch.setattr(memory_bank, "KEEP_WITHIN", 3)
    frames = np.repeat(moving_discs(1), 9, axis=0)
    t = Tracker(predictor, frames, cache=EmbeddingCache(max_mib=10))
    t.add_prompt(0, 1, points=np.array([[80.0, 100.0]]))
    t.add_prompt(2, 1, points=np.array([[80.0, 100.0]]))
    for r in t.propagate():
        obj = t._objects[1]
        assert sorted(obj.prompted) == [0, 2]
        assert sorted(obj.tracked) == [f for f in range(max(0, r.frame - 3), r.frame + 1) if f not in (0, 2)]
        assert all(e.memory.dtype == torch.bfloat16 for e in obj.tracked.values())
    assert t.volume.cache.nbytes <= 10 * 2**20
    assert KEEP_WITHIN >= max(NUM_MASKMEM, MAX_POINTERS) - 1  # the real window covers every bank


def test_cancel_between_and_inside_frames(predictor, frames):
    t = Tracker(predictor, frames)
    t.add_prompt(0, 1, points=np.array([[80.0, 100.0]]))
    done = []
    with pytest.raises(Cancelled):
        for r in t.propagate(cancel=lambda: len(done) >= 2):
            done.append(r.frame)
    assert done == [0, 1] and t._objects[1].was_tracked(1) and not t._objects[1].was_tracked(2)
    fresh = Tracker(predictor, frames)  # nothing cached: frame 1 is cancelled inside its embedding
    fresh._objects = t._objects
    polls = []
    with pytest.raises(Cancelled):
        list(fresh.propagate(start=1, cancel=lambda: polls.append(1) or len(polls) > 2))
    assert len(polls) == 3  # before the frame, before the encoder, between its first blocks


def test_mask_prompt_and_correction(predictor, frames):
    t = Tracker(predictor, frames)
    mask = np.zeros((300, 400), bool)
    mask[50:120, 60:140] = True
    r = t.add_prompt(0, 1, mask=mask)
    assert r.scores[1] == 1.0 and r.object_scores[1] == 10.0
    assert (r.masks[1] == mask).mean() > 0.99
    list(t.propagate())
    r = t.add_prompt(3, 1, points=np.array([[100.0, 120.0]]))  # a correction on a tracked frame
    assert 3 in t._objects[1].pending
    list(t.propagate(start=3))
    assert sorted(t._objects[1].prompted) == [0, 3]


def test_store_is_written_and_reused(predictor, frames, tmp_path, monkeypatch):
    path = tmp_path / "emb.zarr"
    t = Tracker(predictor, frames, store=path)
    t.add_prompt(0, 1, points=np.array([[80.0, 100.0]]))
    list(t.propagate(max_frames=3))
    store = EmbeddingStore(path)
    assert store.has((2, 0, 0)) and not store.has((3, 0, 0))
    emb = store.get((1, 0, 0))
    assert emb.high_res[0].shape == (1, 32, 64, 64) and emb.high_res[1].shape == (1, 64, 32, 32)
    first = t.add_prompt(1, 2, points=np.array([[200.0, 300.0]]))
    computed = []
    monkeypatch.setattr(predictor, "compute_embedding", lambda *a, **k: computed.append(1))
    again = Tracker(predictor, frames, store=EmbeddingStore(path))
    r = again.add_prompt(1, 2, points=np.array([[200.0, 300.0]]))
    assert computed == [] and np.array_equal(r.logits[2], first.logits[2])


def test_bad_input_is_refused_clearly(predictor, frames, tiny_model):
    with pytest.raises(ValueError, match="SAM 2 model"):
        Tracker(Predictor(tiny_model, "cpu"), frames)
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        Tracker(predictor, frames[0, ..., 0])
    with pytest.raises(ValueError, match="RGB last"):
        Tracker(predictor, np.zeros((3, 20, 20, 5), np.uint8))
    t = Tracker(predictor, frames)
    with pytest.raises(ValueError, match="frame must be a frame index in 0..5"):
        t.add_prompt(6, 1, points=np.array([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="mask alone"):
        t.add_prompt(0, 1, points=np.array([[1.0, 1.0]]), mask=np.zeros((300, 400), bool))
    with pytest.raises(ValueError, match="frame shape"):
        t.add_prompt(0, 1, mask=np.zeros((30, 40), bool))
    with pytest.raises(ValueError, match="labels given without points"):
        t.add_prompt(0, 1, labels=np.array([1]), box=np.array([1.0, 1.0, 9.0, 9.0]))
    with pytest.raises(ValueError, match="degenerate box"):
        t.add_prompt(0, 1, box=np.array([9.0, 1.0, 1.0, 9.0]))
    with pytest.raises(ValueError, match="outside the image"):
        t.add_prompt(0, 1, points=np.array([[400.0, 1.0]]))
    with pytest.raises(ValueError, match="points must be finite"):
        t.add_prompt(0, 1, points=np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="box must be 4 numbers"):
        t.add_prompt(0, 1, box=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="nothing to segment"):
        t.add_prompt(0, 1)
    with pytest.raises(ValueError, match="no object 3"):
        t.remove_object(3)
    t.add_prompt(0, 1, points=np.array([[80.0, 100.0]]))
    with pytest.raises(ValueError, match="max_frames"):
        t.propagate(max_frames=0)
    assert t.object_ids == [1]
