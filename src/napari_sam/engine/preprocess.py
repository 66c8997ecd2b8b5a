"""Image preparation and the one place where napari and model coordinates meet.

napari (and NumPy) index images as ``(row, col)``; SAM takes ``(x, y)`` pixel coordinates
of the image resized so that its longest side is ``S`` (1024). :class:`Geometry` converts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import checks


def to_rgb_uint8(image: np.ndarray, contrast_limits: tuple[float, float] | None = None) -> np.ndarray:
    """Turn a 2D image into ``(H, W, 3)`` uint8 RGB, the model's input domain.

    ``image`` is ``(H, W)`` (grayscale), ``(H, W, 1)`` or ``(H, W, 3)``. uint8 passes
    unchanged unless ``contrast_limits`` are given; other dtypes (and uint8 with limits)
    are mapped linearly from ``contrast_limits`` (default: min-max of the finite values)
    to 0-255, clipped; NaN becomes 0. Limits must be two finite numbers with ``low <= high``
    (``ValueError`` otherwise); ``low == high`` (e.g. a constant image) gives a black image.
    Complex images raise ``TypeError`` (choose the magnitude or a part first).
    """
    image = np.asarray(image)
    checks.pixel_dtype(image.dtype)
    contrast_limits = checks.contrast_limits(contrast_limits)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] != 3:
        raise ValueError(
            f"image has {image.shape[-1]} channels; SAM takes grayscale or RGB. "
            "Choose one channel (or three as RGB) first."
        )
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a 2D image (H, W) or (H, W, C), got shape {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8 or contrast_limits is not None:
        image = rescale_to_uint8(image, contrast_limits)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image)


def robust_limits(image: np.ndarray) -> tuple[float, float]:
    """Min and max of the finite values (0, 0 if there are none); exact ints for integer images."""
    if np.issubdtype(image.dtype, np.integer):
        return image.min().item(), image.max().item()
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


SAMPLE_PIXELS = 4_000_000


def estimate_limits(image, rgb: bool) -> tuple[float, float] | None:
    """Global contrast limits for non-uint8 images from a strided sample (None for uint8);
    exact ints for integer images."""
    checks.pixel_dtype(image.dtype)
    if image.dtype == np.uint8:
        return None
    spatial = 3 if rgb else 2
    step = max(1, int(np.ceil((np.prod(image.shape, dtype=float) / SAMPLE_PIXELS) ** (1 / image.ndim))))
    sample = np.asarray(image[tuple(slice(None, None, step) for _ in range(image.ndim - spatial + 2))])
    sample = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample
    if sample.size == 0:
        return 0.0, 1.0
    return sample.min().item(), sample.max().item()


def rescale_to_uint8(image: np.ndarray, limits: tuple[float, float] | None) -> np.ndarray:
    """Map ``limits`` ``(low, high)`` linearly to 0-255 (clipped; NaN -> 0). Exact for every
    dtype: in float32 where that holds the values (8- and 16-bit pixels), else in float64, and
    for 32/64-bit integers the offset from ``low`` is taken in integers first (int64 data near
    2**62 with a small range keeps its contrast)."""
    checks.pixel_dtype(image.dtype)
    lo, hi = robust_limits(image) if limits is None else checks.contrast_limits(limits)
    if image.dtype.itemsize <= 2 and max(abs(lo), abs(hi)) < 1e30:
        scaled = image.astype(np.float32)
        scaled -= lo
        scaled *= 255.0 / (hi - lo) if hi > lo else 0.0
    else:  # float64: the fraction of the range first, then 255 (no overflow near the float64 range)
        if np.issubdtype(image.dtype, np.integer):
            scaled, span = _offsets(image, lo, hi), float(hi - lo)
        else:
            scaled, span = image.astype(np.float64) * 0.5, hi * 0.5 - lo * 0.5
            scaled -= lo * 0.5
        if hi > lo:
            scaled /= span
            scaled *= 255.0
        else:
            scaled.fill(0.0)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += 0.5
    return scaled.astype(np.uint8)


def _offsets(image: np.ndarray, lo, hi) -> np.ndarray:
    """``image - lo`` as float64 for an integer image, clipped to ``[lo, hi]``, with the integer
    part of the offset taken exactly (modulo 2**64, which the clipped differences fit in)."""
    info = np.iinfo(image.dtype)
    base = min(max(math.floor(lo), info.min), info.max)
    top = min(max(math.ceil(hi), base), info.max)
    clipped = np.clip(image, image.dtype.type(base), image.dtype.type(top))
    if image.dtype.itemsize < 8:
        diff = clipped.astype(np.int64) - base
    else:
        diff = clipped.astype(np.uint64) - np.uint64(base % 2**64)
    out = diff.astype(np.float64)
    out -= lo - base
    return out


def resized_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """Shape ``(h, w)`` with the longest side ``longest`` and the aspect ratio kept (at least
    one pixel: the reference rounds a 1 x 5000 image to 0 rows and fails)."""
    scale = longest / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 RGB ``(H, W, 3)`` to ``size`` ``(h, w)``."""
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def points_inside(points_rc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(N,)`` bool: which ``(row, col)`` points lie on an image of ``shape`` ``(H, W)`` (pixel
    centres are integers, so the image spans -0.5 to H - 0.5 and -0.5 to W - 0.5)."""
    pts = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    return (pts[:, 0] >= -0.5) & (pts[:, 0] <= h - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] <= w - 0.5)


@dataclass(frozen=True)
class Geometry:
    """Sizes of one image: ``original_size`` ``(H, W)`` and resized ``input_size`` ``(h, w)``."""

    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @classmethod
    def for_image(cls, height: int, width: int, longest: int) -> Geometry:
        return cls((height, width), resized_shape(height, width, longest))

    @property
    def scale_xy(self) -> np.ndarray:
        (oh, ow), (ih, iw) = self.original_size, self.input_size
        return np.array([iw / ow, ih / oh])

    def points_to_model(self, points_rc: np.ndarray) -> np.ndarray:
        """``(N, 2)`` napari ``(row, col)`` -> ``(N, 2)`` model ``(x, y)`` (float32)."""
        points_rc = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
        return (points_rc[:, ::-1] * self.scale_xy).astype(np.float32)

    def boxes_to_model(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` ``(min_row, min_col, max_row, max_col)`` -> ``(N, 4)`` ``(x0, y0, x1, y1)``."""
        corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
        return self.points_to_model(corners.reshape(-1, 2)).reshape(-1, 4)
