"""Predictor parity helpers: run the same prompts through our :class:`Predictor` and a reference
``SamPredictor`` (segment-anything's or MobileSAM's) and report the worst differences.

Tolerances (fp32, CPU): masks identical except <= 0.1 % of pixels, scores within 1e-4,
low-res logits within 1e-3 max-abs.
"""

from __future__ import annotations

import numpy as np

from napari_sam.engine import Predictor

PROMPTS = [  # (points (row, col), labels, box (r0, c0, r1, c1), use previous logits, multimask)
    (np.array([[80.0, 100.0]]), np.array([1]), None, False, True),
    (np.array([[80.0, 100.0], [200.0, 300.0]]), np.array([1, 0]), None, False, True),
    (np.array([[80.0, 100.0], [220.0, 90.0]]), np.array([1, 1]), None, True, False),
    (None, None, np.array([30.0, 50.0, 140.0, 170.0]), False, True),
    (np.array([[150.0, 250.0]]), np.array([1]), np.array([120.0, 220.0, 270.0, 380.0]), True, False),
]


def compare(ours: Predictor, theirs, image: np.ndarray) -> dict[str, float]:
    """Run every prompt through both predictors; return the worst differences seen."""
    ours.set_image(image)
    theirs.set_image(image)
    worst = {"features": float((ours.embedding.features - theirs.features).abs().max()),
             "mask_fraction": 0.0, "scores": 0.0, "logits": 0.0}
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
        assert a.masks.shape == b_masks.shape and a.masks.dtype == bool
        assert a.scores.dtype == np.float32 and a.logits.dtype == np.float32
        worst["mask_fraction"] = max(worst["mask_fraction"], float((a.masks != b_masks).mean()))
        worst["scores"] = max(worst["scores"], float(np.abs(a.scores - b_scores).max()))
        worst["logits"] = max(worst["logits"], float(np.abs(a.logits - b_logits).max()))
        prev_ours, prev_theirs = a.logits, b_logits
    return worst


def check(worst: dict[str, float]) -> None:
    assert worst["mask_fraction"] <= 1e-3, worst
    assert worst["scores"] <= 1e-4, worst
    assert worst["logits"] <= 1e-3, worst
