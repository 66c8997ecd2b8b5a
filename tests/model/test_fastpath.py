"""Pieces of the fast paths, checked on the CPU: banded biased attention, windows, precisions,
batched embedding. (GPU timings are benchmarks, not tests.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_sam.engine import Predictor
from napari_sam.model import build_sam, random_state_dict
from napari_sam.model.common import ChannelLayerNorm
from napari_sam.model.fastpath import linear_bias, prepare_encoder, resolve_precision
from napari_sam.model.image_encoder import bias_terms, biased_attention, relative_table, to_windows


def plain_attention(q, k, v, rel_h, rel_w, h, w):
    """The textbook formula in float64: softmax(q k^T / sqrt(d) + B) v with the decomposed
    bias ``B[(i, j), (k, l)] = q_ij . Rh[i - k] + q_ij . Rw[j - l]``."""
    q, k, v = q.double(), k.double(), v.double()
    d = q.shape[-1]
    rh, rw = relative_table(rel_h.double(), h), relative_table(rel_w.double(), w)  # (h, h, d), (w, w, d)
    b, n = q.shape[:2]
    grid = q.reshape(b, n, h, w, d)
    bias = (torch.einsum("bnijd,ikd->bnijk", grid, rh)[..., :, None]
            + torch.einsum("bnijd,jld->bnijl", grid, rw)[..., None, :]).reshape(b, n, h * w, h * w)
    attn = torch.softmax(q @ k.transpose(-1, -2) / d**0.5 + bias, dim=-1)
    return attn @ v


@pytest.mark.parametrize("max_bias", [1, 3 * 2 * 6 * 5 * 6 * 2, 1 << 30])
@pytest.mark.parametrize("hw", [(6, 5), (7, 7)])
def test_banded_attention_matches_plain_formula(max_bias, hw):
    h, w = hw
    g = torch.Generator().manual_seed(0)
    b, n, d = 2, 3, 8
    q, k, v = (torch.randn(b, n, h * w, d, generator=g) for _ in range(3))
    rel_h, rel_w = torch.randn(2 * h - 1, d, generator=g), torch.randn(2 * w - 1, d, generator=g)
    rows, cols = bias_terms(q, rel_h, rel_w, h, w)
    out = biased_attention(q, k, v, rows, cols, torch.empty(b, h * w, n, d), max_bias)
    expected = plain_attention(q, k, v, rel_h, rel_w, h, w).transpose(1, 2)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_window_padding_with_fill_vector():
    x = torch.randn(1, 5, 6, 4)
    fill = torch.arange(4.0)
    windows, padded = to_windows(x, 4, fill)
    assert padded == (8, 8) and windows.shape == (4, 4, 4, 4)
    grid = windows.reshape(1, 2, 2, 4, 4, 4).transpose(2, 3).reshape(1, 8, 8, 4)
    assert torch.equal(grid[:, :5, :6], x)
    assert torch.equal(grid[:, 5:], fill.expand(1, 3, 8, 4)) and torch.equal(grid[:, :, 6:], fill.expand(1, 8, 2, 4))


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("int8", cpu) == "int8"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", cpu)
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"))


def test_bf16_on_a_cpu_without_bf16_units_warns(monkeypatch):
    from napari_sam.model import fastpath

    monkeypatch.setattr(fastpath, "cpu_has_bf16_units", lambda: False)
    with pytest.warns(RuntimeWarning, match="no bf16 instructions"):
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(fastpath, "cpu_has_bf16_units", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"



@pytest.mark.parametrize("cpuinfo, expected", [
    ("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n", True),
    ("processor\t: 0\nflags\t\t: fpu avx2 fma\n", False),
    ("processor\t: 0\nFeatures\t: fp asimd bf16\n", None),  # aarch64: no x86 flags line
])
def test_cpu_bf16_probe_reads_cpuinfo(monkeypatch, tmp_path, cpuinfo, expected):
    import builtins

    from napari_sam.model import fastpath

    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo)
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path, *a, **k))
    assert fastpath.cpu_has_bf16_units() is expected


def test_channel_layer_norm_upcasts_half_inputs():
    norm = ChannelLayerNorm(8)
    x = torch.randn(1, 8, 3, 3)
    out = norm(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, norm(x), rtol=0.02, atol=0.02)
    assert norm(x.double()).dtype == torch.float64  # no downcast of wider types


@pytest.fixture(scope="module")
def small_state():
    return random_state_dict(build_sam("vit_small_test"), seed=2)


def _predictor(state, precision):
    model = build_sam("vit_small_test")
    model.load_state_dict(state)
    return Predictor(model, "cpu", precision=precision)


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum())


@pytest.mark.parametrize("precision, max_err, min_iou", [("bf16", 0.01, 0.98), ("int8", 0.15, 0.8)])
def test_reduced_precision_accuracy(small_state, rgb_image, precision, max_err, min_iou):
    """bf16 (the CUDA default) meets the issue's bounds on the CPU too; int8 is opt-in and
    only checked for sanity here (its figure for vit_b is in docs/performance.md)."""
    exact, fast = _predictor(small_state, "fp32"), _predictor(small_state, precision)
    assert fast.precision == precision
    a, b = exact.compute_embedding(rgb_image), fast.compute_embedding(rgb_image)
    assert b.features.dtype == torch.float32
    rel = float((a.features - b.features).norm() / a.features.norm())
    assert rel <= max_err, rel
    exact.set_embedding(a)
    fast.set_embedding(b)
    for point in ([80.0, 100.0], [200.0, 300.0]):
        ma = exact.predict(np.array([point]), np.array([1])).masks
        mb = fast.predict(np.array([point]), np.array([1])).masks
        assert min(_iou(x, y) for x, y in zip(ma, mb)) >= min_iou


def test_bf16_encoder_stores_half_weights(small_state):
    model = build_sam("vit_small_test")
    prepare_encoder(model.image_encoder, "bf16")
    enc = model.image_encoder
    assert enc.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert enc.blocks[0].norm1.weight.dtype == torch.float32 and enc.pos_embed.dtype == torch.float32
    assert model.mask_decoder.iou_token.weight.dtype == torch.float32


def test_int8_keeps_padding_bias_available(small_state):
    model = build_sam("vit_small_test")
    prepare_encoder(model.image_encoder, "int8")
    bias = linear_bias(model.image_encoder.blocks[0].attn.qkv)
    assert isinstance(bias, torch.Tensor) and bias.shape == (3 * 64,)


def test_batched_embeddings_equal_single(tiny_model, rgb_image):
    p = Predictor(tiny_model, "cpu")
    images = [rgb_image, rgb_image[::-1].copy(), rgb_image[:200]]
    batched = p.compute_embeddings(images, batch_size=2)
    assert len(batched) == 3
    for image, emb in zip(images, batched):
        single = p.compute_embedding(image)
        assert emb.features.shape == single.features.shape == (1, 256, 64, 64)
        assert (emb.original_size, emb.input_size) == (single.original_size, single.input_size)
        torch.testing.assert_close(emb.features, single.features, rtol=1e-4, atol=1e-4)
