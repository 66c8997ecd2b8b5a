"""Sample images that ship with scikit-image (no download): npe2 sample-data commands."""

from __future__ import annotations


def _sample(name: str, title: str, rgb: bool = False) -> list[tuple]:
    from skimage import data

    image = getattr(data, name)()
    return [(image, {"name": title, "rgb": rgb}, "image")]


def cell() -> list[tuple]:
    """Cell in a light microscope, 2D uint8 (``skimage.data.cell``)."""
    return _sample("cell", "cell")


def coins() -> list[tuple]:
    """Greek coins, 2D uint8 (``skimage.data.coins``)."""
    return _sample("coins", "coins")


def immunohistochemistry() -> list[tuple]:
    """Immunohistochemistry (IHC) staining, RGB uint8 (``skimage.data.immunohistochemistry``)."""
    return _sample("immunohistochemistry", "immunohistochemistry", rgb=True)
