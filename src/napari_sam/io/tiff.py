"""Labels images to TIFF: smallest unsigned dtype, pixel size as metadata, atomic write.

Arrays are ``(..., row, col)``; ``scale`` has one entry per axis in the same order (napari's
``layer.scale``). The last two entries become the TIFF X/Y resolution (pixels per unit):
per centimetre when ``unit`` is micrometre/nanometre/millimetre, unit-less otherwise. The full
scale and unit are also stored as JSON in the image description (``tifffile`` shaped metadata).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_path

_UNIT_TO_CM = {"micrometer": 1e-4, "micron": 1e-4, "um": 1e-4, "µm": 1e-4,
               "nanometer": 1e-7, "nm": 1e-7, "millimeter": 0.1, "mm": 0.1,
               "centimeter": 1.0, "cm": 1.0}


def smallest_uint_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ``max_value`` (>= 0)."""
    if max_value < 0:
        raise ValueError(f"labels must be non-negative, got {max_value}")
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"label id {max_value} does not fit in 64 bits")


def _as_labels(data: Any) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"labels must be at least 2D, got shape {data.shape}")
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.mod(data, 1) == 0):
            raise ValueError("labels must hold whole numbers")
    if data.size and data.min() < 0:
        raise ValueError(f"labels must be non-negative, found {data.min()}")
    top = int(data.max()) if data.size else 0
    return data.astype(smallest_uint_dtype(top), copy=False)


def _resolution(scale: Sequence[float] | None, unit: str | None) -> dict[str, Any]:
    if scale is None or len(scale) < 2:
        return {}
    sy, sx = float(scale[-2]), float(scale[-1])
    if sy <= 0 or sx <= 0:
        return {}
    per_cm = _UNIT_TO_CM.get(str(unit).lower()) if unit else None
    if per_cm is not None:  # pixels per centimetre, the TIFF way of saying "µm per pixel"
        return {"resolution": (1.0 / (sx * per_cm), 1.0 / (sy * per_cm)), "resolutionunit": "CENTIMETER"}
    return {"resolution": (1.0 / sx, 1.0 / sy), "resolutionunit": "NONE"}


TIFF_SUFFIXES = (".tif", ".tiff")


def labels_path(path: str | os.PathLike) -> Path:
    """The TIFF file to write for ``path``: a name without extension gets ``.tif`` (like
    napari's writer); an empty path, another extension (``.png`` ...) or a folder is a
    ``ValueError``; a folder that does not exist is a ``FileNotFoundError``."""
    if path is None or not str(path).strip():
        raise ValueError("the labels file name is empty: give a path ending in .tif or .tiff")
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".tif")
    elif path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"labels are written as TIFF: {path.name!r} ends in {path.suffix!r}; use .tif or .tiff")
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name ending in .tif or .tiff")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path.name}: the folder {path.parent} does not exist")
    return path


def write_labels_tiff(path: str | os.PathLike, labels: Any, scale: Sequence[float] | None = None,
                      unit: str | None = None, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``labels`` to ``path`` atomically (temporary file in the same folder, then rename).
    The file gets the usual permissions (``0666`` less the umask), not the temporary's ``0600``.

    ``path`` is checked first (:func:`labels_path`: ``.tif`` added when there is no extension,
    other extensions refused). The dtype is the smallest unsigned type that holds the largest
    id. ``metadata``: more JSON-able entries for the image description (read back by
    :func:`read_labels_tiff`). Returns the path written. A failed write leaves any existing
    file at ``path`` untouched and no temporary behind.
    """
    import tifffile

    path = labels_path(path)
    data = _as_labels(labels)
    meta: dict[str, Any] = {**(metadata or {}), "napari_sam": "labels"}
    if scale is not None:
        meta["scale"] = [float(s) for s in scale]
    if unit:
        meta["unit"] = str(unit)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, metadata=meta, compression="zlib", **_resolution(scale, unit))
    return path


def read_labels_tiff(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a labels TIFF: the array and the metadata written with it (``scale``, ``unit``)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        meta = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
    meta.pop("shape", None)
    return data, meta


def read_labels_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata :func:`write_labels_tiff` wrote, reading the headers only; raises for a file
    that is not a readable TIFF or whose image data is cut short, ``{}`` for a TIFF without it."""
    import tifffile

    size = os.path.getsize(path)
    with tifffile.TiffFile(path) as tif:
        if not len(tif.pages):
            raise ValueError(f"{path} holds no image")
        for page in tif.pages:
            if any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts)):
                raise ValueError(f"{path} is cut short ({size} bytes)")
        meta = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
    meta.pop("shape", None)
    return meta


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers (``.tif`` / ``.tiff``)."""
    if not str(path).lower().endswith(TIFF_SUFFIXES):
        path = f"{path}.tif"
    units = meta.get("units")
    unit = str(units[-1]) if units else None
    if unit in ("pixel", "None"):
        unit = None
    return [str(write_labels_tiff(path, data, scale=meta.get("scale"), unit=unit))]
