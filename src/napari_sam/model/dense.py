"""Exact fp32 products on the CPU through oneDNN instead of the BLAS.

PyTorch multiplies fp32 matrices on the CPU with MKL's sgemm. On AMD CPUs MKL takes its
generic paths: measured on a 2-core AMD EPYC with AVX-512 (docs/performance.md), sgemm ran at
50-105 GMAC/s while oneDNN's convolutions, also shipped inside PyTorch, ran the same products
at 200-236 GMAC/s (2 threads); on a 2-core AVX2-only Zen 1 EPYC both run at its peak (34-36
GMAC/s; oneDNN 1.0-1.1x MKL). A ``1 x 1`` convolution of a channels-last grid is a matrix product: rows
``(M, K)`` seen as a ``(1, K, M, 1)`` channels-last image (a view, no copy) convolved with
weights ``(N, K, 1, 1)`` give ``(M, N)``. The arithmetic is fp32 with fp32 accumulation, like
sgemm's; only the summation order differs (relative differences ~1e-6).

:func:`linear` and :func:`matmul_nt` take that route for fp32 CPU tensors with at least
:data:`MIN_ROWS` rows (below it the call overhead wins) outside autocast, and fall back to
PyTorch's own product otherwise (CUDA, bf16, quantized layers, small inputs). Setting
``NAPARI_SAM_ONEDNN=0`` turns the route off (for comparisons). :func:`attention` is exact
softmax attention over blocks of queries built on :func:`matmul_nt`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

MIN_ROWS = 256
SCORE_BLOCK = 1 << 24  # scores per query block of :func:`attention` (64 MB of fp32)
KEY_CHUNK = 4096  # keys per chunk where :func:`attention` runs over more than two chunks of keys
CHUNKED_QUERIES = 512  # queries per block on that path
_onednn_convolution = getattr(torch, "mkldnn_convolution", None)


def _routed(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.shape[-1] == weight.shape[-1] and x.numel() >= MIN_ROWS * x.shape[-1]
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()
            and os.environ.get("NAPARI_SAM_ONEDNN", "1") != "0")


def matmul_nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a (..., K) @ b (N, K)ᵀ (+ bias (N,))`` -> ``(..., N)``."""
    if not _routed(a, b):
        return F.linear(a, b, bias)
    lead, k = a.shape[:-1], a.shape[-1]
    rows = a.reshape(-1, k)
    m = rows.shape[0]
    grid, weight = rows.view(1, m, 1, k).permute(0, 3, 1, 2), b.view(b.shape[0], k, 1, 1)
    if _onednn_convolution is not None:  # F.conv2d's own choice would skip oneDNN for small grids or one thread
        out = _onednn_convolution(grid, weight, bias, (0, 0), (1, 1), (1, 1), 1)
    else:
        out = F.conv2d(grid, weight, bias)
    return out.permute(0, 2, 3, 1).reshape(*lead, b.shape[0])


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for an ``nn.Linear``, through oneDNN where :func:`matmul_nt` routes it;
    any other layer (a quantized one, say) is just called."""
    if type(layer) is not nn.Linear:
        return layer(x)
    return matmul_nt(x, layer.weight, layer.bias)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention ``softmax(q kᵀ / √d) v`` of ``q (B, h, Nq, d)``, ``k (B, h, Nk, d)``,
    ``v (B, h|1, Nk, c)`` -> ``(B, h, Nq, c)`` (``c`` may differ from ``d``). fp32 on the CPU:
    exact, each product through :func:`matmul_nt`, in blocks of queries with their whole score
    rows at once (about :data:`SCORE_BLOCK` scores); over more than ``2 * KEY_CHUNK`` keys (SAM 2's
    memory cross-attention: 28k keys) in blocks of :data:`CHUNKED_QUERIES` queries and
    :data:`KEY_CHUNK` keys with a running maximum and sum (the softmax rescaled as chunks arrive),
    so that scores and keys stay in cache and the products keep their pace (measured on a 2-core
    AVX2 CPU: 1.6 -> 1.4 s per 4096 x 28704 cross-attention). Elsewhere (CUDA, bf16) PyTorch's
    fused kernel."""
    if q.device.type != "cpu" or q.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return F.scaled_dot_product_attention(q, k, v.expand(-1, q.shape[1], -1, -1))
    b, h, n, d = q.shape
    q = q * d ** -0.5
    out = q.new_empty(b, h, n, v.shape[-1])
    chunked = k.shape[-2] > 2 * KEY_CHUNK
    step = CHUNKED_QUERIES if chunked else max(16, SCORE_BLOCK // max(1, k.shape[-2]))
    for i in range(b):
        for j in range(h):
            queries, keys = q[i, j].contiguous(), k[i, j].contiguous()
            values_t = v[i, min(j, v.shape[1] - 1)].t().contiguous()
            if chunked:
                chunks = [(keys[s:s + KEY_CHUNK], values_t[:, s:s + KEY_CHUNK].contiguous())
                          for s in range(0, keys.shape[0], KEY_CHUNK)]
            for r in range(0, n, step):
                if chunked:
                    out[i, j, r:r + step] = _over_key_chunks(queries[r:r + step], chunks)
                    continue
                scores = matmul_nt(queries[r:r + step], keys)
                out[i, j, r:r + step] = matmul_nt(torch.softmax(scores, -1, out=scores), values_t)
    return out


def _over_key_chunks(queries: torch.Tensor, chunks: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``softmax(queries keysᵀ) values`` for ``queries (n, d)`` (already scaled) and
    ``chunks`` of ``(keys (m, d), values transposed (c, m))``: online softmax, the running
    maximum ``top``, sum ``total`` and output rescaled by ``exp(old top - new top)``."""
    out = top = total = None
    for keys, values_t in chunks:
        scores = matmul_nt(queries, keys)
        chunk_top = scores.amax(-1, keepdim=True)
        if out is None:
            top = chunk_top
            total = scores.sub_(top).exp_().sum(-1, keepdim=True)
            out = matmul_nt(scores, values_t)
            continue
        new_top = torch.maximum(top, chunk_top)
        rescale = (top - new_top).exp_()
        top = new_top
        total.mul_(rescale).add_(scores.sub_(top).exp_().sum(-1, keepdim=True))
        out.mul_(rescale).add_(matmul_nt(scores, values_t))
    return out.div_(total)
