"""napari-sam-annotator: Segment Anything as a napari plugin."""

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-sam-annotator")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
