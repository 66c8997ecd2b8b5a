"""``napari-sam segment``: single process, a 2-worker local dask cluster (127.0.0.1), an existing
cluster by address, resume, and a corrupt input that fails alone."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import torch

from napari_sam.cli import cluster as dask_work
from napari_sam.cli import segment as batch

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "-1", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def torch_threads_untouched():
    """No test may leave torch's thread count of the pytest process changed (in-process
    workers share it, and --scheduler used to force 1 on them)."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert after == before, f"torch threads of the test process changed from {before} to {after}"


@pytest.fixture()
def reported(monkeypatch):
    """Every record the command reports (in the command's process)."""
    records = []
    real = batch._report
    monkeypatch.setattr(batch, "_report", lambda rec, n, t: (records.append(rec), real(rec, n, t)))
    return records


def loads_per_worker(records):
    """{worker: number of model loads} over the records that ran on a worker."""
    loads: dict[str, int] = {}
    for rec in records:
        if "worker" in rec:
            loads[rec["worker"]] = loads.get(rec["worker"], 0) + rec["loaded_model"]
    return loads


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


def test_local_cluster_two_workers(tmp_path, inputs, tiny_checkpoint, capsys, reported):
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    for k in range(3):
        (inputs / f"more{k}.tif").write_bytes((inputs / "rgb.tif").read_bytes())
    argv = [str(inputs), "--out", str(out), "--model", str(tiny_checkpoint), "--workers", "2", *FAST]
    assert batch.main(argv) == 1
    text = capsys.readouterr().out
    assert "local cluster of 2 process worker(s)" in text
    assert "summary: 6 segmented, 0 skipped (output exists), 1 failed" in text and "corrupt.tif" in text
    check_labels(out)
    assert len(outputs(out)) == 6
    # each worker loads the model once, not per image (issue 6): 6 images, at most 2 loads
    done = [r for r in reported if r["status"] == "done"]
    loads = loads_per_worker(done)
    assert 1 <= len(loads) <= 2 and all(n == 1 for n in loads.values()), loads
    assert all(r["worker"].split(":")[0] != str(os.getpid()) for r in done)  # process workers
    # no --threads-per-worker: the two workers share the cores
    assert {r["torch_threads"] for r in done} == {max(1, dask_work.available_cores() // 2)}
    # resume: nothing left to do, so no cluster is even started
    (inputs / "corrupt.tif").unlink()
    assert batch.main(argv) == 0
    text = capsys.readouterr().out
    assert "summary: 0 segmented, 6 skipped" in text and "dask:" not in text
    assert "[1/6] skipped" in text and "[6/6] skipped" in text  # numbered one by one


def test_existing_scheduler_loads_model_once_per_worker(tmp_path, inputs, tiny_checkpoint, capsys, reported):
    distributed = pytest.importorskip("distributed")
    (inputs / "corrupt.tif").unlink()
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the worker's own setting, which --scheduler must not override
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                      host="127.0.0.1", dashboard_address=None) as cluster:
            argv = [str(inputs), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                    "--scheduler", cluster.scheduler_address, *FAST]
            assert batch.main(argv) == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert [r["status"] for r in reported] == ["done"] * 3
    assert sum(r["loaded_model"] for r in reported) == 1  # one worker, one load, three images
    assert [r["torch_threads"] for r in reported] == [3] * 3  # not forced to 1 (or anything)


def test_threads_per_worker_in_a_single_process(tmp_path, inputs, tiny_checkpoint, reported):
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    argv = [str(inputs / "rgb.tif"), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
            "--threads-per-worker", str(target), *FAST]
    try:
        assert batch.main(argv) == 0
        assert torch.get_num_threads() == target  # given: applied to the command's own process
    finally:
        torch.set_num_threads(before)
    assert [r["torch_threads"] for r in reported] == [target]


def test_threads_per_worker_is_applied_only_when_given_or_for_local_processes(monkeypatch):
    monkeypatch.setattr(dask_work, "available_cores", lambda: 16)
    parse = batch.build_parser().parse_args

    def threads(*argv):
        return dask_work.worker_torch_threads(parse(["x.tif", "--out", "o", *argv]))

    assert parse(["x.tif", "--out", "o"]).threads_per_worker is None
    assert threads("--scheduler", "tcp://h:1") is None  # the cluster's workers keep their setting
    assert threads("--scheduler", "tcp://h:1", "--threads-per-worker", "2") == 2
    assert threads("--workers", "4") == 4  # 16 cores shared by 4 local process workers
    assert threads("--workers", "32") == 1
    assert threads("--workers", "4", "--threads-per-worker", "3") == 3
    assert threads("--workers", "4", "--worker-threads") is None  # threads of this process
    assert threads() is None
    assert batch.main(["x.tif", "--out", "o", "--threads-per-worker", "0"]) == 2
