"""``napari-sam segment``: --out checked before any work, its own outputs never taken as inputs,
temporaries of a killed run removed (ours only), and resume that notices unreadable outputs and
changed settings."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import segment as batch
from napari_sam.io import read_labels_metadata
from tests.recording import record_calls

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "-1", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0", "--device", "cpu"]


@pytest.fixture()
def folder(tmp_path, rgb_image):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "img0.tif", rgb_image[:64, :96])
    tifffile.imwrite(folder / "img1.tif", rgb_image[100:164, 100:196, 1])
    return folder


@pytest.fixture()
def loads(monkeypatch):
    """Every model load of the command (in this process)."""
    return record_calls(monkeypatch, batch, "cached_predictor")


def run(inputs, out, checkpoint, *more):
    return batch.main([str(inputs), "--out", str(out), "--model", str(checkpoint), *FAST, *more])


def test_an_unwritable_out_is_found_before_any_work(folder, tmp_path, tiny_checkpoint, capsys, loads, monkeypatch):
    import tempfile

    out = tmp_path / "out"
    real = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):  # the tests may run as root, which chmod cannot stop
        if dir is not None and str(dir) == str(out):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert run(folder, out, tiny_checkpoint) == 2
    assert "cannot write to --out" in capsys.readouterr().err and loads == []


def test_an_out_that_cannot_be_created_is_a_clear_error(folder, tmp_path, tiny_checkpoint, capsys, loads, monkeypatch):
    from pathlib import Path

    (tmp_path / "a_file").write_text("x")
    assert run(folder, tmp_path / "a_file" / "out", tiny_checkpoint) == 2
    assert "cannot create --out" in capsys.readouterr().err
    real = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name == "denied":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert run(folder, tmp_path / "denied", tiny_checkpoint) == 2
    err = capsys.readouterr().err
    assert "cannot create --out" in err and "Permission denied" in err and "Traceback" not in err and loads == []


@pytest.mark.parametrize(("option", "message"), [
    (["--crop-overlap-ratio", "-1"], "crop_overlap_ratio must be a finite number"),
    (["--pred-iou-thresh", "nan"], "pred_iou_thresh must be a finite number"),
    (["--crop-n-layers", "6"], "crop_n_layers must be an integer from 0 to 4"),
    (["--device", "banana"], "device 'banana' is not a device"),
])
def test_bad_settings_fail_before_any_work(folder, tmp_path, tiny_checkpoint, capsys, loads, option, message):
    assert run(folder, tmp_path / "out", tiny_checkpoint, *option) == 2
    assert message in capsys.readouterr().err
    assert loads == [] and not (tmp_path / "out").exists()


def test_out_equal_to_the_input_folder_never_segments_its_own_outputs(folder, tiny_checkpoint, capsys, rgb_image):
    tifffile.imwrite(folder / "cells_labels.tif", rgb_image[:32, :32, 0])  # the user's own image of that name
    assert run(folder, folder, tiny_checkpoint) == 0
    assert "3 segmented" in capsys.readouterr().out
    assert run(folder, folder, tiny_checkpoint) == 0
    text = capsys.readouterr().out
    assert "ignored 3 label file(s) written by napari-sam" in text and "0 segmented, 3 skipped" in text
    assert sorted(p.name for p in folder.iterdir()) == [
        "cells_labels.tif", "cells_labels_labels.tif", "img0.tif", "img0_labels.tif", "img1.tif", "img1_labels.tif"]


def test_temporaries_of_a_killed_run_are_removed_ours_only(folder, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    out.mkdir()
    ours = out / ".img0_labels.tif.k3_9zq1x.tmp"  # as atomic_path names them, left by SIGKILL
    lookalikes = [out / ".img0_labels.tif.mine.tmp", out / ".other_labels.tif.abcd1234.tmp", out / "img0.tmp"]
    for path in (ours, *lookalikes):
        path.write_bytes(b"partial")
    assert run(folder, out, tiny_checkpoint) == 0
    assert "removed 1 temporary file(s)" in capsys.readouterr().out
    assert not ours.exists() and all(p.exists() for p in lookalikes)


def test_an_empty_or_cut_short_output_is_redone(folder, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    assert run(folder, out, tiny_checkpoint) == 0
    good = tifffile.imread(out / "img1_labels.tif")
    (out / "img0_labels.tif").write_bytes(b"")
    data = (out / "img1_labels.tif").read_bytes()
    (out / "img1_labels.tif").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert run(folder, out, tiny_checkpoint) == 0
    text = capsys.readouterr().out
    assert "redo     img0.tif: its output img0_labels.tif is unreadable (empty file)" in text
    assert "redo     img1.tif" in text and "2 segmented" in text
    assert tifffile.imread(out / "img0_labels.tif").shape == (64, 96)
    assert np.array_equal(tifffile.imread(out / "img1_labels.tif"), good)


def test_outputs_record_their_settings_and_changed_settings_are_noticed(folder, tmp_path, tiny_checkpoint,
                                                                       tiny_state, capsys, loads):
    import torch

    out = tmp_path / "out"
    assert run(folder, out, tiny_checkpoint) == 0
    made = read_labels_metadata(out / "img0_labels.tif")["segment"]
    assert made["model"] == str(tiny_checkpoint) and made["params"]["points_per_side"] == 2
    assert made["model_fingerprint"].startswith("xxh3-encoder:") and made["version"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    loads.clear()
    capsys.readouterr()
    assert batch.main([str(folder), "--out", str(out), "--model", str(tiny_checkpoint), *FAST[2:],
                       "--points-per-side", "3"]) == 2
    err = capsys.readouterr().err
    assert "2 output(s)" in err and "points_per_side 2 (now 3)" in err and "--overwrite" in err
    other = tmp_path / "other.pth"
    torch.save(tiny_state, other)
    assert run(folder, out, other) == 2
    assert "model" in capsys.readouterr().err
    assert loads == [] and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing touched
    assert batch.main([str(folder), "--out", str(out), "--model", str(tiny_checkpoint), *FAST[2:],
                       "--points-per-side", "3", "--overwrite"]) == 0
    assert read_labels_metadata(out / "img1_labels.tif")["segment"]["params"]["points_per_side"] == 3
    assert run(folder, out, tiny_checkpoint, "--points-per-side", "3") == 0  # FAST's 2 is overridden
    assert "0 segmented, 2 skipped" in capsys.readouterr().out
