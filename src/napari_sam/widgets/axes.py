"""What the leading axes of an nD image are: a channel axis (and what SAM sees of it) and the
axis that prefetch and propagation walk ("through" axis). Owned by :class:`~.planes.Planes`.

- **Channel axis** ``none`` (default): every leading axis is a plane axis; SAM sees the plane
  on screen, so moving a channel slider changes the plane like any other slider.
- **Channel axis** ``k`` with **channel** ``c``: SAM sees channel ``c`` whatever the slider on
  ``k`` shows (scaled by the layer's contrast limits, like any gray image); with **RGB**:
  channels 0, 1, 2 as red, green, blue, each scaled to its own range. Planes are then indexed
  without ``k``; the labels keep the image's shape (napari overlays layers by aligning
  trailing axes, so an inner axis cannot be dropped): a commit paints every channel of the
  plane, and export writes the labels without the channel axis.
- **Through** axis: by default the last plane axis longer than 1 (z of a ``(T, Z, Y, X)``
  stack); choose time to prefetch and propagate through time.

Axes are the image layer's data axes. A plane is a tuple over the plane axes; a *labels
index* is a plane with ``None`` ("every channel") inserted at the channel axis.
"""

from __future__ import annotations

from ..engine import channel_view

RGB = "rgb"
CHANNEL_NAMES = {"c", "ch", "channel", "channels"}


def lead_shape(image) -> tuple[int, ...]:
    """Leading (non-spatial) shape of an image layer's data."""
    spatial = 3 if image.rgb else 2
    return tuple(int(s) for s in image.data.shape[: image.data.ndim - spatial])


class Axes:
    """Channel and through-axis choices for the chosen image of widget ``w`` (see module)."""

    def __init__(self, w) -> None:
        self.w = w
        self.channel_axis: int | None = None
        self.channel: int | str = 0  # an index along the channel axis, or RGB
        self.through: int | None = None  # chosen image axis; None: the default
        ui = w.ui
        ui.channel_axis.currentIndexChanged.connect(lambda _: self._picked())
        ui.channel.currentIndexChanged.connect(lambda _: self._picked())
        ui.through.currentIndexChanged.connect(lambda _: self._through_picked())

    # --- geometry --------------------------------------------------------------------
    def lead(self) -> tuple[int, ...]:
        image = self.w.image
        return lead_shape(image) if image is not None else ()

    def plane_axes(self) -> list[int]:
        """Image axes that index planes (the leading ones but the channel axis)."""
        return [a for a in range(len(self.lead())) if a != self.channel_axis]

    def plane_of(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """The plane of a full leading index of the image."""
        lead = self.lead()
        if self.channel_axis is not None and (self.channel_axis >= len(lead) or (
                self.channel != RGB and self.channel >= lead[self.channel_axis])):
            self.reset()  # the image's data changed shape under the choice
        return tuple(index[a] for a in self.plane_axes())

    def labels_at(self, plane: tuple[int, ...]) -> tuple:
        """Index into the labels (the image's shape) of ``plane``: ``None`` on the channel axis."""
        if self.channel_axis is None:
            return tuple(plane)
        k = self.channel_axis
        return tuple(plane[:k]) + (None,) + tuple(plane[k:])

    def default_through(self) -> int | None:
        lead = self.lead()
        longer = [a for a in self.plane_axes() if lead[a] > 1]
        return longer[-1] if longer else None

    def through_axis(self) -> int | None:
        """Plane axis (index into a plane tuple) walked by prefetch and propagation."""
        lead, axes = self.lead(), self.plane_axes()
        axis = self.through if self.through in axes and lead[self.through] > 1 else self.default_through()
        return None if axis is None else axes.index(axis)

    def source(self, image):
        """``(data, rgb, contrast_limits)`` that SAM segments for ``image``."""
        limits = None if image.rgb else tuple(float(v) for v in image.contrast_limits)
        data, rgb = channel_view(image.data, image.rgb, self.channel_axis, self.channel)
        return data, rgb, None if rgb else limits

    def describe(self) -> str:
        """What SAM sees, for the status line ('' without a channel axis)."""
        if self.channel_axis is None:
            return ""
        n = self.lead()[self.channel_axis]
        what = f"channels 0-{min(3, n) - 1} as RGB" if self.channel == RGB else f"channel {self.channel}"
        return f"{what} of axis {self.channel_axis}"

    # --- choices ---------------------------------------------------------------------
    def set_channel(self, axis: int | None, channel: int | str = 0) -> None:
        """Segment channel ``channel`` (or ``"rgb"``) of leading image ``axis`` (None: no channel
        axis). The plane's embedding and the current object's masks are recomputed."""
        lead = self.lead()
        if axis is not None and not 0 <= axis < len(lead):
            raise ValueError(f"axis {axis} is not a leading axis of the image (leading shape {lead})")
        if axis is not None and channel != RGB and not 0 <= int(channel) < lead[axis]:
            raise ValueError(f"channel {channel} does not exist: axis {axis} has {lead[axis]}")
        if (axis, channel) == (self.channel_axis, self.channel):
            return
        self.channel_axis, self.channel = axis, channel if channel == RGB else int(channel)
        self.refresh()
        w = self.w
        w.planes.cancel()
        w.planes.dims_seen(reset=False)
        w._image_data_changed()  # a new data version: the pixels SAM sees changed

    def set_through(self, axis: int | None) -> None:
        """Prefetch and propagate along leading image ``axis`` (None: the default)."""
        self.through = axis
        self.refresh()
        self.w.planes.prefetcher.cancel()
        self.w.planes.prefetch()

    def reset(self) -> None:
        """A new image: no channel axis unless napari names one ('c', 'channel'); default through."""
        names = self._names()
        guess = [a for a, name in enumerate(names) if name.lower() in CHANNEL_NAMES]
        self.channel_axis, self.channel, self.through = (guess[0] if guess else None), 0, None
        self.refresh()

    def _names(self) -> list[str]:
        image, dims = self.w.image, self.w.viewer.dims
        if image is None:
            return []
        first = dims.ndim - image.ndim
        labels = list(dims.axis_labels)
        return [str(labels[first + a]) if 0 <= first + a < len(labels) else str(a) for a in range(len(self.lead()))]

    def _label(self, axis: int) -> str:
        name, n = self._names()[axis], self.lead()[axis]
        return f"axis {axis} ({n})" if name.isdigit() else f"{name} (axis {axis}, {n})"

    def refresh(self) -> None:
        """Fill the combos from the image and the current choices."""
        ui, lead = self.w.ui, self.lead()
        image = self.w.image
        axes_items = [("none", None)] + [(self._label(a), a) for a in range(len(lead))]
        channel_items = []
        if self.channel_axis is not None:
            n = lead[self.channel_axis]
            channel_items = [(f"channel {c}", c) for c in range(n)]
            if n >= 2 and not image.rgb:
                channel_items.append((f"RGB: channels 0-{min(3, n) - 1}", RGB))
        through_items = [(self._label(a), a) for a in self.plane_axes() if lead[a] > 1]
        chosen = self.through if self.through in [d for _, d in through_items] else self.default_through()
        for combo, items, current in ((ui.channel_axis, axes_items, self.channel_axis),
                                      (ui.channel, channel_items, self.channel),
                                      (ui.through, through_items, chosen)):
            combo.blockSignals(True)
            combo.clear()
            for text, data in items:
                combo.addItem(text, data)
            datas = [d for _, d in items]
            if current in datas:
                combo.setCurrentIndex(datas.index(current))
            combo.setEnabled(len(items) > 1)
            combo.blockSignals(False)

    def _picked(self) -> None:
        ui = self.w.ui
        if self.w.image is None:  # combos left from an image that is gone
            return self.reset()
        axis = ui.channel_axis.currentData()
        channel = ui.channel.currentData() if axis == self.channel_axis else 0
        self.set_channel(axis, 0 if channel is None else channel)

    def _through_picked(self) -> None:
        if self.w.image is None:
            return self.reset()
        self.set_through(self.w.ui.through.currentData())
