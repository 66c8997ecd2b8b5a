"""Shared bookkeeping of the image parity tests (SAM 1 and SAM 2): the worst differences seen
and the tolerances of the issues (fp32, CPU)."""

from __future__ import annotations

import numpy as np

TOLERANCES = {"mask_fraction": 1e-3, "scores": 1e-4, "logits": 1e-3}


def new_worst() -> dict[str, float]:
    return dict.fromkeys(TOLERANCES, 0.0)


def record(worst: dict[str, float], ours, masks: np.ndarray, scores: np.ndarray, logits: np.ndarray) -> None:
    """Fold one prompt's differences (our ``Prediction`` vs the oracle's arrays) into ``worst``."""
    assert ours.masks.shape == masks.shape and ours.masks.dtype == bool
    assert ours.scores.dtype == np.float32 and ours.logits.dtype == np.float32 and ours.logits.shape == logits.shape
    worst["mask_fraction"] = max(worst["mask_fraction"], float((ours.masks != masks).mean()))
    worst["scores"] = max(worst["scores"], float(np.abs(ours.scores - scores).max()))
    worst["logits"] = max(worst["logits"], float(np.abs(ours.logits - logits).max()))


def check(worst: dict[str, float]) -> None:
    for key, tolerance in TOLERANCES.items():
        assert worst[key] <= tolerance, worst
