"""Tiles with a halo for large 2D images.

The image plane ``(H, W)`` is cut into a grid of ``tile x tile`` *cores*; each core is
embedded together with a ``halo`` of context on every side (its *window*, clipped to the
image). A prompt is decoded on the window that holds all of it and whose centre lies
closest to it, so an object crossing a core border is still seen whole when it fits
inside the halo. Boxes are ``(min_row, min_col, max_row, max_col)``, ends exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TILE = 1024
DEFAULT_HALO = 128
AUTO_TILE_ABOVE = 2048  # planes with a side longer than this are tiled by default


@dataclass(frozen=True)
class TileLayout:
    shape: tuple[int, int]
    tile: int
    halo: int

    def __post_init__(self) -> None:
        if self.tile < 16 or self.halo < 0:
            raise ValueError(f"tile must be >= 16 and halo >= 0, got tile={self.tile}, halo={self.halo}")

    @property
    def grid(self) -> tuple[int, int]:
        return -(-self.shape[0] // self.tile), -(-self.shape[1] // self.tile)

    def core(self, index: tuple[int, int]) -> tuple[int, int, int, int]:
        iy, ix = index
        return (iy * self.tile, ix * self.tile,
                min((iy + 1) * self.tile, self.shape[0]), min((ix + 1) * self.tile, self.shape[1]))

    def window(self, index: tuple[int, int]) -> tuple[int, int, int, int]:
        r0, c0, r1, c1 = self.core(index)
        h = self.halo
        return max(r0 - h, 0), max(c0 - h, 0), min(r1 + h, self.shape[0]), min(c1 + h, self.shape[1])

    def indices(self) -> list[tuple[int, int]]:
        ny, nx = self.grid
        return [(iy, ix) for iy in range(ny) for ix in range(nx)]

    def best_tile(self, extent: tuple[float, float, float, float]) -> tuple[int, int]:
        """Among the windows that hold ``extent`` ``(r0, c0, r1, c1)`` (all prompts), the one
        whose centre is nearest to the prompts'; if none holds it all, the one overlapping most."""
        r0, c0, r1, c1 = extent
        centre = np.array([(r0 + r1) / 2, (c0 + c1) / 2])
        best, best_key = (0, 0), None
        for index in self.indices():
            wr0, wc0, wr1, wc1 = self.window(index)
            if min(r0 - wr0, c0 - wc0, wr1 - 1 - r1, wc1 - 1 - c1) >= 0:
                key = (1, -float(np.abs(centre - [(wr0 + wr1) / 2, (wc0 + wc1) / 2]).max()))
            else:
                key = (0, max(0.0, min(r1, wr1) - max(r0, wr0)) * max(0.0, min(c1, wc1) - max(c0, wc0)))
            if best_key is None or key > best_key:
                best, best_key = index, key
        return best


def choose_layout(plane_shape: tuple[int, int], tile: int | None = None, halo: int | None = None) -> TileLayout | None:
    """Tiles when asked for (``tile``), or when a side exceeds :data:`AUTO_TILE_ABOVE`."""
    halo = DEFAULT_HALO if halo is None else halo
    if tile is None:
        if max(plane_shape) <= AUTO_TILE_ABOVE:
            return None
        tile = DEFAULT_TILE
    layout = TileLayout(tuple(int(s) for s in plane_shape), int(tile), int(halo))
    return None if layout.grid == (1, 1) else layout


def prompt_extent(points: np.ndarray | None, box: np.ndarray | None) -> tuple[float, float, float, float]:
    """Bounding extent ``(r0, c0, r1, c1)`` of points ``(N, 2)`` and an optional box."""
    parts = []
    if points is not None and np.size(points):
        parts.append(np.asarray(points, float).reshape(-1, 2))
    if box is not None:
        parts.append(np.asarray(box, float).reshape(2, 2))
    if not parts:
        raise ValueError("no prompt given")
    allp = np.concatenate(parts)
    return float(allp[:, 0].min()), float(allp[:, 1].min()), float(allp[:, 0].max()), float(allp[:, 1].max())
