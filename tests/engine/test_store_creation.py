"""Creating embedding stores never deletes or overwrites anything the project did not create."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_sam.engine import VolumeEmbeddings
from napari_sam.engine.store import EmbeddingStore, StoreExists, StoreMismatch
from napari_sam.engine.store_files import path_kind
from tests.engine.store_helpers import stored_stack


@pytest.fixture()
def predictor(cpu_predictor):
    return cpu_predictor


@pytest.fixture(scope="module")
def stack():
    return np.random.default_rng(9).integers(0, 3000, (2, 40, 56)).astype(np.uint16)


def user_folder(tmp_path):
    folder = tmp_path / "my_folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("precious")
    (folder / "sub" / "image.tif").write_bytes(b"\x00" * 10)
    return folder


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_a_store_over_a_folder_of_files_is_refused_and_the_folder_left_untouched(predictor, stack, tmp_path):
    folder = user_folder(tmp_path)
    before = snapshot(folder)
    vol = VolumeEmbeddings(stack, predictor)
    with pytest.raises(StoreExists, match=r"not an embedding store \(it holds notes.txt, sub\): nothing was changed"):
        vol.attach_store(folder)
    with pytest.raises(StoreExists, match="not an embedding store"):
        vol.attach_store(folder, overwrite=True)
    with pytest.raises(StoreExists):
        EmbeddingStore.create(folder, vol.store_info(), overwrite=True)
    assert snapshot(folder) == before and vol.store is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_folder"]  # nothing left beside it


def test_a_file_at_the_store_path_is_refused(predictor, stack, tmp_path):
    (tmp_path / "emb.zarr").write_text("a file")
    with pytest.raises(StoreExists, match="is a file"):
        VolumeEmbeddings(stack, predictor).attach_store(tmp_path / "emb.zarr", overwrite=True)
    assert (tmp_path / "emb.zarr").read_text() == "a file"


def test_an_empty_folder_becomes_the_store(predictor, stack, tmp_path):
    (tmp_path / "emb.zarr").mkdir()
    VolumeEmbeddings(stack, predictor).attach_store(tmp_path / "emb.zarr")
    assert path_kind(tmp_path / "emb.zarr") == "store"


def test_replacing_our_own_store_needs_overwrite(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    other = stack[::-1].copy()
    with pytest.raises(StoreMismatch, match="other pixels"):  # attach: the store is kept
        VolumeEmbeddings(other, predictor).attach_store(path)
    with pytest.raises(StoreExists, match="embedding store already"):
        EmbeddingStore.create(path, VolumeEmbeddings(other, predictor).store_info())
    assert EmbeddingStore(path).done_mask().all()
    vol = VolumeEmbeddings(other, predictor)
    vol.attach_store(path, overwrite=True)
    assert not EmbeddingStore(path).done_mask().any()  # a new, empty store for the other pixels
    vol.precompute()
    VolumeEmbeddings(other, predictor).attach_store(path)  # fits now


def test_overwrite_never_removes_files_that_are_not_part_of_the_store(predictor, stack, tmp_path):
    path = stored_stack(stack, predictor, tmp_path)
    (path / "README.txt").write_text("mine")
    with pytest.raises(StoreExists, match=r"also holds README.txt"):
        VolumeEmbeddings(stack, predictor).attach_store(path, overwrite=True)
    assert (path / "README.txt").read_text() == "mine" and EmbeddingStore(path).done_mask().all()


def test_an_interrupted_creation_leaves_no_half_store_and_running_again_works(predictor, stack, tmp_path,
                                                                             monkeypatch):
    path = tmp_path / "emb.zarr"
    real = zarr.Group.create_array
    calls = []

    def interrupted(self, name, **kwargs):
        calls.append(name)
        if name == "sizes":
            raise KeyboardInterrupt  # Ctrl+C halfway through creating the arrays
        return real(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        VolumeEmbeddings(stack, predictor).attach_store(path)
    assert calls == ["features", "sizes"]
    assert list(tmp_path.iterdir()) == []  # no half store, no hidden leftover
    monkeypatch.setattr(zarr.Group, "create_array", real)
    VolumeEmbeddings(stack, predictor).attach_store(path)  # "run it again"
    assert path_kind(path) == "store"


def test_a_killed_creation_leaves_only_a_hidden_folder_that_the_next_run_removes(predictor, stack, tmp_path):
    path = tmp_path / "emb.zarr"
    leftover = tmp_path / ".emb.zarr.creating-0123abcd"  # as SIGKILL leaves it
    zarr.create_group(str(leftover)).create_array("features", shape=(1,), dtype="f4")
    lookalike = tmp_path / ".emb.zarr.creating-0123abcd-mine"  # not our exact pattern
    lookalike.mkdir()
    not_ours = tmp_path / ".emb.zarr.creating-deadbeef"  # our pattern, but holds other files
    not_ours.mkdir()
    (not_ours / "data.txt").write_text("x")
    VolumeEmbeddings(stack, predictor).attach_store(path)
    assert not leftover.exists() and lookalike.exists() and (not_ours / "data.txt").exists()


def test_a_store_whose_creation_an_earlier_version_interrupted_is_created_again(predictor, stack, tmp_path):
    path = tmp_path / "emb.zarr"
    group = zarr.open_group(str(path), mode="w")  # what the old code did, killed before the attributes
    group.create_array("features", shape=(2, 1, 1, 256, 64, 64), chunks=(1, 1, 1, 256, 64, 64), dtype="f4")
    assert path_kind(path) == "interrupted"
    with pytest.raises(StoreMismatch, match="creation of this embedding store was interrupted.*run napari-sam embed"):
        EmbeddingStore(path)
    VolumeEmbeddings(stack, predictor).attach_store(path)  # no --overwrite needed: it held nothing
    assert EmbeddingStore(path).info.index_shape == (2, 1, 1)


def test_a_zarr_group_of_someone_else_is_not_replaced(predictor, stack, tmp_path):
    path = tmp_path / "theirs.zarr"
    zarr.create_group(str(path), attributes={"owner": "someone"}).create_array("features", shape=(3,), dtype="f4")
    with pytest.raises(StoreExists):
        VolumeEmbeddings(stack, predictor).attach_store(path, overwrite=True)
    assert dict(zarr.open_group(str(path), mode="r").attrs) == {"owner": "someone"}
