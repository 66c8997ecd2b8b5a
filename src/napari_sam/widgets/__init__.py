"""The napari user interface (the only package that imports Qt / napari UI)."""

from .sam_widget import SamWidget

__all__ = ["SamWidget"]
