"""Lazy channel views of multichannel images, for :class:`~napari_sam.engine.VolumeEmbeddings`.

A multichannel stack such as ``(Z, C, Y, X)`` is segmented on one channel, or on up to three
channels shown as RGB. Both views read only what is indexed (one plane, one window), so dask-
or zarr-backed images stay lazy:

- :class:`ChannelSlice`: ``image`` with leading ``axis`` fixed to one ``channel``:
  ``(Z, Y, X)`` of the input dtype (scaled later by the volume's contrast limits);
- :class:`ChannelComposite`: channels as red, green, blue (missing ones black), each scaled
  to 0-255 by its own limits (channels of one image often have very different ranges):
  ``(Z, Y, X, 3)`` uint8, used as RGB as it is.

Views support what the engine needs: ``shape``, ``dtype``, ``ndim`` and indexing by integers,
slices and ``...``.
"""

from __future__ import annotations

import numpy as np

from .preprocess import estimate_limits, rescale_to_uint8


def _full_key(key, ndim: int) -> tuple:
    """``key`` as a tuple of exactly ``ndim`` integers or slices."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1:]
    if len(key) > ndim or not all(isinstance(k, (slice, int, np.integer)) for k in key):
        raise IndexError(f"channel views take up to {ndim} integers or slices, got {key!r}")
    return key + (slice(None),) * (ndim - len(key))


class _View:
    """What both views share: ``ndim`` and ``np.asarray(view)`` (reads everything)."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)


class ChannelSlice(_View):
    """``image`` with its leading ``axis`` fixed to ``channel`` (see module docstring)."""

    def __init__(self, image, axis: int, channel: int) -> None:
        if not 0 <= axis < image.ndim - 2:
            raise ValueError(f"channel axis {axis} is not a leading axis of an image of shape {image.shape}")
        if not 0 <= channel < image.shape[axis]:
            raise ValueError(f"channel {channel} does not exist: axis {axis} has {image.shape[axis]}")
        self.base, self.axis, self.channel = image, int(axis), int(channel)
        self.shape = tuple(int(n) for i, n in enumerate(image.shape) if i != axis)
        self.dtype = np.dtype(image.dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key, self.ndim)
        return np.asarray(self.base[key[: self.axis] + (self.channel,) + key[self.axis:]])


def channel_limits(image, axis: int, channel: int) -> tuple[float, float] | None:
    """Global limits of one channel from a strided sample (None for uint8: used as it is)."""
    return estimate_limits(ChannelSlice(image, axis, channel), rgb=False)


class ChannelComposite(_View):
    """Channels ``channels`` (up to 3; red, green, blue) of leading ``axis`` as uint8 RGB,
    each scaled by its ``limits`` (default: its own sampled range; see module docstring)."""

    def __init__(self, image, axis: int, channels=(0, 1, 2), limits=None) -> None:
        channels = tuple(int(c) for c in channels)
        if not 1 <= len(channels) <= 3:
            raise ValueError(f"an RGB composite takes 1 to 3 channels, got {channels}")
        self.slices = [ChannelSlice(image, axis, c) for c in channels]
        self.channels, self.axis = channels, int(axis)
        self.limits = tuple(channel_limits(image, axis, c) for c in channels) if limits is None else tuple(limits)
        self.shape = self.slices[0].shape + (3,)
        self.dtype = np.dtype(np.uint8)

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key, self.ndim)
        planes = []
        for view, limits in zip(self.slices, self.limits):
            data = view[key[:-1]]
            planes.append(data if data.dtype == np.uint8 and limits is None else rescale_to_uint8(data, limits))
        while len(planes) < 3:
            planes.append(np.zeros_like(planes[0]))
        return np.stack(planes, axis=-1)[..., key[-1]]


def channel_view(image, rgb: bool, axis: int | None, channel: int | str):
    """``(data, rgb)`` that SAM segments of ``image``: the image itself (``axis`` None), channel
    ``channel`` of leading ``axis``, or ``channel="rgb"``: channels 0-2 as RGB (each scaled to
    its own range). Shared by the widget and ``napari-sam embed`` so a store matches the widget."""
    if axis is None:
        return image, rgb
    if not 0 <= axis < image.ndim - (3 if rgb else 2):
        raise ValueError(f"channel axis {axis} is not a leading axis of an image of shape {tuple(image.shape)}")
    if str(channel).lower() == "rgb":
        if rgb:
            raise ValueError("channels as RGB need a gray multichannel image (this one is RGB already)")
        return ChannelComposite(image, axis, range(min(3, image.shape[axis]))), True
    if not str(channel).isdigit():
        raise ValueError(f"the channel is a channel number or 'rgb', got {channel!r}")
    return ChannelSlice(image, axis, int(channel)), rgb
