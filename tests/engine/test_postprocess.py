"""The lean mask post-processing gives exactly the masks of the straightforward path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam.engine import Predictor
from napari_sam.engine import postprocess as pp
from napari_sam.engine.preprocess import Geometry

SHAPES = [(1024, 1024), (4096, 4096), (300, 400), (2000, 3000), (3001, 1500), (5000, 700),
          (1024, 4096), (5000, 3), (3, 5000), (1500, 1500), (777, 2049), (1, 5000)]


def smooth_logits(seed: int, noise: float, p: int = 2) -> torch.Tensor:
    """``(p, 3, 256, 256)`` logits: smooth blobs plus optional per-pixel noise."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.randn(p, 3, 16, 16, generator=g) * 3, (256, 256), mode="bicubic", align_corners=False)
    return base + noise * torch.randn(p, 3, 256, 256, generator=g)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_masks_identical_to_straightforward(shape, noise):
    geometry = Geometry.for_image(*shape, 1024)
    logits = smooth_logits(sum(shape), noise)
    lean = pp.masks_from_logits(logits, geometry, 1024)
    plain = pp.upscale_logits(logits, geometry, 1024) > 0
    assert lean.shape == plain.shape == (2, 3, *shape) and lean.dtype == torch.bool
    assert torch.equal(lean, plain)


@pytest.mark.parametrize("shape", [(4096, 4096), (2000, 3000), (5000, 700)])
def test_edge_evaluation_is_exact_on_ragged_logits(shape, monkeypatch):
    """Force the edge path even where most cells are edges (the fallback would hide errors)."""
    monkeypatch.setattr(pp, "MAX_EDGE_FRACTION", 1.0)
    geometry = Geometry.for_image(*shape, 1024)
    logits = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    logits[0, 0, :20] = 0.0  # exact zeros and a tiny value: the "<= 0" / "sure" boundaries
    logits[0, 1, 100, 100] = 1e-35
    assert torch.equal(pp.masks_from_logits(logits, geometry, 1024), pp.upscale_logits(logits, geometry, 1024) > 0)


@pytest.mark.parametrize("sizes", [(1024, 4096), (683, 2000), (768, 5000), (300, 1000), (1024, 1025)])
def test_bilinear_at_reproduces_kernel_values(sizes):
    h, oh = sizes
    w, ow = 700, 2100
    x = torch.randn(2, h, w, generator=torch.Generator().manual_seed(h))
    ref = F.interpolate(x[:, None], (oh, ow), mode="bilinear", align_corners=False)[:, 0]
    rows = tuple(torch.from_numpy(a) for a in pp.linear_weights(h, oh))
    cols = tuple(torch.from_numpy(a) for a in pp.linear_weights(w, ow))
    g = torch.Generator().manual_seed(1)
    mi, ys, xs = (torch.randint(0, n, (50_000,), generator=g) for n in (2, oh, ow))
    ys[:500], xs[500:1000], ys[1000:1500] = oh - 1, ow - 1, 0
    r0, r1, h0, h1 = (t[ys] for t in rows)
    c0, c1, w0, w1 = (t[xs] for t in cols)
    t0 = pp._fma(x[mi, r0, c0], w0, x[mi, r0, c1] * w1)
    t1 = pp._fma(x[mi, r1, c0], w0, x[mi, r1, c1] * w1)
    assert torch.equal(pp._fma(t0, h0, t1 * h1), ref[mi, ys, xs])


def test_expand_columns_matches_gather():
    t = torch.rand(2, 5, 40) > 0.5
    for out in (160, 97, 400, 41):
        idx = pp.linear_weights(40, out)[0]
        assert torch.equal(pp._expand_columns(t, idx), t[..., torch.from_numpy(idx)])


def test_predictor_outputs_unchanged(tiny_model, rgb_image):
    """Predictor masks equal the straightforward post-processing of its own logits."""
    p = Predictor(tiny_model, "cpu")
    big = np.kron(rgb_image, np.ones((8, 8, 1), np.uint8))  # 2400 x 3200
    for image in (rgb_image, big):
        p.set_image(image)
        pred = p.predict(np.array([[80.0, 100.0]]), np.array([1]))
        logits = torch.from_numpy(pred.logits)[None]
        plain = (pp.upscale_logits(logits, p.embedding.geometry, 1024) > 0)[0].numpy()
        assert pred.masks.dtype == bool and pred.masks.shape == (3, *image.shape[:2])
        np.testing.assert_array_equal(pred.masks, plain)
