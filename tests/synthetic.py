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
