"""The torchvision stand-in of tests/oracles/sam1.py must behave like the real torchvision.

Runs only where the real torchvision imports (e.g. a venv with torch==2.14.1 and
torchvision==0.29.1); CI's CPU-only torch cannot import PyPI's torchvision.
"""

import numpy as np
import pytest
import torch

from tests.oracles import sam1 as reference

pytestmark = pytest.mark.skipif(not reference.real_torchvision_available(), reason="real torchvision not importable")


@pytest.mark.parametrize("shape,size", [((300, 400, 3), (768, 1024)), ((1500, 900, 3), (1024, 614)), ((64, 64, 3), (1024, 1024))])
def test_resize_matches_torchvision(shape, size):
    from torchvision.transforms.functional import resize, to_pil_image

    from napari_sam.engine.preprocess import resize_rgb

    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    real = np.array(resize(to_pil_image(img), size))
    assert np.array_equal(resize_rgb(img, size), real)
    from PIL import Image

    assert np.array_equal(np.array(Image.fromarray(img).resize(size[::-1], Image.BILINEAR)), real)


def test_batched_nms_matches_torchvision():
    from torchvision.ops.boxes import batched_nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    wh = torch.rand(200, 2, generator=g) * 40 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(200, generator=g)
    idxs = torch.randint(0, 3, (200,), generator=g)
    for thresh in (0.3, 0.7):
        assert torch.equal(reference._batched_nms(boxes, scores, idxs, thresh), batched_nms(boxes, scores, idxs, thresh))


@pytest.mark.parametrize("shape", [(300, 400, 3), (1024, 1024, 3), (90, 1200, 3)])
def test_sam2_transforms_match_torchvision(shape):
    """SAM 2's image predictor: ToTensor, then a scripted Resize + Normalize."""
    from torchvision.transforms import Normalize, Resize, ToTensor

    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    real = torch.jit.script(torch.nn.Sequential(Resize((256, 256)), Normalize(mean, std)))(ToTensor()(img))
    ours = torch.jit.script(torch.nn.Sequential(reference._Resize((256, 256)), reference._Normalize(mean, std)))(
        reference._ToTensor()(img))
    assert torch.equal(real, ours)
