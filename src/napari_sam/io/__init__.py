"""File input/output without Qt: labels to TIFF (also the npe2 writer)."""

from .tiff import read_labels_tiff, smallest_uint_dtype, write_labels, write_labels_tiff

__all__ = ["read_labels_tiff", "smallest_uint_dtype", "write_labels", "write_labels_tiff"]
