"""Connections from a widget to napari events, and calls deferred to the event loop; both
stop when the widget is destroyed (napari may outlive it, e.g. while closing the viewer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QApplication


class Links:
    """Owned by one widget: ``listen`` to napari emitters, ``defer`` calls; ``pending`` counts
    deferred calls not yet run (so "idle" can wait for them)."""

    def __init__(self, lifetime: QObject) -> None:
        """The links are cut when ``lifetime`` (the widget) is destroyed; it is not kept."""
        self.alive = [True]
        self.links: list[tuple[object, Callable]] = []
        self.pending = 0
        lifetime.destroyed.connect(partial(_cut, self.alive, self.links))

    def listen(self, emitter, callback: Callable) -> None:
        emitter.connect(callback)
        self.links.append((emitter, callback))

    def unlisten(self, emitter, callback: Callable) -> None:
        emitter.disconnect(callback)
        self.links[:] = [(e, c) for e, c in self.links if not (e is emitter and c == callback)]

    def forget(self, source: object) -> None:
        """Disconnect from every emitter of ``source`` (e.g. a layer that was removed)."""
        for emitter, callback in [(e, c) for e, c in self.links if getattr(e, "source", None) is source]:
            self.unlisten(emitter, callback)

    def listens_to(self, source: object) -> bool:
        return any(getattr(e, "source", None) is source for e, _ in self.links)

    def defer(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once control is back in the event loop (e.g. after napari finishes the
        layer-list change being signalled), unless the widget is gone by then."""
        alive = self.alive

        def run():
            if alive[0]:
                self.pending -= 1
                fn()

        QTimer.singleShot(0, run)
        self.pending += 1


def _cut(alive: list[bool], links: list, *_) -> None:
    alive[0] = False
    for emitter, callback in links:
        try:
            emitter.disconnect(callback)
        except Exception:  # the layer (and its emitter) may be gone already
            pass
    links.clear()


def process_until(done: Callable[[], bool], timeout: float) -> bool:
    """Process Qt events until ``done()`` holds twice in a row (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    app = QApplication.instance()
    while True:
        app.processEvents()
        if done():
            app.processEvents()
            if done():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
