"""Reading input images for the commands: one reader and one colour guess for ``embed`` and
``segment`` (the widget gets its arrays from napari)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy", ".zarr")


def open_image(path: str | Path):
    """A lazily readable array: ``.tif``/``.tiff`` memory-mapped when possible (else read),
    ``.npy`` memory-mapped, a ``.zarr`` array opened read-only, other files via scikit-image."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileNotFoundError(f"no such image: {path}")
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            return tifffile.memmap(path, mode="r")
        except Exception:  # compressed or tiled TIFF: read it
            return tifffile.imread(path)
    if suffix == ".npy":
        return np.load(path, mmap_mode="r")
    if suffix == ".zarr":
        import zarr

        return zarr.open_array(str(path), mode="r")
    from skimage.io import imread

    return imread(path)


def guess_rgb(shape: tuple[int, ...]) -> bool:
    """Like napari: a last axis of 3 or 4 on an image of 3+ dimensions is colour."""
    return len(shape) >= 3 and shape[-1] in (3, 4)


def axis_names(path: str | Path) -> str | None:
    """The axes a TIFF's ImageJ or OME metadata names (tifffile letters, e.g. ``"ZCYX"``; ``"S"``
    is colour samples), or None when the file says nothing (or is no TIFF)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not (tif.is_imagej or tif.is_ome) or not tif.series:
                return None
            return str(tif.series[0].axes)
    except Exception:  # noqa: BLE001 (unreadable metadata: no names)
        return None
