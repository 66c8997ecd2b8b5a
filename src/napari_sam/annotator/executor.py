"""Background work of a session: tasks, the executors that run them, and the session's slots.

A task's function is the engine's protocol, ``fn(report, cancelled)``: ``report(done, total)``
may be called from the worker, ``cancelled()`` says stop (engine calls then raise
:class:`~napari_sam.engine.Cancelled`). It returns its result, or it is a generator: every item
it yields is delivered as it comes (a :class:`Progress` counts as progress, anything else is a
partial result, e.g. one plane of a propagation) and its ``return`` value is the result.

An *executor* runs tasks and delivers what they produce on the session's thread, by calling
the task's ``progressed`` / ``yielded`` / ``returned`` / ``errored`` and finally ``finish``.
:class:`SyncExecutor` runs them at once in the calling thread (tests, scripts); the napari
view runs them in napari workers. :class:`Slots` (owned by the session) decides which results
still count: one current task per slot, a newer one replaces (and cancels) it; a latest-wins
slot (decoding) lets the running task finish and keeps only the newest waiting one.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..engine import Cancelled


@dataclass(frozen=True)
class Progress:
    """Yielded by a generator task: ``done`` of ``total`` steps."""

    done: int
    total: int


def _ignore(*_args) -> None:
    return None


@dataclass(eq=False)
class Task:
    """One piece of background work. ``key`` says what it is computed for (checked before its
    results are used); ``urgent`` tasks (decoding) are started without delay."""

    label: str
    key: Hashable
    fn: Callable[[Callable[[int, int], None], Callable[[], bool]], Any]
    total: int = 0
    urgent: bool = False
    on_result: Callable[[Task, Any], None] = _ignore
    on_error: Callable[[Task, BaseException], None] = _ignore
    on_yield: Callable[[Task, Any], None] = _ignore
    on_progress: Callable[[Task, int, int], None] = _ignore
    on_finish: Callable[[Task], None] = _ignore
    cancel_sources: list[Callable[[], bool]] = field(default_factory=list)  # e.g. a progress bar's Cancel
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run once when it finishes (or is dropped)
    finished: bool = False
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._event.set()

    def cancelled(self) -> bool:
        return self._event.is_set() or any(source() for source in self.cancel_sources)

    def steps(self, report: Callable[[int, int], None]) -> Iterator[Any]:
        """Run the function (in the worker); a generator of what it yields, returning its result."""
        out = self.fn(report, self.cancelled)
        if inspect.isgenerator(out):
            out = yield from out
        return out

    # --- called by executors on the session's thread ---------------------------------
    def progressed(self, done: int, total: int) -> None:
        self.on_progress(self, int(done), int(total))

    def yielded(self, item: Any) -> None:
        if isinstance(item, Progress):
            self.progressed(item.done, item.total)
        else:
            self.on_yield(self, item)

    def returned(self, result: Any) -> None:
        self.on_result(self, result)

    def errored(self, exc: BaseException) -> None:
        self.on_error(self, exc)

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            for cleanup in self.cleanups:
                cleanup()
            self.on_finish(self)


class Executor(Protocol):
    def submit(self, task: Task) -> None:
        """Run ``task`` and deliver its outcome on the session's thread (see module docstring)."""


def run_here(task: Task, report: Callable[[int, int], None] | None = None) -> None:
    """Run ``task`` to the end in this thread, delivering as it goes."""
    steps = task.steps(report or task.progressed)
    try:
        while True:
            task.yielded(next(steps))
    except StopIteration as stop:
        task.returned(stop.value)
    except Exception as exc:  # noqa: BLE001 (every failure goes to the task's error handler)
        task.errored(exc)
    finally:
        task.finish()


class SyncExecutor:
    """Runs every task at once in the calling thread. With ``deferred=True`` tasks wait in
    :attr:`queue` until :meth:`run_next` / :meth:`run_all` (tests of what happens meanwhile)."""

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        self.queue: list[Task] = []
        self.submitted: list[Task] = []

    def submit(self, task: Task) -> None:
        self.submitted.append(task)
        if self.deferred:
            self.queue.append(task)
        else:
            run_here(task)

    def run_next(self) -> Task | None:
        task = self.queue.pop(0) if self.queue else None
        if task is not None:
            run_here(task)
        return task

    def run_all(self) -> int:
        n = 0
        while self.run_next() is not None:
            n += 1
        return n


class Slots:
    """The session's tasks by slot (``"load"``, ``"embed"``, ``"decode"``, ``"job"``, ...).

    :meth:`start` makes a task the slot's current one, cancelling (and dropping) the one before.
    Only the current task's progress, partial results and result are passed on; a task that
    was cancelled while current (e.g. from a progress bar) ends in its ``on_error`` with
    :class:`Cancelled`, even when it finished normally. :meth:`submit_latest` is for a
    latest-wins slot: every finished task's outcome is passed on (the caller checks it is
    still wanted), at most one task waits, and a newer one replaces it. ``on_change`` is
    called whenever the set of current tasks changes.
    """

    def __init__(self, executor: Executor, on_change: Callable[[], None] = _ignore) -> None:
        self.executor = executor
        self.on_change = on_change
        self.current: dict[str, Task] = {}
        self.waiting: dict[str, Task] = {}
        self.live: set[Task] = set()  # submitted and not finished, current or not

    @property
    def busy(self) -> bool:
        return bool(self.live or self.waiting)

    def running(self, *slots: str) -> bool:
        return any(slot in self.current for slot in slots)

    def start(self, slot: str, task: Task, on_result, on_error, on_yield=_ignore, on_progress=_ignore) -> Task:
        self.cancel(slot)
        task.on_result = lambda t, r: self._returned(slot, t, r, on_result, on_error)
        task.on_error = lambda t, e: self._errored(slot, t, e, on_error)
        task.on_yield = lambda t, item: self._is_current(slot, t) and not t.cancelled() and on_yield(t, item)
        task.on_progress = lambda t, d, n: self._is_current(slot, t) and on_progress(t, d, n)
        task.on_finish = lambda t: self._finished(slot, t)
        self.current[slot] = task
        self._submit(task)
        return task

    def cancel(self, slot: str) -> Task | None:
        """Cancel the slot's current task (it may finish in the background; its results are dropped)."""
        task = self.current.pop(slot, None)
        dropped = self.waiting.pop(slot, None)
        if dropped is not None:
            dropped.finish()
        if task is not None:
            task.cancel()
            self.on_change()
        return task

    def submit_latest(self, slot: str, task: Task, on_result, on_error) -> None:
        task.on_result = lambda t, r: on_result(t, r)
        task.on_error = lambda t, e: on_error(t, e)
        task.on_finish = lambda t: self._latest_finished(slot, t)
        if slot in self.current:
            old = self.waiting.pop(slot, None)
            if old is not None:
                old.finish()  # replaced before it ran
            self.waiting[slot] = task
        else:
            self.current[slot] = task
            self._submit(task)

    def drop_waiting(self, slot: str) -> None:
        task = self.waiting.pop(slot, None)
        if task is not None:
            task.finish()

    # --- outcome routing -------------------------------------------------------------
    def _submit(self, task: Task) -> None:
        self.live.add(task)
        self.on_change()
        self.executor.submit(task)

    def _is_current(self, slot: str, task: Task) -> bool:
        return self.current.get(slot) is task

    def _returned(self, slot, task, result, on_result, on_error) -> None:
        if not self._is_current(slot, task):
            return  # replaced or cancelled: dropped
        del self.current[slot]
        self.on_change()
        if task.cancelled():  # cancelled from outside (a progress bar) but finished anyway
            on_error(task, Cancelled(f"{task.label} cancelled"))
        else:
            on_result(task, result)

    def _errored(self, slot, task, exc, on_error) -> None:
        if not self._is_current(slot, task):
            return  # errors of cancelled or replaced tasks are expected
        del self.current[slot]
        self.on_change()
        if task.cancelled() and not isinstance(exc, Cancelled):
            exc = Cancelled(f"{task.label} cancelled")
        on_error(task, exc)

    def _finished(self, slot: str, task: Task) -> None:
        self.live.discard(task)
        if self._is_current(slot, task):  # ended without an outcome
            del self.current[slot]
        self.on_change()

    def _latest_finished(self, slot: str, task: Task) -> None:
        self.live.discard(task)
        if self._is_current(slot, task):
            del self.current[slot]
            following = self.waiting.pop(slot, None)
            if following is not None:
                self.current[slot] = following
                self._submit(following)
                return
        self.on_change()
