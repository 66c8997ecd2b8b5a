"""The ``napari-sam`` commands: :func:`main` (``napari-sam [IMAGE]``, and the dispatch to the
subcommands), :mod:`.embed` (``napari-sam embed``) and :mod:`.segment` (``napari-sam segment``)."""

from .main import main

__all__ = ["main"]
