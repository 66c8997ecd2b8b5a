"""`napari-sam embed` never deletes what it did not create, checks everything before the model
loads, repairs exactly the damaged entries and replaces its own store only with --overwrite."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam.cli.embed import main
from napari_sam.engine import EmbeddingStore
from tests.engine.store_helpers import chunk_file
from tests.recording import record_calls


@pytest.fixture()
def stack_tif(tmp_path):
    data = np.random.default_rng(14).integers(0, 4000, (3, 48, 64), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    return path, data


@pytest.fixture()
def loads(monkeypatch):
    """Every model load (the heavy step everything must be checked before)."""
    import napari_sam.weights as weights

    return record_calls(monkeypatch, weights, "load_model")


def args_for(image, out, checkpoint, *more):
    return [str(image), "--model", str(checkpoint), "--out", str(out), "--device", "cpu", *more]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_out_pointing_at_a_folder_of_files_is_refused_and_left_untouched(stack_tif, tiny_checkpoint, tmp_path,
                                                                        capsys, loads):
    path, _ = stack_tif
    folder = tmp_path / "my_folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    before = snapshot(folder)
    for more in ([], ["--overwrite"]):
        assert main(args_for(path, folder, tiny_checkpoint, *more)) == 2
        assert "not an embedding store (it holds notes.txt): nothing was changed" in capsys.readouterr().err
    assert snapshot(folder) == before and loads == []


def test_out_dot_never_deletes_the_input_image(stack_tif, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    path, data = stack_tif
    monkeypatch.chdir(tmp_path)
    assert main(args_for(path.name, ".", tiny_checkpoint)) == 2
    assert "not an embedding store" in capsys.readouterr().err
    assert np.array_equal(tifffile.imread(path), data)


def test_reversed_contrast_limits_fail_before_the_model_loads_and_leave_nothing(stack_tif, tiny_checkpoint,
                                                                                 tmp_path, capsys, loads):
    path, _ = stack_tif
    out = tmp_path / "emb.zarr"
    with pytest.raises(SystemExit) as exit_:
        main(args_for(path, out, tiny_checkpoint, "--contrast-limits", "4000", "10"))
    assert exit_.value.code == 2 and "--contrast-limits: contrast limits are reversed" in capsys.readouterr().err
    assert not out.exists() and loads == []
    assert main(args_for(path, out, tiny_checkpoint, "--contrast-limits", "10", "4000")) == 0  # the corrected run
    assert EmbeddingStore(out).done_mask().all()


@pytest.mark.parametrize(("more", "message"), [
    (["--device", "banana"], "--device: device 'banana' is not a device"),
    (["--tile", "8"], "--tile must be at least 16"),
    (["--halo", "-1"], "--halo must be 0 or more"),
    (["--contrast-limits", "nan", "5"], "--contrast-limits: contrast limits must be finite"),
])
def test_bad_options_fail_before_the_model_loads(stack_tif, tiny_checkpoint, tmp_path, capsys, loads, more, message):
    path, _ = stack_tif
    with pytest.raises(SystemExit) as exit_:
        main(args_for(path, tmp_path / "e.zarr", tiny_checkpoint, *more))
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert loads == [] and not (tmp_path / "e.zarr").exists()


def test_an_unknown_model_or_a_complex_image_fails_before_the_model_loads(stack_tif, tiny_checkpoint, tmp_path,
                                                                          capsys, loads):
    path, _ = stack_tif
    with pytest.raises(SystemExit):
        main(args_for(path, tmp_path / "e.zarr", tmp_path / "missing.pth"))
    assert "--model: " in capsys.readouterr().err
    np.save(tmp_path / "c.npy", np.ones((2, 16, 16), np.complex64))
    assert main(args_for(tmp_path / "c.npy", tmp_path / "e.zarr", tiny_checkpoint)) == 2
    assert "complex" in capsys.readouterr().err
    assert loads == [] and not (tmp_path / "e.zarr").exists()


def test_an_unwritable_out_folder_fails_before_the_model_loads(stack_tif, tiny_checkpoint, tmp_path, capsys, loads,
                                                               monkeypatch):
    from pathlib import Path

    path, _ = stack_tif
    real = Path.mkdir

    def read_only(self, *args, **kwargs):  # the tests may run as root, which chmod cannot stop
        if self.parent == tmp_path / "shared":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    (tmp_path / "shared").mkdir()
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(args_for(path, tmp_path / "shared" / "e.zarr", tiny_checkpoint)) == 2
    assert "is not writable" in capsys.readouterr().err and loads == []


def test_out_in_a_folder_that_does_not_exist_yet_is_created(stack_tif, tiny_checkpoint, tmp_path):
    path, _ = stack_tif
    assert main(args_for(path, tmp_path / "new" / "deeper" / "e.zarr", tiny_checkpoint)) == 0
    assert EmbeddingStore(tmp_path / "new" / "deeper" / "e.zarr").done_mask().all()


def test_running_again_after_an_interrupted_creation_works(stack_tif, tiny_checkpoint, tmp_path, monkeypatch):
    path, _ = stack_tif
    out = tmp_path / "emb.zarr"
    real = zarr.Group.create_array

    def interrupted(self, name, **kwargs):
        if name == "done":
            raise KeyboardInterrupt
        return real(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(args_for(path, out, tiny_checkpoint))
    monkeypatch.setattr(zarr.Group, "create_array", real)
    assert main(args_for(path, out, tiny_checkpoint)) == 0
    assert EmbeddingStore(out).done_mask().all()
    old = tmp_path / "old.zarr"  # what an interrupted creation of the earlier version left
    zarr.open_group(str(old), mode="w").create_array("features", shape=(3, 1, 1, 256, 64, 64), dtype="f4")
    assert main(args_for(path, old, tiny_checkpoint)) == 0


def test_embed_repairs_exactly_the_damaged_entries(stack_tif, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from napari_sam.engine import Predictor

    path, _ = stack_tif
    out = tmp_path / "emb.zarr"
    assert main(args_for(path, out, tiny_checkpoint)) == 0
    saved = {i: EmbeddingStore(out).get((i, 0, 0)).features.clone() for i in range(3)}
    f = chunk_file(out, "features", (1, 0, 0))
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x55  # one flipped byte
    f.write_bytes(bytes(data))
    chunk_file(out, "features", (2, 0, 0)).unlink()
    untouched = chunk_file(out, "features", (0, 0, 0)).stat().st_mtime_ns
    computed = record_calls(monkeypatch, Predictor, "compute_embedding")
    capsys.readouterr()
    assert main(args_for(path, out, tiny_checkpoint)) == 0
    text = capsys.readouterr()
    assert "plane (1,) is damaged" in text.err and "plane (2,) is damaged" in text.err
    assert "2 embedding(s)" in text.out and "2 damaged one(s) repaired" in text.out and len(computed) == 2
    assert chunk_file(out, "features", (0, 0, 0)).stat().st_mtime_ns == untouched
    store = EmbeddingStore(out)
    assert store.verify() == [] and all(np.array_equal(store.get((i, 0, 0)).features, saved[i]) for i in range(3))
    assert main(args_for(path, out, tiny_checkpoint)) == 0
    assert "nothing to compute" in capsys.readouterr().out


def test_replacing_a_store_made_for_other_pixels_needs_overwrite(stack_tif, tiny_checkpoint, tmp_path, capsys):
    path, data = stack_tif
    out = tmp_path / "emb.zarr"
    assert main(args_for(path, out, tiny_checkpoint)) == 0
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, data[::-1].copy(), photometric="minisblack")
    assert main(args_for(other, out, tiny_checkpoint)) == 2
    err = capsys.readouterr().err
    assert "other pixels" in err and "--overwrite replaces the store" in err
    assert EmbeddingStore(out).done_mask().all()  # kept
    assert main(args_for(other, out, tiny_checkpoint, "--overwrite")) == 0
    assert main(args_for(other, out, tiny_checkpoint)) == 0
    assert "nothing to compute" in capsys.readouterr().out


def test_a_store_of_the_earlier_format_is_refused_before_the_model_loads(stack_tif, tiny_checkpoint, tmp_path,
                                                                         capsys, loads):
    path, _ = stack_tif
    out = tmp_path / "emb.zarr"
    assert main(args_for(path, out, tiny_checkpoint)) == 0
    group = zarr.open_group(str(out), mode="a")
    group.attrs["napari_sam"] = {**group.attrs["napari_sam"], "format": 1}
    loads.clear()
    assert main(args_for(path, out, tiny_checkpoint)) == 2
    assert "earlier napari-sam" in capsys.readouterr().err and loads == []
    assert main(args_for(path, out, tiny_checkpoint, "--overwrite")) == 0
    assert EmbeddingStore(out).info.format == 2 and EmbeddingStore(out).done_mask().all()
