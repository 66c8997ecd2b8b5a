"""Background work for the widget: cancellable tasks with a napari progress bar, and a
latest-wins runner for decoding. Callbacks given here always run on the GUI thread.

A task's function is called in a worker thread as ``fn(report, cancelled)``:
``report(done, total)`` may be called from that thread; ``cancelled()`` tells it to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from qtpy.QtCore import QObject, QThreadPool, Signal

from ..engine import Cancelled

MIN_POOL_THREADS = 4  # load/embed + a cancelled one still finishing + decoding


def _ensure_pool_threads() -> None:
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < MIN_POOL_THREADS:
        pool.setMaxThreadCount(MIN_POOL_THREADS)


@dataclass(eq=False)
class Task:
    """One background job. ``key`` says what it computes for (checked before applying)."""

    label: str
    key: Hashable
    cancel_event: threading.Event = field(default_factory=threading.Event)
    bar: Any = None
    worker: Any = None

    def cancelled(self) -> bool:
        return self.cancel_event.is_set() or bool(getattr(self.bar, "is_canceled", False))


class _Relay(QObject):
    progressed = Signal(object, int, int)  # task, done, total; queued to the GUI thread


class TaskRunner:
    """Runs one current task at a time; starting another cancels and discards the old one.

    ``on_progress(task, done, total)`` is called for the current task only. A task cancelled
    from its napari progress bar always ends in ``on_error(task, Cancelled)``, even when it
    finishes normally (its result is dropped) or fails for another reason.
    """

    def __init__(self, on_progress: Callable[[Task, int, int], None]) -> None:
        _ensure_pool_threads()
        self._relay = _Relay()
        self._relay.progressed.connect(self._progressed)
        self._on_progress = on_progress
        self.current: Task | None = None
        self.live: set[Any] = set()  # workers still running, current or discarded

    @property
    def busy(self) -> bool:
        return bool(self.live)

    def start(self, label: str, key: Hashable, fn: Callable[..., Any], total: int,
              on_result: Callable[[Task, Any], None], on_error: Callable[[Task, BaseException], None]) -> Task:
        self.cancel()
        task = Task(label, key)
        task.bar = cancelable_progress(total=total, desc=label)
        relay = self._relay

        def body():
            return fn(lambda done, tot: relay.progressed.emit(task, int(done), int(tot)), task.cancelled)

        worker = create_worker(body, _start_thread=False, _ignore_errors=True)
        task.worker = worker
        worker.returned.connect(lambda result: self._returned(task, result, on_result, on_error))
        worker.errored.connect(lambda exc: self._errored(task, exc, on_error))
        worker.finished.connect(lambda: self._finished(task))
        self.current = task
        self.live.add(worker)
        worker.start()
        return task

    def cancel(self) -> Task | None:
        """Cancel the current task (it finishes in the background; its result is dropped)."""
        task, self.current = self.current, None
        if task is not None:
            task.cancel_event.set()
            self._close_bar(task)
        return task

    def _progressed(self, task: Task, done: int, total: int) -> None:
        if task is self.current and task.bar is not None:
            self._on_progress(task, done, total)
            try:
                if total and task.bar.total != total:
                    task.bar.total = total
                task.bar.update(done - task.bar.n)
            except RuntimeError:  # a progress view of a closed napari window; the status line still works
                pass

    def _returned(self, task: Task, result: Any, on_result, on_error) -> None:
        if task is not self.current:  # replaced or cancelled through cancel(): dropped
            return
        self.current = None
        self._close_bar(task)
        if task.cancelled():  # cancelled from the progress bar, finished anyway: dropped, said so
            on_error(task, Cancelled(f"{task.label} cancelled"))
        else:
            on_result(task, result)

    def _errored(self, task: Task, exc: BaseException, on_error) -> None:
        if task is self.current:  # errors of cancelled/replaced tasks are expected: dropped
            self.current = None
            self._close_bar(task)
            if task.cancelled() and not isinstance(exc, Cancelled):  # a cancelled task ends cancelled
                exc = Cancelled(f"{task.label} cancelled")
            on_error(task, exc)

    def _finished(self, task: Task) -> None:
        self.live.discard(task.worker)
        if task is self.current:  # finished without result (e.g. quit)
            self.current = None
        self._close_bar(task)

    @staticmethod
    def _close_bar(task: Task) -> None:
        if task.bar is not None:
            bar, task.bar = task.bar, None
            if bar.is_canceled:
                task.cancel_event.set()
            bar.close()


class LatestWins:
    """Runs ``fn(request)`` in a worker, one at a time. A request submitted while one runs
    waits; a newer one replaces it (rapid edits never pile up). ``on_result(request, result)``
    and ``on_error(request, exc)`` run on the GUI thread for every finished request."""

    def __init__(self, fn: Callable[[Any], Any], on_result: Callable[[Any, Any], None],
                 on_error: Callable[[Any, BaseException], None]) -> None:
        _ensure_pool_threads()
        self._fn, self._on_result, self._on_error = fn, on_result, on_error
        self._worker: Any = None
        self._pending: Any = None
        self.submitted = 0
        self.started = 0

    @property
    def busy(self) -> bool:
        return self._worker is not None or self._pending is not None

    def submit(self, request: Any) -> None:
        self.submitted += 1
        if self._worker is None:
            self._start(request)
        else:
            self._pending = request

    def drop_pending(self) -> None:
        self._pending = None

    def _start(self, request: Any) -> None:
        self.started += 1
        worker = create_worker(self._fn, request, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._on_result(request, result))
        worker.errored.connect(lambda exc: self._on_error(request, exc))
        worker.finished.connect(self._next)
        self._worker = worker
        worker.start()

    def _next(self) -> None:
        self._worker = None
        request, self._pending = self._pending, None
        if request is not None:
            self._start(request)
