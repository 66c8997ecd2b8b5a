"""The benchmark runs end to end on a small configuration (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench


def test_bench_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", "vit_tiny_test", "--device", "cpu", "--repeats", "1", "--decode-repeats", "1",
                       "--batch", "2", "--compare-reference", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for who in ("ours", "reference"):
        assert {"embed_s", "embed_cpu_s", "batch_img_s", "decode_1024_ms", "decode_4096_ms",
                "post_smooth_1024_ms", "post_smooth_4096_ms"} <= set(res[who])
    assert res["agreement"]["embedding_rel_err"] < 1e-4
    assert res["agreement"]["mask_iou_1024"] > 0.999 and res["agreement"]["mask_iou_4096"] > 0.999
    assert res["dtype"] == "fp32" and res["command"]
    text = capsys.readouterr().out
    assert "| embedding bs1 (s) |" in text and "ours / ref" in text


def test_bench_without_reference_compares_reduced_precision_to_fp32(tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--model", "vit_tiny_test", "--device", "cpu", "--dtype", "int8", "--repeats", "1",
                "--decode-repeats", "1", "--batch", "0", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["dtype"] == "int8" and res["reference"] == {}
    assert 0 < res["agreement"]["embedding_rel_err"] < 0.5
    assert "batch_img_s" not in res["ours"]


def test_peak_memory_reports_a_figure():
    """RSS only grows where the allocator takes fresh pages (after other tests it may reuse
    freed ones), so only the shape of the result is checked."""
    import math

    import torch

    with bench.PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(64 * 2**20 // 4)
        x += 1
    assert math.isfinite(mem.peak_mib) and mem.peak_mib >= 0


@pytest.mark.parametrize("size", [64, 1024])
def test_test_image_shape(size):
    img = bench.test_image(size)
    assert img.shape == (size, size, 3) and img.dtype.name == "uint8"


def test_sam2_bench_runs_against_meta(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", "sam2_tiny_test", "--device", "cpu", "--repeats", "1", "--decode-repeats", "1",
                       "--track-frames", "3", "--compare-reference", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for who in ("ours", "reference"):
        assert {"embed_s", "embed_cpu_s", "decode_1024_ms", "track_frame_s", "track_frame_cpu_s",
                "track_peak_mib"} <= set(res[who])
    assert res["agreement"]["embedding_rel_err"] < 1e-4 and res["agreement"]["mask_iou_1024"] > 0.999
    assert res["agreement"]["track_logits_max_abs"] < 1e-3
    assert "| SAM 2 propagation per frame, 1 object (s) |" in capsys.readouterr().out


def test_instance_benchmark_runs(tmp_path, capsys):
    from benchmarks import bench_instances

    out = tmp_path / "ais.json"
    assert bench_instances.main(["--size", "96", "128", "--grid", "16", "--repeats", "1", "--skip-embeddings",
                                   "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["ais"]["agreement"]["maps_max_abs"] < 1e-4
    assert {"step_s", "decoder_s", "post_s"} <= set(res["ais"]["ours"]) and res["command"]
    assert "| AIS after the embedding (s) |" in capsys.readouterr().out
