"""Lean mask post-processing: low-res logits -> boolean masks at the original image size.

The straightforward way (:func:`upscale_logits` then ``> 0``) upsamples every mask to the
``S x S`` model input, crops it to the resized image and upsamples again to the original
size, all in float. :func:`masks_from_logits` gives bit-identical masks with less work:

1. The first upsample (``g -> S``, a factor ``S / g`` = 4) runs only on the source rows and
   columns that the crop needs. Same kernel, same scale, same source indices: same values.
2. The second upsample is separable. PyTorch evaluates each output pixel as
   ``(a*w0 + b*w1) * h0 + (c*w0 + d*w1) * h1``: a width pass ``U = interp_w(x)`` (computed
   here with the same kernel, height unchanged, which is exact) then a height pass
   ``out[y] = U[r0(y)] * h0(y) + U[r1(y)] * h1(y)`` with non-negative weights. So an output
   pixel whose two ``U`` values are both ``<= 0`` is ``<= 0``, one whose two values are both
   clearly positive (and finite) is ``> 0``; only the remaining pixels (along mask edges) are
   evaluated, with the kernel's own weights and operation order.

Only CPU tensors and threshold 0 take the lean path; anything else uses the straightforward
one. ``tests/engine/test_postprocess.py`` checks identity against the straightforward result.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import Geometry

_TINY = 1e-30  # products of weights (>= 0.25 for the larger one) with such values cannot underflow
_HUGE = 1e30   # and cannot overflow
MAX_EDGE_FRACTION = 0.025  # above it (ragged logits, e.g. random weights) the plain kernel is faster
_MIN_LEAN = 1 << 18  # outputs smaller than this use the kernel directly (it has another path for tiny ones)


def upscale_logits(logits: torch.Tensor, geometry: Geometry, img_size: int) -> torch.Tensor:
    """Low-res logits ``(P, K, g, g)`` -> logits at the original image size ``(P, K, H, W)``
    (the straightforward reference for :func:`masks_from_logits`)."""
    x = F.interpolate(logits, (img_size, img_size), mode="bilinear", align_corners=False)
    x = x[..., : geometry.input_size[0], : geometry.input_size[1]]
    return F.interpolate(x, geometry.original_size, mode="bilinear", align_corners=False)


def linear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of PyTorch's bilinear resize (``align_corners=False``) along
    one axis, computed in float32 as the CPU kernel does: ``(i0, i1, w0, w1)``, each ``(out_size,)``;
    output ``j`` is ``x[i0] * w0 + x[i1] * w1``."""
    if in_size == out_size:
        idx = np.arange(out_size)
        return idx, idx, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    # scale * (j + 0.5) - 0.5 with one rounding: the kernel is compiled with FMA contraction
    real = (np.float64(scale) * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)
    real = np.maximum(real, np.float32(0.0))
    i0 = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    w1 = np.clip(real - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, w0, w1


def upsample_crop(logits: torch.Tensor, input_size: tuple[int, int], img_size: int) -> torch.Tensor:
    """``(M, g, g)`` -> the ``(M, h, w)`` top-left crop of their bilinear upsample to ``S x S``,
    computing only the source rows/columns that the crop reads (same values as the full path)."""
    g = logits.shape[-1]
    factor = img_size // g
    h, w = input_size

    def needed(n: int) -> int:  # rows 0..n-1 read source rows up to floor(src(n-1)) + 1
        src = max((n - 0.5) / factor - 0.5, 0.0)
        return min(g, int(np.floor(src)) + 2)

    rn, cn = needed(h), needed(w)
    if factor * g != img_size or logits.shape[-2] != g or rn * cn * factor**2 < _MIN_LEAN:
        rn = cn = g  # small crops: the full upsample (one kernel path, no surprises)
    x = F.interpolate(logits[:, None, :rn, :cn], (rn * factor, cn * factor), mode="bilinear", align_corners=False)
    return x[:, 0, :h, :w]


def masks_from_logits(logits: torch.Tensor, geometry: Geometry, img_size: int,
                      threshold: float = 0.0) -> torch.Tensor:
    """Low-res logits ``(P, K, g, g)`` -> bool masks ``(P, K, H, W)`` at the original size,
    identical to ``upscale_logits(logits, geometry, img_size) > threshold``."""
    if logits.device.type != "cpu" or threshold != 0.0 or logits.dtype != torch.float32:
        return upscale_logits(logits, geometry, img_size) > threshold
    p, k = logits.shape[:2]
    x = upsample_crop(logits.reshape(p * k, *logits.shape[2:]), geometry.input_size, img_size)
    (h, w), (oh, ow) = x.shape[-2:], geometry.original_size
    if (oh, ow) == (h, w):  # the second resize is the identity (weights 1 and 0)
        out = x > 0
    elif oh * ow <= h * w or oh * ow < _MIN_LEAN:  # no larger than the crop: the kernel is cheap
        out = _resize_sign(x, (oh, ow))
    else:
        out = _upsample_sign(x, (oh, ow))
        if out is None:  # ragged logits: evaluating every edge costs more than the kernel
            out = _resize_sign(x, (oh, ow))
    return out.reshape(p, k, oh, ow)


def _resize_sign(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(M, h, w)`` float -> ``(M, H, W)`` bool ``bilinear(x, size) > 0`` with the kernel, one
    mask at a time: only one full-size float image exists at once (3 x 4096² floats would be
    200 MB of fresh memory; one stays in the allocator's reused blocks)."""
    out = torch.empty(len(x), *size, dtype=torch.bool)
    for src, dst in zip(x, out):
        torch.gt(F.interpolate(src[None, None], size, mode="bilinear", align_corners=False)[0, 0], 0, out=dst)
    return out


def _upsample_sign(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor | None:
    """``(M, h, w)`` float -> ``(M, H, W)`` bool ``bilinear(x, size) > 0``, evaluated on edges only.

    Output pixel ``(y, x)`` reads the source cell ``{r0, r1} x {c0, c1}`` (``r0 = r0(y)`` ...):
    when all four values are ``<= 0`` it is False, when all are in ``(tiny, huge)`` it is True;
    the pixels of the other ("edge") cells are computed with the kernel's weights and order.
    Returns None when more than :data:`MAX_EDGE_FRACTION` of the cells are edges.
    """
    _, h, w = x.shape
    oh, ow = size
    rows, cols = linear_weights(h, oh), linear_weights(w, ow)
    xp = F.pad(x[:, None], (0, 1, 0, 1), mode="replicate")[:, 0]  # cell (h-1, .) pairs row h-1 with itself
    pos = xp > 0
    sure = (xp > _TINY) & (xp < _HUGE)
    any_pos = pos[:, :-1] | pos[:, 1:]
    any_pos = any_pos[..., :-1] | any_pos[..., 1:]  # (M, h, w): some source of cell (r, c) is > 0
    all_sure = sure[:, :-1] & sure[:, 1:]
    all_sure = all_sure[..., :-1] & all_sure[..., 1:]
    edge = any_pos & ~all_sure
    if int(edge.sum()) > MAX_EDGE_FRACTION * edge.numel():
        return None
    out = _expand_columns(all_sure, cols[0]).index_select(1, torch.from_numpy(rows[0]))  # (M, H, W)
    edge = edge.nonzero()  # (E, 3): mask, cell row, cell column
    if len(edge):
        _fill_edges(out, x, edge, rows, cols)
    return out


def _expand_columns(t: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """``t[..., idx]`` for a non-decreasing ``idx``; runs of equal length use a broadcast copy
    (a gather along the last axis is slow)."""
    counts = np.bincount(idx, minlength=t.shape[-1])
    inner = counts[1:-1]
    if t.shape[-1] < 3 or not (inner == inner[0]).all() or counts[0] < 1 or counts[-1] < 1:
        return t.index_select(-1, torch.from_numpy(idx))
    k = int(inner[0])
    mid = t[..., 1:-1, None].expand(*t.shape[:-1], t.shape[-1] - 2, k).reshape(*t.shape[:-1], -1)
    first = t[..., :1].expand(*t.shape[:-1], int(counts[0]))
    last = t[..., -1:].expand(*t.shape[:-1], int(counts[-1]))
    return torch.cat([first, mid, last], dim=-1)


def _members(idx0: np.ndarray, n: int) -> np.ndarray:
    """For source positions ``0..n-1``, the output positions whose first source is it,
    ``(n, kmax)`` padded with -1."""
    counts = np.bincount(idx0, minlength=n)
    table = np.full((n, max(int(counts.max()), 1)), -1, np.int64)
    order = np.argsort(idx0, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    table[idx0[order], np.arange(len(idx0)) - np.repeat(starts, counts)] = order
    return table


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once to float32 (the float64 product is exact)."""
    return (a.double() * b.double() + c.double()).float()


def _fill_edges(out: torch.Tensor, x: torch.Tensor, edge: torch.Tensor, rows, cols) -> None:
    """Evaluate the output pixels of the edge cells ``(E, 3)`` exactly and write their signs.

    The CPU kernel computes ``fma(t0, h0, t1 * h1)`` with ``t = fma(a, w0, b * w1)`` along rows;
    all pixels of one cell share its four source values and differ only in the weights.
    """
    h, w = x.shape[1:]
    r0, r1, h0, h1 = rows
    c0, c1, w0, w1 = cols
    ytab, xtab = _members(r0, h), _members(c0, w)  # (h, ky), (w, kx)
    mi, ri, ci = edge.unbind(1)
    ys, xs = torch.from_numpy(ytab)[ri], torch.from_numpy(xtab)[ci]  # (E, ky), (E, kx)
    keep = (ys[:, 0] >= 0) & (xs[:, 0] >= 0)  # cells that no output pixel reads
    if not keep.all():
        mi, ri, ci, ys, xs = mi[keep], ri[keep], ci[keep], ys[keep], xs[keep]
    ri1 = torch.clamp(ri + 1, max=h - 1)  # r1 of every member of row ri
    ci1 = torch.clamp(ci + 1, max=w - 1)
    # padding slots repeat the cell's first pixel: duplicate writes of the same value
    ys = torch.where(ys >= 0, ys, ys[:, :1])
    xs = torch.where(xs >= 0, xs, xs[:, :1])

    def weight(table: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(table)[idx]

    w0e, w1e = weight(w0, xs), weight(w1, xs)  # (E, kx)
    h0e, h1e = weight(h0, ys)[:, :, None], weight(h1, ys)[:, :, None]  # (E, ky, 1)
    t0 = _fma(x[mi, ri, ci][:, None], w0e, x[mi, ri, ci1][:, None] * w1e)[:, None, :]  # (E, 1, kx)
    t1 = _fma(x[mi, ri1, ci][:, None], w0e, x[mi, ri1, ci1][:, None] * w1e)[:, None, :]
    vals = _fma(t0, h0e, t1 * h1e)  # (E, ky, kx)
    out[mi[:, None, None], ys[:, :, None], xs[:, None, :]] = vals > 0
