"""Row bands of full-resolution stages (model/bands.py) equal the whole-map operations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_sam.model import bands as B


def _map(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("height", [1, 2, 7, 64, 130])
def test_band_ranges_cover_the_rows_once(height):
    covered = [r for r0, r1 in B.bands(height, rows=4) for r in range(r0, r1)]
    assert covered == list(range(height))


@pytest.mark.parametrize("h", [3, 16, 35])
def test_upsample_rows_equal_the_whole_upsampling(h):
    x = _map(5, h, 9)
    whole = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    for r0, r1 in [(0, 2 * h), (0, 1), (1, 4), (3, 8), (2 * h - 3, 2 * h), (5, 6)]:
        if r1 <= 2 * h:
            assert torch.equal(B.upsample2x_rows(x, r0, r1), whole[:, :, r0:r1]), (r0, r1)


def test_transposed_rows_equal_the_whole_transposed_convolution():
    x, weight, bias = _map(6, 11, 7), torch.randn(6, 4, 2, 2), torch.randn(4)
    whole = F.conv_transpose2d(x, weight, bias, stride=2)
    for r0, r1 in [(0, 22), (1, 4), (3, 9), (20, 22), (7, 8)]:
        assert torch.allclose(B.transposed2x_rows(x, weight, bias, r0, r1), whole[:, :, r0:r1], atol=1e-6)


@pytest.mark.parametrize("h", [5, 70, 129])
def test_banded_convolution_equals_the_whole_convolution(h):
    x, weight, bias = _map(8, h, 12), torch.randn(4, 8, 3, 3), torch.randn(4)
    whole = F.conv2d(x, weight, bias, padding=1)
    banded = B.conv3x3_banded(B.rows_of(x), h, weight, bias)
    assert banded.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(banded, whole, atol=1e-5)
    again = B.conv3x3_banded(B.rows_of(x), h, weight, None, out=banded.clone())  # accumulates
    assert torch.allclose(again, whole + F.conv2d(x, weight, None, padding=1), atol=1e-5)


def test_band_statistics_equal_the_whole_map():
    x = _map(3, 150, 20) * 3 + 2
    mean, rstd = B.band_stats(B.rows_of(x), 150, 1e-5)
    var = x.double().var(dim=(2, 3), correction=0, keepdim=True)
    assert torch.allclose(mean.double(), x.double().mean(dim=(2, 3), keepdim=True), atol=1e-5)
    assert torch.allclose(rstd.double(), torch.rsqrt(var + 1e-5), rtol=1e-5)


@pytest.mark.parametrize("h", [5, 64, 65, 200])
def test_convolution_over_its_own_input_equals_the_whole_convolution(h):
    x, weight, bias = _map(6, h, 9, seed=3), torch.randn(6, 6, 3, 3), torch.randn(6)
    whole = F.conv2d(x, weight, bias, padding=1)
    y = B.conv3x3_over(x, weight, bias)
    assert y.data_ptr() == x.data_ptr()
    assert torch.allclose(y, whole, atol=1e-5)
