"""``napari-sam segment``: single process, a 2-worker local dask cluster (127.0.0.1), an existing
cluster by address, resume, and a corrupt input that fails alone."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from napari_sam import batch

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "-1", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0", "--device", "cpu"]


@pytest.fixture()
def inputs(tmp_path, rgb_image):
    folder = tmp_path / "in"
    folder.mkdir()
    small = rgb_image[:96, :128]
    tifffile.imwrite(folder / "rgb.tif", small)
    tifffile.imwrite(folder / "gray16.tif", (small[..., 0].astype(np.uint16) * 40))
    tifffile.imwrite(folder / "stack.tif", np.stack([small[..., 1], small[..., 2]]))  # (2, Y, X)
    (folder / "corrupt.tif").write_bytes(b"II*\x00 this is not a tiff")
    return folder


def outputs(out):
    return sorted(p.name for p in out.iterdir())


def check_labels(out):
    rgb = tifffile.imread(out / "rgb_labels.tif")
    assert rgb.shape == (96, 128) and rgb.max() > 0
    assert tifffile.imread(out / "gray16_labels.tif").shape == (96, 128)
    stack = tifffile.imread(out / "stack_labels.tif")
    assert stack.shape == (2, 96, 128)
    ids0, ids1 = set(np.unique(stack[0])) - {0}, set(np.unique(stack[1])) - {0}
    assert ids0 and ids1 and not ids0 & ids1  # ids unique across the stack


def test_single_process_resume_and_failure(tmp_path, inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    argv = [str(inputs), "--out", str(out), "--model", str(tiny_checkpoint), *FAST]
    assert batch.main(argv) == 1  # the corrupt file fails ...
    text = capsys.readouterr().out
    assert "FAILED   corrupt.tif" in text and "summary: 3 segmented, 0 skipped (output exists), 1 failed" in text
    assert outputs(out) == ["gray16_labels.tif", "rgb_labels.tif", "stack_labels.tif"]  # ... alone, no temp files
    check_labels(out)
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "rgb_labels.tif").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    before = (out / "rgb_labels.tif").stat().st_mtime_ns
    (inputs / "corrupt.tif").unlink()
    assert batch.main(argv) == 0  # second run: everything done already
    assert "summary: 0 segmented, 3 skipped" in capsys.readouterr().out
    assert (out / "rgb_labels.tif").stat().st_mtime_ns == before


def test_local_cluster_two_workers(tmp_path, inputs, tiny_checkpoint, capsys):
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    (inputs / "more.tif").write_bytes((inputs / "rgb.tif").read_bytes())
    argv = [str(inputs), "--out", str(out), "--model", str(tiny_checkpoint), "--workers", "2", *FAST]
    assert batch.main(argv) == 1
    text = capsys.readouterr().out
    assert "local cluster of 2 process worker(s)" in text
    assert "summary: 4 segmented, 0 skipped (output exists), 1 failed" in text and "corrupt.tif" in text
    check_labels(out)
    assert len(outputs(out)) == 4
    # resume: nothing left to do, so no cluster is even started
    (inputs / "corrupt.tif").unlink()
    assert batch.main(argv) == 0
    text = capsys.readouterr().out
    assert "summary: 0 segmented, 4 skipped" in text and "dask:" not in text


def test_existing_scheduler_loads_model_once_per_worker(tmp_path, inputs, tiny_checkpoint, monkeypatch, capsys):
    distributed = pytest.importorskip("distributed")
    (inputs / "corrupt.tif").unlink()
    records = []
    real = batch._report
    monkeypatch.setattr(batch, "_report", lambda rec, n, t: (records.append(rec), real(rec, n, t)))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        argv = [str(inputs), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                "--scheduler", cluster.scheduler_address, *FAST]
        assert batch.main(argv) == 0
    assert [r["status"] for r in records] == ["done"] * 3
    assert sum(r["loaded_model"] for r in records) == 1  # one worker, one load, three images
