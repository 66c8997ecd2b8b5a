"""Stand-ins for instance-segmentation tests: a "predictor" whose embedding of a window is its
pixels and a "decoder" that turns those pixels into maps, so that the expected labels are known
(one per disc) and tiles, planes and stitching can be checked without a network."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from napari_sam.engine import Cancelled, Embedding
from napari_sam.engine.instance_maps import labels_from_maps
from napari_sam.engine.instances import instance_defaults
from napari_sam.model.unetr import InstanceDecoder
from tests.synthetic import disc_maps


class PixelPredictor:
    """Duck-types :class:`napari_sam.engine.Predictor` for :class:`VolumeEmbeddings`."""

    def __init__(self, model_name: str = "pixels") -> None:
        self.model_name = model_name
        self.model = nn.Identity()

    def compute_embedding(self, image, contrast_limits=None, cancel=None) -> Embedding:
        if cancel is not None and cancel():
            raise Cancelled("embedding cancelled")
        pixels = np.asarray(image, np.float32)
        return Embedding(torch.from_numpy(pixels.copy())[None, None], pixels.shape, pixels.shape, self.model_name)


class PixelDecoder(InstanceDecoder):
    """Maps from the pixels of a :class:`PixelPredictor` embedding (bright = object): foreground,
    and both distances from the distance to the object's edge *within the window* (12 px deep =
    core), or always ``fixed_maps``. Counts its calls."""

    def __init__(self, fixed_maps: np.ndarray | None = None) -> None:
        nn.Module.__init__(self)
        self.model_name = None
        self.fixed = fixed_maps
        self.calls = 0

    def maps(self, features, input_size, original_size, poll=None) -> torch.Tensor:
        self.calls += 1
        if poll is not None:
            poll()
        if self.fixed is not None:
            return torch.from_numpy(self.fixed)[None]
        inside = features[0, 0].numpy() > 0.5
        depth = np.clip(1.0 - ndimage.distance_transform_edt(inside) / 12.0, 0.0, 1.0)
        return torch.from_numpy(np.stack([np.where(inside, 0.95, 0.05), depth, depth]).astype(np.float32))[None]


def disc_image(shape: tuple[int, int], discs) -> tuple[np.ndarray, list]:
    """A float32 image, 1 inside the discs ``[(row, col, radius), ...]`` and 0 outside."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape, np.float32)
    for r, c, rad in discs:
        image[(rr - r) ** 2 + (cc - c) ** 2 < rad**2] = 1.0
    return image, list(discs)


TRACKS = [(30, 30, 14), (30, 90, 16), (95, 40, 18), (90, 100, 15)]


def moving_discs(planes: int) -> tuple[np.ndarray, int]:
    """A ``(planes, 128, 128)`` stack of four separate discs drifting 2 px per plane, and their count."""
    image = np.stack([disc_image((128, 128), [(r + 2 * z, c + z, rad) for r, c, rad in TRACKS])[0]
                      for z in range(planes)])
    return image, len(TRACKS)


def stack_labels(planes: int = 8, split_at: int = 4, seed: int = 4) -> np.ndarray:
    """Per-plane labels (ids unique across the stack) of twelve discs moving, shrinking away from
    the middle plane and sometimes touching; the first one splits in two from plane ``split_at``."""
    rng = np.random.default_rng(seed)
    base = [(rng.uniform(30, 226), rng.uniform(30, 226), rng.uniform(10, 22)) for _ in range(12)]
    out, offset = [], 0
    for z in range(planes):
        discs = [(r + 2 * z * np.sin(i), c + 1.5 * z, rad * (1 - 0.05 * abs(z - planes // 2)))
                 for i, (r, c, rad) in enumerate(base)]
        if z >= split_at:
            r, c, rad = discs[0]
            discs[0] = (r - rad / 2, c, rad / 2)
            discs.append((r + rad / 2, c, rad / 2))
        labels = labels_from_maps(*disc_maps((256, 256), discs, 0.05, seed=z), **instance_defaults(None))
        labels[labels > 0] += np.uint32(offset)
        offset = int(labels.max()) if labels.any() else offset
        out.append(labels)
    return np.stack(out)
