"""The widget on nD images: stacks plane by plane, prefetch, slider safety, propagation,
3D export, large tiled planes and precomputed embedding stores (random-weight tiny SAM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.cli.embed import main as embed_main
from napari_sam.io import read_labels_tiff

from .helpers import add_point, go_to, with_role  # noqa: F401


@pytest.fixture()
def ready(viewer, widget, stack, tiny_checkpoint):
    viewer.add_image(stack, name="stack")
    go_to(viewer, 2)
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(120)
    assert widget.embedding is not None, widget.status_text
    return widget


def test_stack_is_embedded_plane_by_plane_with_prefetch(ready, stack):
    w = ready
    key, emb = w.embedding
    assert key.plane == (2,) and emb.original_size == (96, 128)
    vol = w.planes.volume
    expected = w.model.predictor.compute_embedding(stack[2], vol.contrast_limits)
    assert torch.equal(emb.features, expected.features)
    assert all(vol.cached((z, 0, 0)) is not None for z in range(5))  # neighbours prefetched (radius 2)


def test_annotate_commit_undo_export_3d(ready, viewer, stack, tmp_path):
    w = ready
    add_point(viewer, 48, 56)
    assert w.wait_idle(60)
    cands = with_role(viewer, "candidate")
    assert len(cands) == 3 and all(c.data.shape == (96, 128) for c in cands)
    chosen = next(c for c in cands if c.metadata["napari_sam"]["index"] == w.annotation.object.chosen)
    mask = chosen.data > 0
    assert w.commit()
    (labels,) = with_role(viewer, "labels")
    assert labels.data.shape == (5, 96, 128)
    assert np.array_equal(labels.data[2] > 0, mask) and not labels.data[[0, 1, 3, 4]].any()
    go_to(viewer, 4)
    assert w.wait_idle(60) and w.embedding[0].plane == (4,)
    add_point(viewer, 40, 60)
    assert w.wait_idle(60) and w.commit()
    assert set(np.unique(labels.data[4])) - {0} == {2} and labels.data[2].max() == 1
    assert w.undo() and not labels.data[4].any() and labels.data[2].any()
    assert w.redo() and labels.data[4].max() == 2
    out = w.export_labels(tmp_path / "stack_labels.tif")
    back, _ = read_labels_tiff(out)
    assert back.shape == (5, 96, 128) and np.array_equal(back, labels.data)


def test_slider_move_during_embedding_never_applies_to_the_wrong_plane(ready, viewer, stack):
    w = ready
    w.planes.prefetch_radius = 0
    w.planes.volume.cache.clear()
    go_to(viewer, 0)  # starts embedding plane 0 ...
    go_to(viewer, 3)  # ... and moves on before it finishes
    assert w.wait_idle(120)
    key, emb = w.embedding
    assert key.plane == (3,)
    expected = w.model.predictor.compute_embedding(stack[3], w.planes.volume.contrast_limits)
    assert torch.equal(emb.features, expected.features)
    add_point(viewer, 48, 56)
    assert w.wait_idle(60)
    go_to(viewer, 1)  # candidates of plane 3 never show on plane 1
    assert not with_role(viewer, "candidate")
    assert not len(with_role(viewer, "points")[0].data)


def test_propagate_then_commit_one_id_through_planes(ready, viewer):
    w = ready
    w.planes.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    assert not w.propagate()  # nothing to propagate yet: a message, no traceback
    assert "Propagate needs one object" in w.status_text
    add_point(viewer, 48, 56)
    assert w.wait_idle(60)
    assert w.propagate()
    assert w.wait_idle(120)
    (prop,) = with_role(viewer, "propagated")
    planes = w.annotation.propagated
    assert set(planes) == {(z,) for z in range(5)}
    assert "Propagated through 5 planes" in w.status_text
    assert w.commit()
    (labels,) = with_role(viewer, "labels")
    for (z,), mask in planes.items():
        assert np.array_equal(labels.data[z] == 1, mask)
    assert set(np.unique(labels.data)) <= {0, 1}
    assert not with_role(viewer, "propagated")
    assert w.undo() and not labels.data.any()


def test_large_plane_is_tiled_and_embedded_where_clicked(viewer, widget, tiny_checkpoint):
    rng = np.random.default_rng(12)
    image = rng.integers(0, 255, (2200, 300), dtype=np.uint8)
    viewer.add_image(image, name="tall")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    vol = widget.planes.volume
    assert vol.layout is not None and vol.index_shape == (3, 1)
    assert "tiles are embedded where you click" in widget.status_text
    assert not vol.cache.keys()  # nothing embedded before a prompt
    add_point(viewer, 1500, 150)
    assert widget.wait_idle(60)
    assert vol.cache.keys() == [(1, 0)]
    cands = with_role(viewer, "candidate")
    assert len(cands) == 3
    r0 = vol.window((1, 0))[0]
    assert cands[0].translate[0] == pytest.approx(r0) and cands[0].data.shape == (1024 + 2 * 128, 300)
    chosen = widget.annotation.object.chosen_candidate
    assert widget.commit()
    (labels,) = with_role(viewer, "labels")
    assert labels.data.shape == (2200, 300)
    assert np.array_equal(labels.data[r0:r0 + chosen.mask.shape[0]] > 0, chosen.mask > 0)
    assert not labels.data[:r0].any()


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_reuses_a_store_made_with_cli_defaults(viewer, widget, stack, tiny_checkpoint, tmp_path, dtype,
                                               count_embeddings, monkeypatch):
    """`napari-sam embed` with default settings, then the widget opens the store with its
    button: no plane is embedded again, the store's contrast limits are used (and said)."""
    import tifffile

    from napari_sam.engine import EmbeddingStore
    from napari_sam.widgets import planes as planes_module

    data = (stack // 16).astype(np.uint8) if dtype == "uint8" else stack
    path, store = tmp_path / "stack.tif", tmp_path / "stack.zarr"
    tifffile.imwrite(path, data)
    assert embed_main([str(path), "--model", str(tiny_checkpoint), "--out", str(store), "--device", "cpu"]) == 0
    stored = EmbeddingStore(store).info.normalisation
    assert stored.contrast_limits == (None if dtype == "uint8" else (float(data.min()), float(data.max())))
    count_embeddings.clear()

    viewer.add_image(data, name="stack", contrast_limits=(0, 200) if dtype == "uint8" else (100, 2000))
    monkeypatch.setattr(planes_module.QFileDialog, "getExistingDirectory", lambda *a, **k: "")
    widget.ui.open_store.click()  # dialog cancelled: nothing opened
    assert widget.planes.store_path is None
    monkeypatch.setattr(planes_module.QFileDialog, "getExistingDirectory", lambda *a, **k: str(store))
    widget.ui.open_store.click()
    assert widget.planes.store_path == store and "opened for 'stack'" in widget.status_text
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding is not None, widget.status_text
    vol = widget.planes.volume
    assert vol.adopted_limits and vol.contrast_limits == stored.contrast_limits
    limits = "uint8 values as they are" if dtype == "uint8" else f"contrast limits {data.min()}-{data.max()}"
    assert f"embeddings from 'stack.zarr'; {limits} (the store's)" in widget.status_text
    for z in (4, 0, 3):
        go_to(viewer, z)
        assert widget.wait_idle(60) and widget.embedding[0].plane == (z,)
        assert torch.equal(widget.embedding[1].features, EmbeddingStore(store).get((z, 0, 0)).features)
    add_point(viewer, 48, 56)
    assert widget.wait_idle(60) and len(with_role(viewer, "candidate")) == 3
    assert count_embeddings == []  # every plane came from the store (prefetch included)


@pytest.fixture()
def shown_warnings(monkeypatch):
    shown = []
    monkeypatch.setattr("napari_sam.widgets.sam_widget.show_warning", shown.append)
    return shown


def test_refuses_stores_for_other_pixels_model_or_format(viewer, widget, stack, tiny_checkpoint, tmp_path,
                                                        shown_warnings, monkeypatch):
    import tifffile

    from napari_sam.engine import EmbeddingStore
    from napari_sam.engine import volume as volume_module
    from napari_sam.model import build_sam, random_state_dict

    path, store = tmp_path / "stack.tif", tmp_path / "stack.zarr"
    tifffile.imwrite(path, stack)
    assert embed_main([str(path), "--model", str(tiny_checkpoint), "--out", str(store), "--device", "cpu"]) == 0
    hashed, signature = [], volume_module.image_signature
    monkeypatch.setattr(volume_module, "image_signature", lambda *a, **k: hashed.append(1) or signature(*a, **k))
    layer = viewer.add_image(stack + 1, name="stack")  # other pixels
    widget.open_embedding_store(store)
    assert widget.planes.store_path == store and "opened for 'stack'" in widget.status_text
    assert not hashed  # checked when first used
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    assert widget.embedding is not None and widget.embedding[0] == widget.current_key()  # the plane on screen
    assert "was computed for other pixels" in widget.status_text and "failed" not in widget.status_text
    assert len(shown_warnings) == 1 and "not used for 'stack'" in shown_warnings[0]  # once, prefetch included
    vol = widget.planes.volume
    assert vol.store is None and not vol.adopted_limits and vol.contrast_limits == tuple(layer.contrast_limits)
    assert all(vol.cached((z, 0, 0)) is not None for z in range(5))  # prefetched without the store
    assert widget.planes.store_path is None and len(hashed) == 1  # forgotten for the image

    widget.load_model(str(tiny_checkpoint), device="cpu")  # a new volume: the store is not tried again
    assert widget.wait_idle(60) and widget.planes.volume is not vol and widget.embedding is not None
    assert len(hashed) == 1 and len(shown_warnings) == 1
    assert "store" not in widget.status_text

    other = tmp_path / "other.pth"
    model = build_sam("vit_tiny_test")
    torch.save(random_state_dict(model, seed=99), other)
    layer.data = stack  # the right pixels now, but another model
    widget.open_embedding_store(store)
    widget.load_model(str(other), device="cpu")
    assert widget.wait_idle(60) and "other weights" in widget.status_text and widget.embedding is not None
    assert len(shown_warnings) == 2 and widget.planes.store_path is None

    group = EmbeddingStore(store).group
    attrs = dict(group.attrs["napari_sam"])
    group.attrs["napari_sam"] = {**attrs, "format": 99}
    widget.open_embedding_store(store)
    assert "format 99" in widget.status_text and "update napari-sam" in widget.status_text
    widget.open_embedding_store(tmp_path)  # a folder that is no store
    assert "Cannot use" in widget.status_text and "no embedding store" in widget.status_text


def test_a_store_that_cannot_be_written_is_still_used(viewer, widget, stack, tiny_checkpoint, tmp_path,
                                                      shown_warnings, monkeypatch):
    """A shared precomputed store in a read-only folder: its planes are read, missing ones are
    computed and kept in memory, with one warning."""
    import tifffile

    from napari_sam.engine import EmbeddingStore

    path, store = tmp_path / "stack.tif", tmp_path / "stack.zarr"
    tifffile.imwrite(path, stack)
    assert embed_main([str(path), "--model", str(tiny_checkpoint), "--out", str(store), "--device", "cpu"]) == 0
    EmbeddingStore(store).group["done"][1:4] = False  # only planes 0 and 4 in the store
    tried = []

    def refuse(self, index, embedding):
        tried.append(index)
        raise PermissionError(13, "Permission denied", str(store))

    monkeypatch.setattr(EmbeddingStore, "put", refuse)
    viewer.add_image(stack, name="stack")
    go_to(viewer, 2)
    widget.open_embedding_store(store)
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    assert widget.embedding is not None and widget.embedding[0].plane == (2,), widget.status_text
    vol = widget.planes.volume
    assert vol.store is not None and isinstance(vol.store_write_error, PermissionError)
    assert "not writable: new embeddings kept in memory" in widget.status_text
    assert len(shown_warnings) == 1 and "Cannot write to embedding store 'stack.zarr'" in shown_warnings[0]
    assert len(tried) == 1  # not retried after the first failure
    assert all(vol.cached((z, 0, 0)) is not None for z in range(5))  # prefetch went on in memory
    go_to(viewer, 3)
    assert widget.wait_idle(60) and widget.embedding[0].plane == (3,)
    assert len(shown_warnings) == 1 and widget.planes.store_path == store  # still used


def test_cancel_during_propagation(ready, viewer, qtbot):
    import threading

    w = ready
    w.planes.propagation = {"min_score": -1e9, "min_overlap": 0.0, "min_area": 0}
    add_point(viewer, 48, 56)
    assert w.wait_idle(60)
    vol = w.planes.volume
    gate, calls, original = threading.Event(), [], vol.embedding

    def held(item, cancel=None):  # the first plane waits until the test has pressed Cancel
        calls.append(item)
        assert gate.wait(30)
        return original(item, cancel=cancel)

    vol.embedding = held
    assert w.propagate() and w.ui.cancel.isEnabled()
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=10_000)
    w.ui.cancel.click()
    gate.set()
    assert w.wait_idle(60)
    assert "propagating cancelled" in w.status_text and not w.ui.cancel.isEnabled()
    assert calls == [(3, 0, 0)]  # it stopped at the next plane: never went further, nor backwards
    assert not with_role(viewer, "propagated") and w.annotation.propagated is None
    assert w.annotation.object.chosen_candidate is not None  # the object is kept
    del vol.embedding
    assert w.propagate() and w.wait_idle(120) and len(w.annotation.propagated) == 5
