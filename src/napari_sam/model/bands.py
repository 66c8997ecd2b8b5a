"""Row bands of full-resolution convolution stages, so that no full-size intermediate is formed.

At 1024 x 1024 a 64-channel float map is 256 MB: every such temporary is fresh memory (page
faults) and adds to the peak. A ``3 x 3`` convolution (padding 1), a x2 bilinear upsampling
(``align_corners=False``) and a ``2 x 2`` stride-2 transposed convolution are local in the row
direction, so rows ``[r0, r1)`` of their output can be computed from a few input rows around
them. The functions here return exactly those output rows; the caller loops over bands of
:data:`BAND_ROWS` rows. All tensors are ``(B, C, H, W)``; channels-last inputs give channels-last
bands (a band of rows of a channels-last tensor is one contiguous block).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

BAND_ROWS = 64


def bands(height: int, rows: int = BAND_ROWS) -> Iterator[tuple[int, int]]:
    """``(r0, r1)`` row ranges covering ``height`` rows, ``rows`` at a time (``rows`` even)."""
    for r0 in range(0, height, rows):
        yield r0, min(r0 + rows, height)


def rows_of(x: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    """``source(a, b)`` for a whole map: its rows ``[a, b)`` (a view)."""
    return lambda a, b: x[:, :, a:b]


def conv3x3_rows(source: Callable[[int, int], torch.Tensor], height: int, weight: torch.Tensor,
                 bias: torch.Tensor | None, r0: int, r1: int) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``conv2d(x, weight, bias, padding=1)`` of a map ``x`` of ``height``
    rows, where ``source(a, b)`` gives rows ``[a, b)`` of ``x``. The band is convolved with one
    neighbouring row on each side (zero padding only at the map's own top and bottom), and the
    two edge rows of the result are dropped."""
    a, b = max(r0 - 1, 0), min(r1 + 1, height)
    out = F.conv2d(source(a, b), weight, bias, padding=1)
    return out[:, :, r0 - a:r1 - a]


def upsample2x_rows(x: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``interpolate(x, scale_factor=2, mode="bilinear")``. Output row
    ``j`` reads input rows ``j // 2 - 1 .. j // 2 + 1`` at most (clamped at the map's borders);
    the input band starts at an integer row, so the output rows taken have the same weights
    and operations as in the whole map."""
    h = x.shape[2]
    a, b = max(r0 // 2 - 1, 0), min((r1 - 1) // 2 + 2, h)
    out = F.interpolate(x[:, :, a:b], scale_factor=2, mode="bilinear", align_corners=False)
    return out[:, :, r0 - 2 * a:r1 - 2 * a]


def transposed2x_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r0: int,
                      r1: int) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``conv_transpose2d(x, weight, bias, stride=2)`` (kernel 2: output
    rows ``2i, 2i + 1`` come from input row ``i`` alone)."""
    a, b = r0 // 2, (r1 + 1) // 2
    out = F.conv_transpose2d(x[:, :, a:b], weight, bias, stride=2)
    return out[:, :, r0 - 2 * a:r1 - 2 * a]


def put_rows(out: torch.Tensor | None, band: torch.Tensor, r0: int, height: int, add: bool = False) -> torch.Tensor:
    """Write (with ``add``: add) ``band`` at row ``r0`` of ``out``, a channels-last map of
    ``height`` rows, made at the first band when None."""
    if out is None:
        b, c, _, w = band.shape
        out = torch.empty((b, c, height, w), dtype=band.dtype, device=band.device, memory_format=torch.channels_last)
    target = out[:, :, r0:r0 + band.shape[2]]
    if add:
        target += band
    else:
        target.copy_(band)
    return out


def conv3x3_banded(source: Callable[[int, int], torch.Tensor], height: int, weight: torch.Tensor,
                   bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(x, weight, bias, padding=1)`` of the map of ``height`` rows that ``source(a, b)``
    gives, in row bands, added to ``out`` when given."""
    add = out is not None
    for r0, r1 in bands(height):
        out = put_rows(out, conv3x3_rows(source, height, weight, bias, r0, r1), r0, height, add)
    return out


def band_stats(source: Callable[[int, int], torch.Tensor], height: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel mean and ``1 / sqrt(var + eps)`` (biased variance), each
    ``(B, C, 1, 1)``, of the map of ``height`` rows that ``source(a, b)`` gives, read in row bands
    twice: the mean, then the variance of the centred values (as accurate as two passes over
    the whole map; the bands are made again, never held)."""
    total, count = None, 0
    for r0, r1 in bands(height):
        band = source(r0, r1)
        part = band.sum(dim=(2, 3), keepdim=True)
        total, count = (part if total is None else total + part), count + band.shape[2] * band.shape[3]
    mean = total / count
    squares = None
    for r0, r1 in bands(height):
        part = (source(r0, r1) - mean).square_().sum(dim=(2, 3), keepdim=True)
        squares = part if squares is None else squares + part
    return mean, torch.rsqrt(squares / count + eps)


def conv3x3_over(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv2d(x, weight, bias, padding=1)`` written over ``x`` itself (``weight`` maps its
    channels to as many), in row bands: a band's result is stored once the next band is
    computed, when no band still reads those rows (a band reads one row above itself). No
    second full-size map is formed. Returns ``x``."""
    height, pending = x.shape[2], None
    for r0, r1 in bands(height):
        band = conv3x3_rows(rows_of(x), height, weight, bias, r0, r1)
        if pending is not None:
            x[:, :, pending[0]:pending[0] + pending[1].shape[2]] = pending[1]
        pending = (r0, band)
    if pending is not None:
        x[:, :, pending[0]:pending[0] + pending[1].shape[2]] = pending[1]
    return x
