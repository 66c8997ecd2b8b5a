"""CPU products through oneDNN (napari_sam.model.dense) and the memory attention built on them:
the same results as PyTorch's own products, within fp32 summation-order differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from napari_sam.model import dense
from napari_sam.model.memory import RotaryAttention


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("shape", [(300, 48), (2, 160, 48), (1, 3, 100, 48)])
def test_matmul_nt_equals_linear_and_goes_through_onednn(shape):
    torch.manual_seed(0)
    x, w, b = torch.randn(*shape), torch.randn(40, 48), torch.randn(40)
    got = dense.matmul_nt(x, w, b)
    assert got.shape == (*shape[:-1], 40)
    assert torch.allclose(got, F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    assert "aten::mkldnn_convolution" in _ops(lambda: dense.matmul_nt(x, w, b))


def test_small_inputs_other_dtypes_and_the_switch_use_pytorchs_product(monkeypatch):
    torch.manual_seed(0)
    w = torch.randn(40, 48)
    small = torch.randn(dense.MIN_ROWS - 1, 48)
    assert "aten::mkldnn_convolution" not in _ops(lambda: dense.matmul_nt(small, w))
    half = torch.randn(400, 48, dtype=torch.bfloat16)
    assert dense.matmul_nt(half, w.bfloat16()).dtype == torch.bfloat16
    assert "aten::mkldnn_convolution" not in _ops(lambda: dense.matmul_nt(half, w.bfloat16()))
    big = torch.randn(400, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dense.matmul_nt(big, w).dtype == torch.bfloat16
    monkeypatch.setenv("NAPARI_SAM_ONEDNN", "0")
    assert "aten::mkldnn_convolution" not in _ops(lambda: dense.matmul_nt(big, w))
    assert torch.equal(dense.matmul_nt(big, w), F.linear(big, w))


def test_linear_calls_layers_that_are_not_plain_linear():
    class Doubling(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    layer = Doubling(8, 4)
    x = torch.randn(300, 8)
    assert torch.allclose(dense.linear(layer, x), 2 * F.linear(x, layer.weight, layer.bias))
    plain = torch.nn.Linear(8, 4)
    assert torch.allclose(dense.linear(plain, x), plain(x), atol=1e-6)


@pytest.mark.parametrize("path", ["whole rows", "key chunks"])
@pytest.mark.parametrize("values", ["same", "narrow", "shared"])
def test_attention_equals_pytorchs_attention(values, path, monkeypatch):
    monkeypatch.setattr(dense, "SCORE_BLOCK", 300 * 40)  # blocks of 40 queries: 7 of them, the last short
    if path == "key chunks":  # 300 keys > 2 x 64: chunks of 64 keys (the last of 44), blocks of 40 queries
        monkeypatch.setattr(dense, "KEY_CHUNK", 64)
        monkeypatch.setattr(dense, "CHUNKED_QUERIES", 40)
    torch.manual_seed(0)
    b, h, nq, nk, d = 2, 2, 260, 300, 32
    q, k = torch.randn(b, h, nq, d), torch.randn(b, h, nk, d)
    k[:, :, 7] *= 20  # sharply peaked rows: their maximum in the first chunk of keys,
    k[:, :, 250] *= 30  # or in a later one (the running sums must be rescaled)
    c = 16 if values == "narrow" else d
    v = torch.randn(b, 1 if values == "shared" else h, nk, c)
    weights = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, -1)
    got = dense.attention(q.transpose(2, 3).contiguous().transpose(2, 3), k, v)  # a strided query too
    assert got.shape == (b, h, nq, c)
    assert torch.allclose(got, weights @ v, atol=2e-5, rtol=1e-5)


def test_memory_cross_attention_keeps_its_rotary_and_pointer_keys():
    """The module's CPU path (narrow values, projected after the attention) against the whole
    computation written out: rotated queries and spatial keys, unrotated pointer keys,
    projected values, softmax, output projection."""
    torch.manual_seed(1)
    attn = RotaryAttention(64, kv_dim=16).eval()
    torch.nn.init.normal_(attn.v_proj.bias, std=1.0)  # a bias that must pass through the softmax unchanged
    grid, n_pointer = 16 * 16, 4
    q_in = torch.randn(1, grid, 64)
    keys, values = torch.randn(1, 2 * grid + n_pointer, 16), torch.randn(1, 2 * grid + n_pointer, 16)
    with torch.no_grad():
        got = attn(q_in, keys, values, n_rotary=2 * grid)
        table = attn.table(grid, "cpu")
        q = torch.view_as_complex(attn.q_proj(q_in).unflatten(-1, (32, 2))) * table
        k = torch.view_as_complex(attn.k_proj(keys).unflatten(-1, (32, 2)))
        k = torch.cat([k[:, :2 * grid] * table.repeat(2, 1), k[:, 2 * grid:]], 1)
        q, k = torch.view_as_real(q).flatten(-2), torch.view_as_real(k).flatten(-2)
        weights = torch.softmax(q @ k.transpose(1, 2) / 8.0, -1)
        expected = attn.out_proj(weights @ attn.v_proj(values))
    assert torch.allclose(got, expected, atol=1e-5)
