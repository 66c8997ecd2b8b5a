"""Predictor parity helpers: run the same prompts through our :class:`Predictor` and a reference
``SamPredictor`` (segment-anything's or MobileSAM's; SAM 2's tests use :func:`record` with their
own prompts) and report the worst differences.

Tolerances (:data:`TOLERANCES`, fp32, CPU): masks identical except <= 0.1 % of pixels, scores
within 1e-4, low-res logits within 1e-3 max-abs.
"""

from __future__ import annotations

import numpy as np

from napari_sam.engine import Predictor

TOLERANCES = {"mask_fraction": 1e-3, "scores": 1e-4, "logits": 1e-3}
PROMPTS = [  # (points (row, col), labels, box (r0, c0, r1, c1), use previous logits, multimask)
    (np.array([[80.0, 100.0]]), np.array([1]), None, False, True),
    (np.array([[80.0, 100.0], [200.0, 300.0]]), np.array([1, 0]), None, False, True),
    (np.array([[80.0, 100.0], [220.0, 90.0]]), np.array([1, 1]), None, True, False),
    (None, None, np.array([30.0, 50.0, 140.0, 170.0]), False, True),
    (np.array([[150.0, 250.0]]), np.array([1]), np.array([120.0, 220.0, 270.0, 380.0]), True, False),
]


def new_worst() -> dict[str, float]:
    return dict.fromkeys(TOLERANCES, 0.0)


def record(worst: dict[str, float], ours, masks: np.ndarray, scores: np.ndarray, logits: np.ndarray) -> None:
    """Fold one prompt's differences (our ``Prediction`` vs the reference's arrays) into ``worst``."""
    assert ours.masks.shape == masks.shape and ours.masks.dtype == bool and ours.logits.shape == logits.shape
    assert ours.scores.dtype == np.float32 and ours.logits.dtype == np.float32
    worst["mask_fraction"] = max(worst["mask_fraction"], float((ours.masks != masks).mean()))
    worst["scores"] = max(worst["scores"], float(np.abs(ours.scores - scores).max()))
    worst["logits"] = max(worst["logits"], float(np.abs(ours.logits - logits).max()))


def compare(ours: Predictor, theirs, image: np.ndarray) -> dict[str, float]:
    """Run every prompt through both predictors; return the worst differences seen."""
    ours.set_image(image)
    theirs.set_image(image)
    worst = {"features": float((ours.embedding.features - theirs.features).abs().max()), **new_worst()}
    prev_ours = prev_theirs = None
    for points, labels, box, refine, multimask in PROMPTS:
        a = ours.predict(points, labels, box, prev_ours[:1] if refine else None, multimask)
        b_masks, b_scores, b_logits = theirs.predict(
            point_coords=None if points is None else points[:, ::-1].copy(),
            point_labels=labels,
            box=None if box is None else box[[1, 0, 3, 2]],
            mask_input=prev_theirs[:1] if refine else None,
            multimask_output=multimask,
        )
        record(worst, a, b_masks, b_scores, b_logits)
        prev_ours, prev_theirs = a.logits, b_logits
    return worst


def check(worst: dict[str, float]) -> None:
    for key, tolerance in TOLERANCES.items():
        assert worst[key] <= tolerance, worst
