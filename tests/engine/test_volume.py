"""nD images: LRU cache, tiles with halo, on-disk store, on-demand embeddings (propagation: test_propagate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine import Cancelled, ChannelComposite, ChannelSlice, Predictor, StoreInfo
from napari_sam.engine.cache import EmbeddingCache
from napari_sam.engine.predictor import Embedding
from napari_sam.engine.preprocess import rescale_to_uint8
from napari_sam.engine.store import FORMAT, EmbeddingStore, Normalisation, StoreMismatch
from napari_sam.engine.tiling import TileLayout, choose_layout
from napari_sam.engine.volume import VolumeEmbeddings


def fake_embedding(nbytes_mib: float) -> Embedding:
    n = int(nbytes_mib * 2**20 / 4)
    return Embedding(torch.zeros(n), (1, 1), (1, 1), "m")


def test_lru_cache_is_bounded_in_mib():
    cache = EmbeddingCache(max_mib=10)
    for i in range(5):
        cache.put(i, fake_embedding(3))
    assert cache.keys() == [2, 3, 4] and cache.nbytes <= 10 * 2**20
    assert cache.get(2) is not None  # touch: 2 becomes most recent
    cache.put(5, fake_embedding(3))
    assert cache.keys() == [4, 2, 5] and 3 not in cache


def test_tile_layout_windows_cover_the_plane():
    layout = TileLayout((2500, 1800), tile=1024, halo=128)
    assert layout.grid == (3, 2)
    assert layout.core((2, 1)) == (2048, 1024, 2500, 1800)
    assert layout.window((0, 0)) == (0, 0, 1152, 1152)
    assert layout.window((1, 1)) == (896, 896, 2176, 1800)
    covered = np.zeros((2500, 1800), bool)
    for idx in layout.indices():
        r0, c0, r1, c1 = layout.core(idx)
        covered[r0:r1, c0:c1] = True
    assert covered.all()
    # A prompt near a core border is decoded on the window it sits deepest in.
    assert layout.best_tile((1000, 500, 1040, 540)) in {(0, 0), (1, 0)}
    assert layout.best_tile((1100, 500, 1110, 510)) == (1, 0)
    assert layout.best_tile((100, 1020, 120, 1030)) == (0, 0)  # nearer to window (0, 0)'s centre
    assert choose_layout((1024, 1024)) is None
    assert choose_layout((4096, 100)).grid == (4, 1)
    assert choose_layout((1024, 1024), tile=512, halo=64).grid == (2, 2)
    with pytest.raises(ValueError):
        TileLayout((100, 100), tile=0, halo=1)


def test_volume_embeds_on_demand_and_caches(predictor, stack):
    vol = VolumeEmbeddings(stack, predictor)
    assert vol.lead_shape == (4,) and vol.plane_shape == (96, 128) and vol.index_shape == (4, 1, 1)
    assert vol.contrast_limits == (float(stack.min()), float(stack.max()))  # global, not per slice
    emb = vol.embedding((2, 0, 0))
    assert predictor.embedded == 1 and emb.original_size == (96, 128)
    assert vol.embedding((2, 0, 0)) is emb and predictor.embedded == 1
    expected = predictor.compute_embedding(stack[2], vol.contrast_limits)
    assert torch.equal(emb.features, expected.features)
    assert vol.neighbours((2,), 0, 2) == [(3,), (1,), (0,)]
    assert len(vol.missing()) == 3
    with pytest.raises(IndexError):
        vol.embedding((4, 0, 0))


def test_store_roundtrip_resume_and_mismatch(predictor, stack, tmp_path):
    path = tmp_path / "emb.zarr"
    vol = VolumeEmbeddings(stack, predictor)
    vol.attach_store(path)
    calls = []

    def cancel_after_two():
        return len(calls) >= 2

    with pytest.raises(Cancelled):  # interrupted after two planes
        vol.precompute(progress=lambda d, t: calls.append(d), cancel=cancel_after_two)
    assert EmbeddingStore(path).done_mask().sum() == 2
    first = vol.embedding((0, 0, 0)).features.clone()

    # A new session: same pixels, same model -> resumes, computing only the rest.
    again = VolumeEmbeddings(stack, predictor)
    again.attach_store(path)
    before = predictor.embedded
    assert again.precompute() == 2 and predictor.embedded == before + 2
    assert EmbeddingStore(path).done_mask().all()
    assert torch.equal(again.embedding((0, 0, 0)).features, first)
    assert again.precompute() == 0  # nothing left
    store = EmbeddingStore(path, mode="r")
    assert store.info.model == "vit_tiny_test" and store.info.index_shape == (4, 1, 1)

    changed = stack.copy()
    changed[3, 0, 0] += 1
    with pytest.raises(StoreMismatch, match="other pixels"):
        VolumeEmbeddings(changed, predictor).attach_store(path)
    with pytest.raises(StoreMismatch, match="other pixels"):
        VolumeEmbeddings(stack, predictor, contrast_limits=(0, 1000)).attach_store(path)
    with pytest.raises(StoreMismatch, match="layout"):
        VolumeEmbeddings(stack, predictor, tile=64, halo=8).attach_store(path)


def test_store_refuses_another_model(predictor, stack, tmp_path, tiny_state):
    from napari_sam.model import build_sam, random_state_dict

    VolumeEmbeddings(stack, predictor).attach_store(tmp_path / "e.zarr")
    other = build_sam("vit_tiny_test")
    other.load_state_dict(random_state_dict(other, seed=99))
    with pytest.raises(StoreMismatch, match="other weights"):
        VolumeEmbeddings(stack, Predictor(other, "cpu")).attach_store(tmp_path / "e.zarr")


def test_large_plane_is_tiled_and_only_needed_tiles_embedded(predictor):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (300, 520), dtype=np.uint8)
    vol = VolumeEmbeddings(image, predictor, tile=128, halo=32)
    assert vol.index_shape == (3, 5)
    out = vol.predict((), points=[[140.0, 300.0]], labels=[1])
    assert predictor.embedded == 1
    assert out.tile == (1, 2) and out.window == (96, 224, 288, 416)
    r0, c0, r1, c1 = out.window
    assert out.prediction.masks.shape == (3, r1 - r0, c1 - c0)
    # Same as decoding the window on its own with the shifted prompt.
    direct = Predictor(predictor.model, "cpu")
    direct.set_image(image[r0:r1, c0:c1])
    ref = direct.predict(points=[[140.0 - r0, 300.0 - c0]], labels=[1])
    np.testing.assert_allclose(out.prediction.logits, ref.logits, atol=1e-5)
    vol.predict((), box=[100.0, 250.0, 180.0, 350.0])  # same window again: no new embedding
    assert predictor.embedded == 1
    with pytest.raises(ValueError, match="more than one tile window"):
        vol.predict((), box=[10.0, 10.0, 290.0, 510.0])


def test_dask_backed_image_is_read_by_window(predictor):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(3)
    base = rng.integers(0, 60000, (2, 300, 400), dtype=np.uint16)
    lazy = da.from_array(base, chunks=(1, 100, 100))
    vol = VolumeEmbeddings(lazy, predictor, tile=128, halo=16, contrast_limits=(0, 60000))
    emb = vol.embedding((1, 0, 2))
    direct = predictor.compute_embedding(base[1, 0:144, 240:400], (0, 60000))
    assert torch.equal(emb.features, direct.features)



def test_store_records_normalisation_and_a_reader_adopts_it(predictor, stack, tmp_path):
    path = tmp_path / "emb.zarr"
    made = VolumeEmbeddings(stack, predictor)  # default limits: the stack's range
    made.attach_store(path)
    made.precompute()
    limits = (float(stack.min()), float(stack.max()))
    assert EmbeddingStore(path).info.normalisation == Normalisation(False, limits)
    before = predictor.embedded

    shown = VolumeEmbeddings(stack, predictor, contrast_limits=(100, 2000))  # e.g. a layer's display limits
    with pytest.raises(StoreMismatch, match="other pixels"):  # without adopting: refused
        shown.attach_store(path, create=False)
    shown.attach_store(path, create=False, adopt=True)
    assert shown.adopted_limits and shown.contrast_limits == limits
    assert torch.equal(shown.embedding((2, 0, 0)).features, made.embedding((2, 0, 0)).features)
    assert predictor.embedded == before  # read, not computed

    late = VolumeEmbeddings(stack, predictor, contrast_limits=(100, 2000))
    own = late.embedding((1, 0, 0))  # embedded with its own limits before the store is attached
    late.attach_store(path, create=False, adopt=True)
    assert late.adopted_limits and late.contrast_limits == limits
    assert late.cache.keys() == []  # computed with the old limits: dropped
    assert torch.equal(late.embedding((1, 0, 0)).features, made.embedding((1, 0, 0)).features)
    assert not torch.equal(own.features, made.embedding((1, 0, 0)).features)
    before = predictor.embedded

    changed = stack.copy()
    changed[0, 5, 5] += 1
    other = VolumeEmbeddings(changed, predictor, contrast_limits=(100, 2000))
    problems = []
    other.on_store_problem = problems.append
    other.use_store(path)  # what the widget does: opened (and adopted) on first use
    emb = other.embedding((1, 0, 0))  # refused, reported, and computed without the store
    assert [type(p) for p in problems] == [StoreMismatch] and "other pixels" in str(problems[0])
    assert other.store_refused is problems[0]
    assert other.store is None and not other.adopted_limits and other.contrast_limits == (100, 2000)
    expected = predictor.compute_embedding(changed[1], (100, 2000))
    assert torch.equal(emb.features, expected.features)
    other.embedding((2, 0, 0))
    assert len(problems) == 1  # reported once
    assert predictor.embedded == before + 3

    quiet = VolumeEmbeddings(changed, predictor)  # no callback: a warning
    quiet.use_store(path)
    with pytest.warns(RuntimeWarning, match="not used.*other pixels"):
        quiet.embedding((0, 0, 0))
    assert quiet.store is None and quiet.store_refused is not None


def test_other_threads_wait_while_a_pending_store_is_checked(predictor, stack, tmp_path, monkeypatch):
    """A second embedding() during the (slow) pixel hash of use_store waits for the store, so
    nothing embedded with the volume's own limits is cached after it adopts the store's."""
    import threading
    import time

    from napari_sam.engine import volume as volume_module

    path = tmp_path / "emb.zarr"
    made = VolumeEmbeddings(stack, predictor)
    made.attach_store(path)
    made.precompute()
    before = predictor.embedded
    hashing, original = threading.Event(), volume_module.image_signature

    def slow_signature(*args, **kwargs):
        hashing.set()
        time.sleep(0.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(volume_module, "image_signature", slow_signature)
    vol = VolumeEmbeddings(stack, predictor, contrast_limits=(100, 2000))
    vol.use_store(path)
    results, errors = {}, []

    def embed(item):
        try:
            results[item] = vol.embedding(item)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    first = threading.Thread(target=embed, args=((0, 0, 0),))
    first.start()
    assert hashing.wait(10)
    second = threading.Thread(target=embed, args=((1, 0, 0),))  # e.g. the prefetch
    second.start()
    first.join(30)
    second.join(30)
    assert not errors and vol.adopted_limits and vol.store is not None
    store = EmbeddingStore(path)
    for z in (0, 1):
        assert torch.equal(vol.cached((z, 0, 0)).features, store.get((z, 0, 0)).features)
        assert torch.equal(results[(z, 0, 0)].features, store.get((z, 0, 0)).features)
    assert predictor.embedded == before  # everything read from the store


def test_a_read_only_store_is_used_and_written_best_effort(predictor, stack, tmp_path):
    path = tmp_path / "emb.zarr"
    made = VolumeEmbeddings(stack, predictor)
    made.attach_store(path)
    made.precompute([(0, 0, 0)])
    vol = VolumeEmbeddings(stack, predictor)
    vol.attach_store(path, create=False)
    problems, writes = [], []
    vol.on_store_problem = problems.append

    def refuse(index, embedding):  # e.g. a shared store in a read-only folder
        writes.append(index)
        raise PermissionError(13, "Permission denied", str(path))

    vol.store.put = refuse
    assert torch.equal(vol.embedding((0, 0, 0)).features, made.embedding((0, 0, 0)).features)  # read
    emb = vol.embedding((1, 0, 0))  # missing: computed, not written, kept in memory
    assert torch.equal(emb.features, predictor.compute_embedding(stack[1], vol.contrast_limits).features)
    assert vol.cached((1, 0, 0)) is emb
    vol.embedding((2, 0, 0))
    assert len(problems) == 1 and isinstance(problems[0], PermissionError)  # reported once
    assert vol.store_write_error is problems[0] and vol.store is not None
    assert writes == [(1, 0, 0)]  # not retried after the first failure
    assert not EmbeddingStore(path).has((1, 0, 0))


def test_store_format_is_checked_but_not_the_package_version(predictor, stack, tmp_path):
    from dataclasses import replace

    path = tmp_path / "emb.zarr"
    store = VolumeEmbeddings(stack, predictor).attach_store(path)
    attrs = dict(store.group.attrs["napari_sam"])
    assert attrs["format"] == FORMAT and attrs["version"]
    store.group.attrs["napari_sam"] = {**attrs, "version": "999.0"}  # another release, same format
    again = VolumeEmbeddings(stack, predictor).attach_store(path, create=False)
    assert again.info.version == "999.0" and again.info.format == FORMAT
    again.check(replace(again.info, version="0.1"))  # the version is not compared
    store.group.attrs["napari_sam"] = {**attrs, "format": FORMAT + 1, "version": "999.0"}
    with pytest.raises(StoreMismatch, match=f"format {FORMAT + 1} .made by napari-sam 999.0.*update napari-sam"):
        EmbeddingStore(path)
    with pytest.raises(StoreMismatch, match="format"):
        VolumeEmbeddings(stack, predictor).attach_store(path)
    assert isinstance(StoreInfo.from_attrs(attrs), StoreInfo)


def test_channel_views_read_lazily_and_compose_rgb(predictor):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 1000, (3, 2, 40, 50)).astype(np.uint16)
    data[:, 1] += 5000  # channels with very different ranges
    one = ChannelSlice(data, 1, 1)
    assert one.shape == (3, 40, 50) and one.ndim == 3 and one.dtype == np.uint16
    np.testing.assert_array_equal(one[2], data[2, 1])
    np.testing.assert_array_equal(one[1, 5:9, ::2], data[1, 1, 5:9, ::2])
    np.testing.assert_array_equal(one[..., 3], data[:, 1, :, 3])
    np.testing.assert_array_equal(np.asarray(one), data[:, 1])
    with pytest.raises(ValueError, match="not a leading axis"):
        ChannelSlice(data, 2, 0)
    with pytest.raises(ValueError, match="does not exist"):
        ChannelSlice(data, 1, 2)

    rgb = ChannelComposite(data, 1, (0, 1))
    assert rgb.shape == (3, 40, 50, 3) and rgb.dtype == np.uint8
    lims = [(float(data[:, c].min()), float(data[:, c].max())) for c in (0, 1)]
    assert rgb.limits == tuple(lims)  # each channel by its own range
    px = rgb[2]
    np.testing.assert_array_equal(px[..., 0], rescale_to_uint8(data[2, 0], lims[0]))
    np.testing.assert_array_equal(px[..., 1], rescale_to_uint8(data[2, 1], lims[1]))
    np.testing.assert_array_equal(np.asarray(rgb, dtype=np.float32)[2], px.astype(np.float32))
    assert ChannelComposite.__array__ is ChannelSlice.__array__  # one implementation for both views
    assert not px[..., 2].any()  # no third channel: blue stays black
    np.testing.assert_array_equal(rgb[2, 10:20, :5, 1], px[10:20, :5, 1])

    vol = VolumeEmbeddings(rgb, predictor, rgb=True)
    assert vol.lead_shape == (3,) and vol.contrast_limits is None
    assert torch.equal(vol.embedding((2, 0, 0)).features, predictor.compute_embedding(px).features)
    single = VolumeEmbeddings(one, predictor)
    assert single.contrast_limits == lims[1]
