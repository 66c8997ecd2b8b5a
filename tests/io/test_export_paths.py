"""Export paths: TIFF only, ``.tif`` added to a bare name, clear errors for the rest."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.io import read_labels_tiff, write_labels_tiff

LABELS = np.array([[0, 1], [2, 2]], np.uint8)


@pytest.mark.parametrize("name", ["x.png", "x.jpg", "labels.npy", "x.TIF.bak"])
def test_a_non_tiff_extension_is_refused_and_nothing_written(tmp_path, name):
    with pytest.raises(ValueError, match=r"written as TIFF.*use \.tif or \.tiff"):
        write_labels_tiff(tmp_path / name, LABELS)
    assert list(tmp_path.iterdir()) == []


def test_a_name_without_extension_gets_tif(tmp_path):
    out = write_labels_tiff(tmp_path / "labels", LABELS)
    assert out == tmp_path / "labels.tif" and np.array_equal(read_labels_tiff(out)[0], LABELS)
    assert write_labels_tiff(tmp_path / "B.TIFF", LABELS) == tmp_path / "B.TIFF"  # any case of .tif/.tiff


@pytest.mark.parametrize("path", ["", "   ", None])
def test_an_empty_path_is_a_clear_error(path):
    with pytest.raises(ValueError, match="file name is empty"):
        write_labels_tiff(path, LABELS)


def test_a_folder_or_a_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        write_labels_tiff(tmp_path / "d.tif", LABELS)
    with pytest.raises(FileNotFoundError, match="folder .*nowhere does not exist"):
        write_labels_tiff(tmp_path / "nowhere" / "x.tif", LABELS)


def test_extra_metadata_is_written_and_read_back(tmp_path):
    out = write_labels_tiff(tmp_path / "m.tif", LABELS, metadata={"segment": {"model": "vit_b", "n": 3}})
    meta = read_labels_tiff(out)[1]
    assert meta["segment"] == {"model": "vit_b", "n": 3} and meta["napari_sam"] == "labels"
