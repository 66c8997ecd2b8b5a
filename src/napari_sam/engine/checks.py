"""Argument checks of the engine's entry points (no Qt, no napari).

Bad input gets a ``ValueError`` or ``TypeError`` that names the argument and says what is
accepted, before any heavy work (a model load, an embedding, a mask generation): NaN and
infinite coordinates, limits of the wrong length, complex pixels, a threshold that would
silently keep nothing.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

MAX_CROP_LAYERS = 4  # layer i re-embeds 4**i crops: 4 layers already cost 341 embeddings


def pixel_dtype(dtype, name: str = "image") -> np.dtype:
    """``dtype`` if SAM can take such pixels (real numbers or bool), else ``TypeError``."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} is complex ({dtype}); SAM takes real pixel values: pass np.abs({name}) "
                        f"(the magnitude), {name}.real or {name}.imag")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"{name} dtype {dtype} is not numeric; SAM takes integer, float or bool pixels")
    return dtype


def contrast_limits(limits, name: str = "contrast_limits") -> tuple[float, float] | None:
    """``(low, high)`` as two finite real numbers with ``low <= high`` (None passes). Integers
    stay exact Python ints (the limits of int64 data near 2**62 must not be rounded)."""
    if limits is None:
        return None
    values = list(np.asarray(limits, dtype=object).ravel())
    if len(values) != 2:
        raise ValueError(f"{name} must be two numbers (low, high), got {len(values)} value(s): {limits!r}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be two real numbers (low, high), got {limits!r}")
        out.append(int(v) if isinstance(v, numbers.Integral) else float(v))
    lo, hi = out
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"contrast limits must be finite numbers, got ({lo}, {hi}) for {name}")
    if hi < lo:
        raise ValueError(f"contrast limits are reversed: ({lo:g}, {hi:g}); give them as (low, high)")
    return lo, hi


def finite(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` if every entry is a finite number, else ``ValueError`` naming the first bad row."""
    bad = ~np.isfinite(values)
    if bad.any():
        row = np.argwhere(bad)[0][0] if values.ndim > 1 else int(np.argmax(bad))
        raise ValueError(f"{name} must be finite numbers: entry {row} is {values[row].tolist()}")
    return values


def coordinates(values, name: str, width: int, what: str) -> np.ndarray:
    """``values`` as a float64 ``(N, width)`` array of finite numbers (``what`` names a row)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numbers, {what} per row; got {values!r}") from None
    if arr.ndim > 2 or arr.size % width or (arr.ndim == 2 and arr.shape[1] != width):
        raise ValueError(f"{name} must have shape (N, {width}) ({what}), got shape {arr.shape}")
    return finite(arr.reshape(-1, width), name)


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (bools and non-whole numbers are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{name} must be an integer {span}, got {value}")
    return value


def real(value, name: str, low: float | None = None, high: float | None = None, *,
         high_open: bool = False, note: str = "") -> float:
    """``value`` as a finite float in ``[low, high]`` (``[low, high)`` if ``high_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    below = low is not None and value < low
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        span = f"[{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must be a finite number in {span}{note}, got {value}")
    return value


def generator_settings(*, points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                       stability_score_offset, box_nms_thresh, crop_n_layers, crop_overlap_ratio,
                       min_mask_region_area) -> None:
    """Check :func:`~napari_sam.engine.generate_masks` settings (types and ranges), before work."""
    integer(points_per_side, "points_per_side", 1)
    integer(points_per_batch, "points_per_batch", 1)
    real(pred_iou_thresh, "pred_iou_thresh", None, 1.0, note=" (<= 0 keeps every mask)")
    real(stability_score_thresh, "stability_score_thresh", None, 1.0, note=" (<= 0 keeps every mask)")
    real(stability_score_offset, "stability_score_offset", 0.0)
    real(box_nms_thresh, "box_nms_thresh", 0.0, note=" (>= 1 keeps duplicates)")
    integer(crop_n_layers, "crop_n_layers", 0, MAX_CROP_LAYERS)
    real(crop_overlap_ratio, "crop_overlap_ratio", 0.0, 1.0, high_open=True)
    integer(min_mask_region_area, "min_mask_region_area", 0)
