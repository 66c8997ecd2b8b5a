"""File input/output without Qt: labels to TIFF (also the npe2 writer)."""

from .files import atomic_path, default_file_mode, remove_stale_temporaries, stale_temporaries
from .tiff import labels_path, read_labels_metadata, read_labels_tiff, smallest_uint_dtype, write_labels, write_labels_tiff

__all__ = ["atomic_path", "default_file_mode", "read_labels_tiff", "smallest_uint_dtype", "write_labels",
           "write_labels_tiff"]
__all__ += ["labels_path", "read_labels_metadata", "remove_stale_temporaries", "stale_temporaries"]
