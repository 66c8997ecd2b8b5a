"""Labels to TIFF: smallest dtype, pixel size metadata, atomic write, the npe2 writer."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.io import read_labels_tiff, smallest_uint_dtype, write_labels, write_labels_tiff


@pytest.mark.parametrize(("top", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16),
                                            (65535, np.uint16), (65536, np.uint32), (2**32, np.uint64)])
def test_smallest_uint_dtype(top, dtype):
    assert smallest_uint_dtype(top) == dtype


@pytest.mark.parametrize("top", [3, 300, 70000])
def test_roundtrip_identical_in_smallest_dtype(tmp_path, top):
    labels = np.zeros((37, 53), np.int64)
    labels[3:9, 4:20] = top
    labels[20:30, 30:50] = 1
    path = write_labels_tiff(tmp_path / "l.tif", labels, scale=(0.25, 0.5), unit="micrometer")
    back = tifffile.imread(path)
    assert back.dtype == smallest_uint_dtype(top)
    np.testing.assert_array_equal(back, labels)
    data, meta = read_labels_tiff(path)
    assert meta["scale"] == [0.25, 0.5] and meta["unit"] == "micrometer"
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        x_num, x_den = tags["XResolution"].value
        y_num, y_den = tags["YResolution"].value
        assert tags["ResolutionUnit"].value == 3  # centimetre
    assert x_num / x_den == pytest.approx(1e4 / 0.5) and y_num / y_den == pytest.approx(1e4 / 0.25)


def test_unitless_scale_is_pixels_per_unit(tmp_path):
    path = write_labels_tiff(tmp_path / "l.tif", np.ones((4, 4), np.uint8), scale=(2.0, 4.0))
    with tifffile.TiffFile(path) as tif:
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(0.25) and tif.pages[0].tags["ResolutionUnit"].value == 1


def test_negative_or_fractional_labels_are_refused(tmp_path):
    with pytest.raises(ValueError, match="non-negative"):
        write_labels_tiff(tmp_path / "a.tif", np.array([[0, -1]]))
    with pytest.raises(ValueError, match="whole numbers"):
        write_labels_tiff(tmp_path / "b.tif", np.array([[0, 1.5]]))
    assert not list(tmp_path.iterdir())


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_labels_tiff(tmp_path / "l.tif", np.full((8, 8), 5, np.uint8))
    before = path.read_bytes()

    def broken(*args, **kwargs):
        with open(args[0], "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_labels_tiff(path, np.zeros((8, 8), np.uint8))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["l.tif"]


def test_npe2_writer_function(tmp_path):
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    (out,) = write_labels(str(tmp_path / "x"), labels, {"scale": (1.5, 1.5)})
    assert out.endswith("x.tif")
    np.testing.assert_array_equal(tifffile.imread(out), labels)


def test_writer_is_found_through_the_manifest(tmp_path):
    import npe2

    npe2.PluginManager.instance().discover()
    labels = np.zeros((16, 16), np.uint16)
    labels[4:8, 4:8] = 3
    written = npe2.write(tmp_path / "via_npe2.tiff", [(labels, {"scale": (1, 1)}, "labels")],
                         plugin_name="napari-sam-annotator")
    assert written and np.array_equal(tifffile.imread(written[0]), labels)
    assert tifffile.imread(written[0]).dtype == np.uint8


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_exported_file_gets_the_umask_mode_before_the_rename(tmp_path, monkeypatch, umask):
    """Not mkstemp's private 0600: what a plain open() gives, already when the file appears."""
    import os

    from napari_sam.io import files

    at_rename = []
    real_replace = os.replace

    def replace(src, dst):
        at_rename.append(os.stat(src).st_mode & 0o777)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    old = os.umask(umask)
    try:
        path = write_labels_tiff(tmp_path / "l.tif", np.ones((4, 4), np.uint8))
        (npe2,) = write_labels(str(tmp_path / "w"), np.ones((4, 4), np.uint8), {})
    finally:
        os.umask(old)
    assert at_rename == [0o666 & ~umask] * 2
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.stat(npe2).st_mode & 0o777 == 0o666 & ~umask



def test_umask_is_read_without_changing_it(monkeypatch):
    import os

    from napari_sam.io import files

    old = os.umask(0o027)
    try:
        real_umask, changes = os.umask, []
        monkeypatch.setattr(files.os, "umask", lambda m: changes.append(m) or real_umask(m))
        assert files.default_file_mode() == 0o640
        if os.path.exists("/proc/self/status"):
            assert changes == []  # Linux: read from /proc, never set
        real_open = open

        def no_proc(path, *a, **k):
            if str(path) == "/proc/self/status":
                raise OSError("no /proc here")
            return real_open(path, *a, **k)

        monkeypatch.setattr("builtins.open", no_proc)
        assert files.default_file_mode() == 0o640  # elsewhere: set briefly, then restored
        assert changes and changes[-1] == 0o027
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_axis_names_from_imagej_and_ome_metadata(tmp_path):
    from napari_sam.io.images import axis_names

    imagej, ome, plain = tmp_path / "zcyx.tif", tmp_path / "tczyx.ome.tif", tmp_path / "plain.tif"
    tifffile.imwrite(imagej, np.zeros((3, 2, 8, 9), np.uint16), imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(ome, np.zeros((2, 3, 4, 8, 9), np.uint8), ome=True, metadata={"axes": "TCZYX"})
    tifffile.imwrite(plain, np.zeros((3, 8, 9), np.uint8))
    assert axis_names(imagej) == "ZCYX" and axis_names(ome) == "TCZYX"
    assert axis_names(plain) is None and axis_names(tmp_path / "missing.tif") is None
    (tmp_path / "x.png").write_bytes(b"not read")
    assert axis_names(tmp_path / "x.png") is None
