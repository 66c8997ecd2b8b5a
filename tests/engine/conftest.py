"""Fixtures of the engine tests."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.engine import Predictor


@pytest.fixture()
def cpu_predictor(tiny_model):
    """A Predictor of the tiny random-weight model on the CPU."""
    from napari_sam.engine import Predictor

    return Predictor(tiny_model, device="cpu")


class CountingPredictor(Predictor):
    """A real predictor that counts how often it embeds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.embedded = 0

    def compute_embedding(self, *args, **kwargs):
        self.embedded += 1
        return super().compute_embedding(*args, **kwargs)


@pytest.fixture()
def predictor(tiny_model):
    return CountingPredictor(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def stack():
    """(4, 96, 128) uint16 stack: a disc drifting through z on a noisy background."""
    rng = np.random.default_rng(1)
    rr, cc = np.mgrid[:96, :128]
    data = rng.integers(0, 500, (4, 96, 128)).astype(np.uint16)
    for z in range(4):
        data[z][(rr - 48) ** 2 + (cc - 40 - 4 * z) ** 2 < 20**2] += 3000
    return data
