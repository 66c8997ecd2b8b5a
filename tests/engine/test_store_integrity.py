"""Embedding stores: a damaged entry is a missing entry; damaged metadata is a clear refusal;
the model fingerprint covers every encoder weight."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_sam.engine import Predictor, VolumeEmbeddings
from napari_sam.engine.fingerprint import model_fingerprint
from napari_sam.engine.store import FORMAT, EmbeddingStore, StoreDamageWarning, StoreMismatch
from tests.engine.store_helpers import chunk_file, stored_stack


@pytest.fixture()
def predictor(cpu_predictor):
    return cpu_predictor


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(8)
    return rng.integers(0, 3000, (3, 48, 64)).astype(np.uint16)


def reopen(stack, predictor, path):
    vol = VolumeEmbeddings(stack, predictor)
    vol.attach_store(path, create=False)
    return vol


def expect_recomputed(stack, predictor, path, item, match):
    """Reading ``item`` warns once (naming the store and plane), gives the right features
    and repairs the store."""
    vol = reopen(stack, predictor, path)
    direct = predictor.compute_embedding(stack[item[0]], vol.contrast_limits).features
    with pytest.warns(StoreDamageWarning, match=match) as record:
        emb = vol.embedding(item)
    assert len([w for w in record if issubclass(w.category, StoreDamageWarning)]) == 1
    assert str(path) in str(record[0].message) and f"plane ({item[0]},)" in str(record[0].message)
    assert torch.equal(emb.features, direct)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreDamageWarning)
        assert EmbeddingStore(path).verify() == []  # rewritten
        assert torch.equal(EmbeddingStore(path).get(item).features, direct)


def test_a_deleted_features_chunk_is_recomputed_not_read_as_zeros(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    chunk_file(path, "features", (1, 0, 0)).unlink()
    assert EmbeddingStore(path).has((1, 0, 0))  # marked done, but its features are gone
    expect_recomputed(stack, predictor, path, (1, 0, 0), "never written")


def test_flipped_bytes_are_caught_by_the_checksum(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    f = chunk_file(path, "features", (2, 0, 0))
    data = bytearray(f.read_bytes())
    for i in range(100, 110):
        data[len(data) // 2 + i] ^= 0xFF
    f.write_bytes(bytes(data))
    expect_recomputed(stack, predictor, path, (2, 0, 0), "unreadable")


@pytest.mark.parametrize("damage", ["truncated", "random", "zeroed"])
def test_a_truncated_random_or_zeroed_chunk_is_a_missing_entry(predictor, stack, tmp_path, damage):
    path = stored_stack(stack, predictor, tmp_path)
    f = chunk_file(path, "features", (0, 0, 0))
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 3], "random": np.random.default_rng(0).bytes(len(data)),
                   "zeroed": bytes(len(data))}[damage])
    expect_recomputed(stack, predictor, path, (0, 0, 0), "damaged")


def test_damaged_sizes_are_a_missing_entry(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    chunk_file(path, "sizes", (1, 0, 0)).unlink()  # reads as zero sizes
    expect_recomputed(stack, predictor, path, (1, 0, 0), "sizes")


def test_a_garbage_done_chunk_counts_as_not_done(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    chunk_file(path, "done", (1, 0, 0)).write_bytes(b"\x13garbage\x00")
    store = EmbeddingStore(path)
    with pytest.warns(StoreDamageWarning, match="completion flag"):
        assert store.done_mask().tolist() == [[[True]], [[False]], [[True]]]
    assert store.missing() == [(1, 0, 0)]
    vol = reopen(stack, predictor, path)
    assert vol.missing() == [(1, 0, 0)]
    assert vol.precompute() == 1
    assert EmbeddingStore(path).done_mask().all()


def test_one_warning_per_damaged_entry(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    chunk_file(path, "features", (1, 0, 0)).unlink()
    store = EmbeddingStore(path, mode="r")
    with pytest.warns(StoreDamageWarning) as record:
        assert store.get((1, 0, 0)) is None
        assert store.get((1, 0, 0)) is None
        assert store.get((0, 0, 0)) is not None
    assert len(record) == 1


def test_verify_lists_exactly_the_damaged_entries(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    chunk_file(path, "features", (0, 0, 0)).write_bytes(b"junk")
    chunk_file(path, "features", (2, 0, 0)).unlink()
    store = EmbeddingStore(path)
    assert [index for index, _ in store.verify()] == [(0, 0, 0), (2, 0, 0)]
    assert store.missing() == [] and store.missing(verify=True) == [(0, 0, 0), (2, 0, 0)]
    vol = reopen(stack, predictor, path)
    assert vol.missing(verify=True) == [(0, 0, 0), (2, 0, 0)]


@pytest.mark.parametrize("edit", ["no layout", "no signature", "layout garbage", "attrs garbage"])
def test_damaged_metadata_is_a_clear_store_mismatch_not_a_key_error(predictor, stack, tmp_path, edit):
    path = stored_stack(stack, predictor, tmp_path)
    store = EmbeddingStore(path)
    attrs = dict(store.group.attrs["napari_sam"])
    if edit == "no layout":
        del attrs["layout"]
    elif edit == "no signature":
        del attrs["signature"]
    elif edit == "layout garbage":
        attrs["layout"] = "garbage"
    else:
        attrs = ["garbage"]
    store.group.attrs["napari_sam"] = attrs
    with pytest.raises(StoreMismatch, match="damaged metadata.*--overwrite"):
        EmbeddingStore(path)
    with pytest.raises(StoreMismatch, match="damaged metadata"):
        VolumeEmbeddings(stack, predictor).attach_store(path)


def test_a_garbled_zarr_json_or_missing_array_is_a_clear_store_mismatch(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    (path / "done" / "zarr.json").unlink()
    with pytest.raises(StoreMismatch, match="damaged"):
        EmbeddingStore(path)
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(StoreMismatch, match="damaged metadata"):
        EmbeddingStore(path)


def test_a_store_of_the_earlier_format_is_refused_with_how_to_recompute(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    store = EmbeddingStore(path)
    store.group.attrs["napari_sam"] = {**store.group.attrs["napari_sam"], "format": FORMAT - 1}
    with pytest.raises(StoreMismatch, match="earlier napari-sam.*fingerprint.*--overwrite"):
        EmbeddingStore(path)


# --- the model fingerprint ------------------------------------------------------------


def perturbed(state: dict, keep: tuple[str, ...] = ()) -> dict:
    """Every image-encoder tensor changed a little (as a fine-tune would), except ``keep``."""
    rng = np.random.default_rng(5)
    out = {}
    for key, value in state.items():
        if key.startswith("image_encoder.") and key not in keep:
            value = value + torch.from_numpy(rng.normal(0, 1e-2, tuple(value.shape)).astype(np.float32))
        out[key] = value
    return out


OLD_FOUR = ("image_encoder.patch_embed.proj.weight", "image_encoder.neck.3.weight")


def test_a_store_made_with_other_encoder_weights_of_the_same_type_is_refused(predictor, stack, tmp_path,
                                                                             tiny_state):
    """Every block changed but the tensors the old fingerprint looked at: still refused."""
    from napari_sam.model import build_sam

    path = stored_stack(stack, predictor, tmp_path)
    tuned = build_sam("vit_tiny_test")
    tuned.load_state_dict(perturbed(tiny_state, keep=OLD_FOUR))
    other = Predictor(tuned, "cpu")
    assert not torch.equal(other.compute_embedding(stack[0]).features, predictor.compute_embedding(stack[0]).features)
    with pytest.raises(StoreMismatch, match="other weights"):
        VolumeEmbeddings(stack, other).attach_store(path)


def test_fingerprint_covers_every_encoder_tensor_and_only_those(tiny_state):
    from napari_sam.model import build_sam

    model = build_sam("vit_tiny_test")
    model.load_state_dict(tiny_state)
    base = model_fingerprint(model)
    encoder_keys = [k for k in tiny_state if k.startswith("image_encoder.")]
    for key in encoder_keys:
        changed = dict(tiny_state)
        changed[key] = tiny_state[key].clone()
        changed[key].view(-1)[0] += 1e-3
        model.load_state_dict(changed)
        assert model_fingerprint(model) != base, key
    model.load_state_dict(tiny_state)
    assert model_fingerprint(model) == base  # recomputed after the in-place change back
    decoder = dict(tiny_state)
    decoder["mask_decoder.iou_token.weight"] = tiny_state["mask_decoder.iou_token.weight"] + 1
    model.load_state_dict(decoder)
    assert model_fingerprint(model) == base  # the decoder does not change an embedding


def test_fingerprint_names_the_weights_whatever_the_precision(tiny_state):
    from napari_sam.model import build_sam

    fingerprints = []
    for precision in ("fp32", "bf16", "int8"):
        model = build_sam("vit_tiny_test")
        model.load_state_dict(tiny_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bf16 without bf16 units is slow: fine here
            p = Predictor(model, "cpu", precision=precision)
        fingerprints.append((p.fingerprint, model_fingerprint(p.model)))
    assert len({f for pair in fingerprints for f in pair}) == 1


def test_fingerprint_is_computed_once_per_model(tiny_model, monkeypatch):
    from napari_sam.engine import fingerprint

    calls = []
    original = fingerprint._update
    monkeypatch.setattr(fingerprint, "_update", lambda *a: (calls.append(1), original(*a)))
    first = model_fingerprint(tiny_model)
    n = len(calls)
    assert n > 0 and model_fingerprint(tiny_model) == first and len(calls) == n
    Predictor(tiny_model, "cpu")
    assert len(calls) == n
