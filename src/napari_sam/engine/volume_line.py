"""One line of an nD image's embeddings as frames: the planes along one leading axis through a
plane, e.g. the z-planes of one time point of a ``(T, Z, H, W)`` stack.

:class:`VolumeLine` lets a :class:`~napari_sam.engine.Tracker` use embeddings that a
:class:`~napari_sam.engine.VolumeEmbeddings` already has (its bounded LRU cache and its
embedding store), so nothing is embedded twice: frame ``t`` is the plane ``plane`` with index
``t`` on ``axis``. Pixels are read only when a frame is embedded (by the volume).
"""

from __future__ import annotations

from collections.abc import Callable

from .predictor import Embedding
from .volume import VolumeEmbeddings


class VolumeLine:
    """Frames ``(T, H, W)`` of ``volume`` along lead ``axis`` through lead index ``plane``.

    ``embedding((t, 0, 0), cancel)`` is the volume's embedding of frame ``t`` (the item form
    :class:`~napari_sam.engine.Tracker` asks for); :attr:`shape` is ``(T, H, W)``."""

    def __init__(self, volume: VolumeEmbeddings, plane: tuple[int, ...], axis: int) -> None:
        plane = tuple(int(i) for i in plane)
        if len(plane) != len(volume.lead_shape):
            raise ValueError(f"plane {plane} must index the volume's leading axes {volume.lead_shape}")
        if not 0 <= axis < len(plane):
            raise ValueError(f"axis {axis} is not a leading axis of the volume (leading shape {volume.lead_shape})")
        if volume.layout is not None:
            raise ValueError(f"planes of {volume.plane_shape[0]} x {volume.plane_shape[1]} px are embedded by tiles: "
                             "tracking needs whole planes (up to 2048 px)")
        self.volume, self.plane, self.axis = volume, plane, int(axis)
        self.shape = (int(volume.lead_shape[axis]), *volume.plane_shape)
        self.dtype = volume.image.dtype
        self.ndim = 3

    @property
    def cache(self):
        return self.volume.cache

    def plane_at(self, frame: int) -> tuple[int, ...]:
        """The lead index of frame ``frame``."""
        return self.plane[: self.axis] + (int(frame),) + self.plane[self.axis + 1:]

    def frame_of(self, plane: tuple[int, ...]) -> int | None:
        """The frame of lead index ``plane``, or None when it is not on this line."""
        plane = tuple(int(i) for i in plane)
        if len(plane) != len(self.plane) or any(a != b for k, (a, b) in enumerate(zip(plane, self.plane))
                                                if k != self.axis):
            return None
        return plane[self.axis]

    def embedding(self, item: tuple[int, ...], cancel: Callable[[], bool] | None = None) -> Embedding:
        """The embedding of frame ``item[0]`` (``item`` is ``(frame, 0, 0)``)."""
        return self.volume.embedding(self.plane_at(item[0]) + (0, 0), cancel=cancel)

    def cached(self, frame: int) -> Embedding | None:
        return self.volume.cached(self.plane_at(frame) + (0, 0))
