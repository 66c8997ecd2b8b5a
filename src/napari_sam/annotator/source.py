"""The image a session segments, and what its leading axes are.

An image is ``(*lead, H, W)`` (``(*lead, H, W, C)`` when ``rgb``). The leading axes are stack
axes (z, t, ...) or one *channel axis*. A *plane* is the tuple of indices over the leading axes
but the channel axis (``()`` for a 2D image); the axis that prefetch and propagation walk is the
*through* axis. The committed labels have the image's shape without colour (channel axis
included, so napari overlays them): a plane's *labels index* has ``None`` ("every channel") at
the channel axis.

Defaults (:func:`default_axes`): an axis named C (``c``, ``ch``, ``channel``) is the channel
axis; without names, a leading axis of at most :data:`MAX_CHANNELS` beside a longer stack axis
is (``(31, 2, Y, X)``: 2 channels of a 31-plane stack); the through axis is the one named Z,
else T, else the last stack axis longer than 1, never the channel axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from typing import Any

from ..engine import channel_view

RGB = "rgb"
CHANNEL_NAMES = {"c", "ch", "channel", "channels"}
DEPTH_NAMES = {"z", "depth", "slice", "slices", "plane", "planes"}
TIME_NAMES = {"t", "time", "frame", "frames"}
MAX_CHANNELS = 4
_SERIALS = count(1)


def known_name(name: str) -> str:
    """An axis name as given ('' for napari's default names such as ``-3`` or ``0``)."""
    text = str(name).strip()
    return "" if not text or text.lstrip("-").isdigit() else text


@dataclass(eq=False)
class ImageSource:
    """Plain data of the image being segmented (no layer): ``data`` is array-like (NumPy, dask,
    zarr, a channel view), ``axis_names`` name all its axes ('' where unknown), ``contrast_limits``
    scale gray images (None: estimated), ``scale``/``unit`` place the exported labels. Identity
    is the object: ``serial`` is unique per source, ``version`` counts data changes."""

    data: Any
    rgb: bool = False
    contrast_limits: tuple[float, float] | None = None
    axis_names: tuple[str, ...] = ()
    name: str = "image"
    scale: tuple[float, ...] | None = None
    unit: str | None = None
    multiscale: bool = False
    serial: int = field(default_factory=lambda: next(_SERIALS))
    version: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape (a multiscale image's: its first level's)."""
        data = self.data[0] if self.multiscale and not hasattr(self.data, "shape") else self.data
        return tuple(int(s) for s in data.shape)

    @property
    def spatial(self) -> int:
        return 3 if self.rgb else 2

    @property
    def lead_shape(self) -> tuple[int, ...]:
        shape = self.shape
        return shape[: len(shape) - self.spatial]

    @property
    def plane_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of a plane (None for multiscale images, which are not segmented)."""
        if self.multiscale:
            return None
        shape = self.shape
        return shape[len(shape) - self.spatial: len(shape) - self.spatial + 2]

    @property
    def labels_shape(self) -> tuple[int, ...] | None:
        """Shape of the committed labels: the image's without the colour axis."""
        if self.plane_shape is None:
            return None
        return self.shape[:-1] if self.rgb else self.shape

    def lead_names(self) -> list[str]:
        names = [known_name(n) for n in self.axis_names]
        lead = len(self.lead_shape)
        if len(names) < lead + 2:  # names of the trailing axes only, or none
            names = [""] * (lead + self.spatial - len(names)) + names
        return names[:lead]


@dataclass(frozen=True)
class Axes:
    """The choice of axes for one image: ``channel_axis`` (a leading axis or None), ``channel``
    (an index along it, or ``"rgb"``: channels 0-2 as red, green, blue), ``through`` (a leading
    axis, or None for the default)."""

    channel_axis: int | None = None
    channel: int | str = 0
    through: int | None = None


def default_axes(source: ImageSource) -> Axes:
    """The axes an image starts with (see the module docstring)."""
    lead, names = source.lead_shape, [n.lower() for n in source.lead_names()]
    named = [a for a, n in enumerate(names) if n in CHANNEL_NAMES]
    if named:
        return Axes(named[0])
    if any(n in DEPTH_NAMES | TIME_NAMES for n in names) and all(names):
        return Axes()  # every leading axis is named, none of them C
    short = [a for a, n in enumerate(lead) if 1 < n <= MAX_CHANNELS and not names[a]]
    longer = [a for a, n in enumerate(lead) if n > MAX_CHANNELS]
    return Axes(short[0]) if len(short) == 1 and longer else Axes()


@dataclass(frozen=True)
class Planes:
    """Geometry of the planes of ``source`` under the choice ``axes`` (a snapshot)."""

    source: ImageSource
    axes: Axes

    @property
    def lead(self) -> tuple[int, ...]:
        return self.source.lead_shape

    def plane_axes(self) -> list[int]:
        """Leading image axes that index planes (all but the channel axis)."""
        return [a for a in range(len(self.lead)) if a != self.axes.channel_axis]

    def plane_of(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """The plane of a full leading index of the image."""
        return tuple(int(index[a]) for a in self.plane_axes())

    def labels_at(self, plane: tuple[int, ...]) -> tuple:
        """Index into the labels of ``plane``: ``None`` on the channel axis."""
        k = self.axes.channel_axis
        plane = tuple(plane)
        return plane if k is None else plane[:k] + (None,) + plane[k:]

    def through_choices(self) -> list[int]:
        return [a for a in self.plane_axes() if self.lead[a] > 1]

    def default_through(self) -> int | None:
        choices, names = self.through_choices(), [n.lower() for n in self.source.lead_names()]
        for wanted in (DEPTH_NAMES, TIME_NAMES):
            named = [a for a in choices if names[a] in wanted]
            if named:
                return named[0]
        return choices[-1] if choices else None

    def through_image_axis(self) -> int | None:
        """The leading image axis walked by prefetch and propagation."""
        return self.axes.through if self.axes.through in self.through_choices() else self.default_through()

    def through_axis(self) -> int | None:
        """The same as an index into a plane tuple (None for 2D images)."""
        axis = self.through_image_axis()
        return None if axis is None else self.plane_axes().index(axis)

    def view(self):
        """``(data, rgb, contrast_limits)`` that SAM segments."""
        src = self.source
        data, rgb = channel_view(src.data, src.rgb, self.axes.channel_axis, self.axes.channel)
        limits = None if rgb or src.contrast_limits is None else tuple(float(v) for v in src.contrast_limits)
        return data, rgb, limits

    # --- words -----------------------------------------------------------------------
    def axis_name(self, axis: int) -> str:
        name = self.source.lead_names()[axis]
        return (name.upper() if len(name) == 1 else name) if name else f"axis {axis}"

    def axis_label(self, axis: int) -> str:
        """``"Z (31)"``, ``"C (2)"``, ``"axis 0 (5)"``: a leading axis and its length."""
        return f"{self.axis_name(axis)} ({self.lead[axis]})"

    def plane_label(self, plane: tuple[int, ...]) -> str:
        """``"z=15"``, ``"t=3, z=15"``, ``"plane 15"``; '' for a 2D image."""
        axes = self.plane_axes()
        if not plane:
            return ""
        names = [self.source.lead_names()[a].lower() for a in axes]
        if all(names):
            return ", ".join(f"{n}={i}" for n, i in zip(names, plane))
        return f"plane {plane[0]}" if len(plane) == 1 else f"plane {tuple(int(i) for i in plane)}"

    def describe(self) -> str:
        """What SAM sees, for the status line ('' without a channel axis)."""
        k = self.axes.channel_axis
        if k is None:
            return ""
        n = self.lead[k]
        what = f"channels 0-{min(3, n) - 1} as RGB" if self.axes.channel == RGB else f"channel {self.axes.channel}"
        return f"{what} of {self.axis_label(k)}"


def checked_axes(source: ImageSource, axes: Axes) -> Axes:
    """``axes`` if they fit ``source``; ``ValueError`` naming the argument otherwise."""
    lead = source.lead_shape
    k, channel, through = axes.channel_axis, axes.channel, axes.through
    if k is not None and not 0 <= k < len(lead):
        raise ValueError(f"channel_axis {k} is not a leading axis of the image (leading shape {lead})")
    if k is not None and channel != RGB and not (str(channel).lstrip("-").isdigit() and 0 <= int(channel) < lead[k]):
        raise ValueError(f"channel {channel!r} does not exist: axis {k} has {lead[k]} channels (or use 'rgb')")
    if channel == RGB and (k is None or source.rgb):
        raise ValueError("channel 'rgb' needs a channel axis of a gray multichannel image")
    if through is not None and not (0 <= through < len(lead) and through != k):
        raise ValueError(f"through axis {through} is not a stack axis of the image (leading shape {lead}, "
                         f"channel axis {k})")
    return Axes(k, channel if channel == RGB else int(channel), through)
