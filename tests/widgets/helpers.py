"""Helpers of the widget tests: find our layers by their metadata role, press keys, move sliders."""

from __future__ import annotations

import gc
import time

import numpy as np


def with_role(viewer, role):
    return [lay for lay in viewer.layers if lay.metadata.get("napari_sam", {}).get("role") == role]


def candidate_layer(viewer):
    (layer,) = with_role(viewer, "candidate")
    return layer


def shown_candidates(viewer) -> list[dict]:
    """``[{"index", "iou"}, ...]`` of the candidates the candidate layer shows."""
    return candidate_layer(viewer).metadata["napari_sam"]["candidates"]


def points_layer(viewer):
    (layer,) = with_role(viewer, "points")
    return layer


def boxes_layer(viewer):
    (layer,) = with_role(viewer, "boxes")
    return layer


def add_point(viewer, row, col):
    points_layer(viewer).add([[row, col]])


def press(layer, key):
    """What napari does for ``key`` pressed while ``layer`` is active."""
    from napari.utils.key_bindings import coerce_keybinding

    layer.keymap[coerce_keybinding(key)](layer)


def go_to(viewer, z):
    step = list(viewer.dims.current_step)
    step[0] = z
    viewer.dims.current_step = tuple(step)


def set_step(viewer, **steps):
    """Move the sliders: ``set_step(viewer, **{"0": t, "1": z})`` by viewer axis number."""
    step = list(viewer.dims.current_step)
    for axis, value in steps.items():
        step[int(axis)] = value
    viewer.dims.current_step = tuple(step)


class Heartbeat:
    """A 10 ms QTimer recording when the event loop ran: :meth:`gaps` since ``started``.

    While it runs, the objects that existed when it started are frozen out of the garbage
    collector (``gc.freeze``, undone by :meth:`gaps`): late in the suite the process holds
    ~750,000 objects from earlier tests, and one full collection of them holds the GIL for
    ~200 ms on a 2-core CPU (measured), a pause that is not the code under test blocking the
    event loop. Objects made during the measurement are still collected as usual."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        gc.collect()
        gc.freeze()
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def gaps(self, started: float) -> tuple[np.ndarray, int]:
        """Event-loop gaps (s) from ``started`` on, and the number of heartbeats since then."""
        self.timer.stop()
        gc.unfreeze()
        during = np.array([t for t in self.ticks if t >= started])
        return np.diff(np.concatenate([[started], during])), len(during)
