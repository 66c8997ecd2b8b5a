"""The session on nD images: stacks plane by plane, prefetch, slider safety, propagation,
3D export, large tiled planes and precomputed embedding stores (random-weight tiny SAM).
(Moved from the widget tests.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.annotator import ImageSource, Session, SyncExecutor
from napari_sam.cli.embed import main as embed_main
from napari_sam.io import read_labels_tiff

from .helpers import Prompts


def test_stack_is_embedded_plane_by_plane_with_prefetch(ready_stack, stack):
    s = ready_stack
    key, emb = s.embedding
    assert key.plane == (2,) and emb.original_size == (96, 128)
    vol = s.volume
    expected = s.model.predictor.compute_embedding(stack[2], vol.contrast_limits)
    assert torch.equal(emb.features, expected.features)
    assert all(vol.cached((z, 0, 0)) is not None for z in range(5))  # neighbours prefetched (radius 2)


def test_annotate_commit_undo_export_3d(ready_stack, prompts, tmp_path):
    s = ready_stack
    prompts.add(48, 56)
    cands = s.object.candidates
    assert len(cands) == 3 and all(c.mask.shape == (96, 128) for c in cands)
    mask = s.object.chosen_candidate.mask > 0
    assert s.commit()
    labels = s.labels.target.data
    assert labels.shape == (5, 96, 128)
    assert np.array_equal(labels[2] > 0, mask) and not labels[[0, 1, 3, 4]].any()
    s.set_position((4,))
    assert s.embedding[0].plane == (4,)
    prompts.add(40, 60)
    assert s.commit() and "at plane 4" in s.status_text
    assert set(np.unique(labels[4])) - {0} == {2} and labels[2].max() == 1
    assert s.undo() and not labels[4].any() and labels[2].any()
    assert s.redo() and labels[4].max() == 2
    out = s.export(tmp_path / "stack_labels.tif")
    back, _ = read_labels_tiff(out)
    assert back.shape == (5, 96, 128) and np.array_equal(back, labels)


def test_slider_move_during_embedding_never_applies_to_the_wrong_plane(stack, tiny_checkpoint):
    executor = SyncExecutor(deferred=True)
    s = Session(executor)
    prompts = Prompts(s)
    s.settings.prefetch_radius = 0
    s.set_image(ImageSource(stack, name="stack"))
    s.load_model(str(tiny_checkpoint), device="cpu")
    executor.run_all()
    s.set_position((3,))  # plane 0 was being embedded ...
    executor.run_all()  # ... and finishes after the move: dropped
    key, emb = s.embedding
    assert key.plane == (3,)
    expected = s.model.predictor.compute_embedding(stack[3], s.volume.contrast_limits)
    assert torch.equal(emb.features, expected.features)
    prompts.add(48, 56)
    executor.run_all()
    assert len(s.object.candidates) == 3
    s.set_position((1,))  # candidates of plane 3 never show on plane 1
    executor.run_all()
    assert not s.object.candidates and not prompts.points


def test_propagate_then_commit_one_id_through_planes(ready_stack, prompts):
    s = ready_stack
    s.settings.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    assert not s.propagate()  # nothing to propagate yet: a message, no traceback
    assert "Propagate needs one object" in s.status_text
    prompts.add(48, 56)
    shown = []
    s.events.object_planes.connect(lambda planes: shown.append(planes))
    assert s.propagate()
    assert [p for p in shown if p] == [((3,),), ((4,),), ((1,),), ((0,),)]  # one plane at a time, live
    planes = s.propagated
    assert set(planes) == {(z,) for z in range(5)}
    assert "Propagated through 5 planes" in s.status_text
    assert s.commit()
    labels = s.labels.target.data
    for (z,), mask in planes.items():
        assert np.array_equal(labels[z] == 1, mask)
    assert set(np.unique(labels)) <= {0, 1}
    assert s.propagated is None and shown[-1] == ()
    assert "on 5 planes" in s.status_text
    assert s.undo() and not labels.any()


def test_large_plane_is_tiled_and_embedded_where_clicked(session, prompts, tiny_checkpoint):
    rng = np.random.default_rng(12)
    session.set_image(ImageSource(rng.integers(0, 255, (2200, 300), dtype=np.uint8), name="tall"))
    session.load_model(str(tiny_checkpoint), device="cpu")
    vol = session.volume
    assert vol.layout is not None and vol.index_shape == (3, 1)
    assert "tiles are embedded where you click" in session.status_text
    assert not vol.cache.keys()  # nothing embedded before a prompt
    prompts.add(1500, 150)
    assert vol.cache.keys() == [(1, 0)]
    cands = session.object.candidates
    assert len(cands) == 3
    r0 = vol.window((1, 0))[0]
    assert cands[0].offset[0] == pytest.approx(r0) and cands[0].mask.shape == (1024 + 2 * 128, 300)
    chosen = session.object.chosen_candidate
    assert session.commit()
    labels = session.labels.target.data
    assert labels.shape == (2200, 300)
    assert np.array_equal(labels[r0:r0 + chosen.mask.shape[0]] > 0, chosen.mask > 0)
    assert not labels[:r0].any()


def _store_of(path, data, store, checkpoint, *extra):
    import tifffile

    if path.suffix == ".npy":
        np.save(path, data)
    else:
        tifffile.imwrite(path, data)
    assert embed_main([str(path), "--model", str(checkpoint), "--out", str(store), "--device", "cpu", *extra]) == 0


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_reuses_a_store_made_with_cli_defaults(session, prompts, stack, tiny_checkpoint, tmp_path, dtype,
                                               count_embeddings):
    """`napari-sam embed` with default settings, then the session opens the store: no plane is
    embedded again, the store's contrast limits are used (and said)."""
    from napari_sam.engine import EmbeddingStore

    data = (stack // 16).astype(np.uint8) if dtype == "uint8" else stack
    store = tmp_path / "stack.zarr"
    _store_of(tmp_path / "stack.tif", data, store, tiny_checkpoint)
    stored = EmbeddingStore(store).info.normalisation
    assert stored.contrast_limits == (None if dtype == "uint8" else (float(data.min()), float(data.max())))
    count_embeddings.clear()

    session.set_image(ImageSource(data, name="stack", contrast_limits=(0, 200) if dtype == "uint8" else (100, 2000)))
    assert session.open_store(store)
    assert session.embeddings.store_path(session.image) == store and "opened for 'stack'" in session.status_text
    session.load_model(str(tiny_checkpoint), device="cpu")
    assert session.embedding is not None, session.status_text
    vol = session.volume
    assert vol.adopted_limits and vol.contrast_limits == stored.contrast_limits
    limits = "uint8 values as they are" if dtype == "uint8" else f"contrast limits {data.min()}-{data.max()}"
    assert f"embeddings from 'stack.zarr'; {limits} (the store's)" in session.status_text
    for z in (4, 0, 3):
        session.set_position((z,))
        assert session.embedding[0].plane == (z,)
        assert torch.equal(session.embedding[1].features, EmbeddingStore(store).get((z, 0, 0)).features)
    prompts.add(48, 56)
    assert len(session.object.candidates) == 3
    assert count_embeddings == []  # every plane came from the store (prefetch included)


def test_refuses_stores_for_other_pixels_model_or_format(session, said, stack, tiny_checkpoint, tmp_path,
                                                        monkeypatch):
    from napari_sam.engine import EmbeddingStore
    from napari_sam.engine import volume as volume_module
    from napari_sam.model import build_sam, random_state_dict

    store = tmp_path / "stack.zarr"
    _store_of(tmp_path / "stack.tif", stack, store, tiny_checkpoint)
    hashed, signature = [], volume_module.image_signature
    monkeypatch.setattr(volume_module, "image_signature", lambda *a, **k: hashed.append(1) or signature(*a, **k))
    other_pixels = stack + 1
    source = ImageSource(other_pixels, name="stack", contrast_limits=(float(other_pixels.min()), float(other_pixels.max())))
    session.set_image(source)
    session.set_position((2,))  # where napari's slider starts
    session.open_store(store)
    assert session.embeddings.store_path(source) == store and "opened for 'stack'" in session.status_text
    assert not hashed  # checked when first used
    session.load_model(str(tiny_checkpoint), device="cpu")
    warnings = lambda: [text for text, warn in said if warn]  # noqa: E731
    assert session.embedding is not None and session.embedding[0] == session.current_key()  # the plane on screen
    assert "was computed for other pixels" in session.status_text and "failed" not in session.status_text
    assert len(warnings()) == 1 and "not used for 'stack'" in warnings()[0]  # once, prefetch included
    vol = session.volume
    assert vol.store is None and not vol.adopted_limits and vol.contrast_limits == source.contrast_limits
    assert all(vol.cached((z, 0, 0)) is not None for z in range(5))  # prefetched without the store
    assert session.embeddings.store_path(source) is None and len(hashed) == 1  # forgotten for the image

    session.load_model(str(tiny_checkpoint), device="cpu")  # a new volume: the store is not tried again
    assert session.volume is not vol and session.embedding is not None
    assert len(hashed) == 1 and len(warnings()) == 1
    assert "store" not in session.status_text

    other = tmp_path / "other.pth"
    torch.save(random_state_dict(build_sam("vit_tiny_test"), seed=99), other)
    source.data = stack  # the right pixels now, but another model
    session.image_changed()
    session.open_store(store)
    session.load_model(str(other), device="cpu")
    assert "other weights" in session.status_text and session.embedding is not None
    assert len(warnings()) == 2 and session.embeddings.store_path(source) is None

    group = EmbeddingStore(store).group
    group.attrs["napari_sam"] = {**dict(group.attrs["napari_sam"]), "format": 99}
    session.open_store(store)
    assert "format 99" in session.status_text and "update napari-sam" in session.status_text
    session.open_store(tmp_path)  # a folder that is no store
    assert "Cannot use" in session.status_text and "no embedding store" in session.status_text


def test_a_store_that_cannot_be_written_is_still_used(session, said, stack, tiny_checkpoint, tmp_path, monkeypatch):
    """A shared precomputed store in a read-only folder: its planes are read, missing ones are
    computed and kept in memory, with one warning."""
    from napari_sam.engine import EmbeddingStore

    store = tmp_path / "stack.zarr"
    _store_of(tmp_path / "stack.tif", stack, store, tiny_checkpoint)
    EmbeddingStore(store).group["done"][1:4] = False  # only planes 0 and 4 in the store
    tried = []

    def refuse(self, index, embedding):
        tried.append(index)
        raise PermissionError(13, "Permission denied", str(store))

    monkeypatch.setattr(EmbeddingStore, "put", refuse)
    session.set_image(ImageSource(stack, name="stack"))
    session.set_position((2,))
    session.open_store(store)
    session.load_model(str(tiny_checkpoint), device="cpu")
    warnings = [text for text, warn in said if warn]
    assert session.embedding is not None and session.embedding[0].plane == (2,), session.status_text
    vol = session.volume
    assert vol.store is not None and isinstance(vol.store_write_error, PermissionError)
    assert "not writable: new embeddings kept in memory" in session.status_text
    assert len(warnings) == 1 and "Cannot write to embedding store 'stack.zarr'" in warnings[0]
    assert len(tried) == 1  # not retried after the first failure
    assert all(vol.cached((z, 0, 0)) is not None for z in range(5))  # prefetch went on in memory
    session.set_position((3,))
    assert session.embedding[0].plane == (3,)
    assert len([t for t, w in said if w]) == 1 and session.embeddings.store_path(session.image) == store  # still used


def test_cancel_during_propagation(ready_stack, prompts):
    s = ready_stack
    s.settings.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    prompts.add(48, 56)
    vol = s.volume
    calls, original, busy = [], vol.embedding, []
    s.events.busy.connect(busy.append)

    def held(item, cancel=None):  # the user presses Cancel while the first plane is embedded
        calls.append(item)
        if len(calls) == 1:
            assert s.slots.running("job")
            s.cancel()
        return original(item, cancel=cancel)

    vol.embedding = held
    assert s.propagate()
    assert "propagating cancelled" in s.status_text and busy == [True, False]
    assert calls == [(3, 0, 0)]  # it stopped at the next plane: never went further, nor backwards
    assert s.propagated is None and not s.object.planes
    assert s.object.chosen_candidate is not None  # the object is kept
    del vol.embedding
    assert s.propagate() and len(s.propagated) == 5
