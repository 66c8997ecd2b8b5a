"""Synthetic test data shared by tests and benchmarks: images with known objects, and random
weights edited so that masks follow image content (see :func:`coherent_state`)."""

from __future__ import annotations

import numpy as np
import torch


def coherent_state(state: dict[str, torch.Tensor], scale: float = 1000.0, iou_shift: float = 0.8):
    state = dict(state)
    for key in ("mask_decoder.output_upscaling.0.weight", "mask_decoder.output_upscaling.3.weight"):
        weight = state[key].clone()
        weight[:] = weight[..., :1, :1]
        state[key] = weight
    for i in range(4):
        key = f"mask_decoder.output_hypernetworks_mlps.{i}.layers.2"
        state[key + ".weight"] = state[key + ".weight"] * scale
        state[key + ".bias"] = state[key + ".bias"] * scale
    key = "mask_decoder.iou_prediction_head.layers.2.bias"
    state[key] = state[key] + iou_shift
    return state


def discs_image() -> np.ndarray:
    rr, cc = np.mgrid[:300, :400]
    img = np.full((300, 400, 3), 40, np.uint8)
    discs = [(80, 100, 40), (200, 300, 60), (220, 90, 25), (70, 300, 30), (160, 200, 20)]
    colours = [(250, 60, 60), (60, 250, 60), (60, 60, 250), (250, 250, 60), (200, 200, 200)]
    for (r, c, rad), colour in zip(discs, colours):
        img[(rr - r) ** 2 + (cc - c) ** 2 < rad**2] = colour
    return img


def moving_discs(frames: int = 8, shape: tuple[int, int] = (300, 400), seed: int = 0) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: two coloured discs moving over a noisy background."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    rng = np.random.default_rng(seed)
    sy, sx = shape[0] / 300, shape[1] / 400
    out = np.empty((frames, *shape, 3), np.uint8)
    for t in range(frames):
        img = rng.integers(0, 50, (*shape, 3)).astype(np.uint8)
        for r, c, rad, colour in [((80 + 5 * t) * sy, (100 + 8 * t) * sx, 40 * sy, (250, 60, 60)),
                                  ((200 - 4 * t) * sy, (300 - 6 * t) * sx, 50 * sy, (60, 250, 60))]:
            img[(rr - r) ** 2 + (cc - c) ** 2 < rad**2] = colour
        out[t] = img
    return out


def disc_maps(shape: tuple[int, int], discs, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Decoder-like maps ``(3, H, W)`` float32 of known discs ``[(row, col, radius), ...]``
    (discs may touch; the nearest centre owns a pixel): a foreground probability, the distance
    to the centre (0 at the centre, 1 at the rim and outside) and the inverted distance to the
    boundary (0 deep inside, 1 at the rim and outside), with Gaussian noise of ``noise``."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    discs = np.asarray(discs, np.float32).reshape(-1, 3)
    dist = np.sqrt((rr[None] - discs[:, 0, None, None]) ** 2 + (cc[None] - discs[:, 1, None, None]) ** 2)
    rel = dist / discs[:, 2, None, None]
    owner = rel.argmin(0)
    rel = np.take_along_axis(rel, owner[None], 0)[0]
    inside = rel < 1
    foreground = np.where(inside, 0.95, 0.05)
    center = np.where(inside, rel, 1.0)
    boundary = np.where(inside, 1.0 - (1.0 - rel) * discs[owner, 2] / discs[:, 2].max(), 1.0)
    rng = np.random.default_rng(seed)
    maps = np.stack([foreground, center, boundary]) + noise * rng.standard_normal((3, *shape))
    return np.clip(maps, 0, 1).astype(np.float32)


def drifting_disc(lead: tuple[int, ...], drift_axis: int = 0, seed: int = 11, noise: int = 400,
                  radius: int = 22, step: int = 3) -> np.ndarray:
    """uint16 ``(*lead, 96, 128)``: noise below ``noise``, plus a bright disc whose centre moves
    ``step`` pixels per index along leading axis ``drift_axis`` (a stack, a movie, a channel)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:96, :128]
    data = rng.integers(0, noise, (*lead, 96, 128)).astype(np.uint16)
    for idx in np.ndindex(*lead):
        data[idx][(rr - 48) ** 2 + (cc - 50 - step * idx[drift_axis]) ** 2 < radius**2] += 3000
    return data


def two_cells(lead: tuple[int, ...], shape: tuple[int, int] = (64, 80), seed: int = 5) -> np.ndarray:
    """uint16 ``(*lead, H, W)``: noise plus two bright discs (cells) moving apart along the first
    leading axis, one to the right and one to the left (centres at :func:`cell_centres`)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    data = rng.integers(0, 300, (*lead, *shape)).astype(np.uint16)
    for idx in np.ndindex(*lead):
        for (r, c), level in zip(cell_centres(idx[0] if idx else 0, shape), (3000, 2000)):
            data[idx][(rr - r) ** 2 + (cc - c) ** 2 < (shape[0] // 7) ** 2] += level
    return data


def cell_centres(i: int, shape: tuple[int, int] = (64, 80)) -> list[tuple[float, float]]:
    """``(row, col)`` of the two cells of :func:`two_cells` at index ``i`` of the first axis."""
    h, w = shape
    return [(h * 0.3, w * 0.25 + i), (h * 0.7, w * 0.75 - i)]
