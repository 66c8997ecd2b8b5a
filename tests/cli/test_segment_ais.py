"""``napari-sam segment --mode ais``: the instance decoder of a model that has one (here a micro-sam
style export with a decoder, small random weights: the ``decoder_checkpoint`` fixture), in one
process and on dask workers; the mode defaults to ais for such a model and is refused for a model without a decoder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import segment as batch


@pytest.fixture()
def inputs(tmp_path, rgb_image):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "rgb.tif", rgb_image[:96, :128])
    tifffile.imwrite(folder / "stack.tif", np.stack([rgb_image[:96, :128, 0], rgb_image[:96, :128, 1]]))
    return folder


def test_ais_is_the_default_for_a_model_with_a_decoder(tmp_path, inputs, decoder_checkpoint, capsys, monkeypatch):
    seen = []
    real = batch.segment_instances_image
    monkeypatch.setattr(batch, "segment_instances_image", lambda *a: (seen.append(a[-1]), real(*a))[1])
    out = tmp_path / "out"
    argv = [str(inputs), "--out", str(out), "--model", str(decoder_checkpoint), "--device", "cpu", "--min-size", "0"]
    assert batch.main(argv) == 0
    text = capsys.readouterr().out
    assert "mode: ais" in text and "summary: 2 segmented" in text
    assert len(seen) == 2 and seen[0]["min_size"] == 0 and seen[0]["center_distance_threshold"] is None
    rgb = tifffile.imread(out / "rgb_labels.tif")
    stack = tifffile.imread(out / "stack_labels.tif")
    assert rgb.shape == (96, 128) and stack.shape == (2, 96, 128) and rgb.dtype.kind == "u"
    assert rgb.max() > 0


def test_ais_on_dask_workers(tmp_path, inputs, decoder_checkpoint, capsys):
    out = tmp_path / "out"
    argv = [str(inputs), "--out", str(out), "--model", str(decoder_checkpoint), "--device", "cpu",
            "--mode", "ais", "--workers", "2", "--worker-threads"]
    assert batch.main(argv) == 0
    assert "summary: 2 segmented, 0 skipped (output exists), 0 failed" in capsys.readouterr().out
    assert tifffile.imread(out / "stack_labels.tif").shape == (2, 96, 128)


def test_mode_ais_needs_a_decoder(tmp_path, inputs, tiny_checkpoint, capsys):
    argv = [str(inputs), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint), "--mode", "ais"]
    assert batch.main(argv) == 2
    assert "--mode ais needs a model with an instance-segmentation decoder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work
    assert batch.main([str(inputs), "--out", str(tmp_path / "o"), "--model", "no_such_model"]) == 2
    assert "neither a registered model" in capsys.readouterr().err


def test_amg_still_runs_with_a_decoder_model(tmp_path, inputs, decoder_checkpoint, capsys):
    out = tmp_path / "out"
    argv = [str(inputs / "rgb.tif"), "--out", str(out), "--model", str(decoder_checkpoint), "--device", "cpu",
            "--mode", "amg", "--points-per-side", "2", "--pred-iou-thresh", "-1", "--stability-score-thresh", "0"]
    assert batch.main(argv) == 0
    assert "mode: amg" in capsys.readouterr().out
    assert tifffile.imread(out / "rgb_labels.tif").shape == (96, 128)
