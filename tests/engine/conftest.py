"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def cpu_predictor(tiny_model):
    """A Predictor of the tiny random-weight model on the CPU."""
    from napari_sam.engine import Predictor

    return Predictor(tiny_model, device="cpu")
