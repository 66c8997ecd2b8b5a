"""The session's executor in napari: tasks run in napari generator workers, and everything
they produce comes back to the GUI thread.

- An *urgent* task (decoding a click) goes to one long-lived generator worker that waits for
  work, so a decode starts at once (no thread start, no timer); it stops after
  :data:`IDLE_S` seconds without work and is started again by the next one.
- Every other task gets its own generator worker and a napari progress bar whose Cancel
  cancels the task.
- What a task yields comes back through the worker's ``yielded`` signal; what it reports
  through ``report(done, total)`` (engine callbacks, from deep inside a computation) through
  the one relay signal of this executor. Both end in ``Task.progressed`` / ``Task.yielded`` on
  the GUI thread.
- When the application quits, or the Python process exits (a script that closed its viewer), the
  executor cancels what it runs and waits (at most :data:`EXIT_WAIT_S`) for its threads: a worker
  thread that outlives Qt's objects would abort the process.
"""

from __future__ import annotations

import atexit
import queue
import weakref

from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from qtpy.QtCore import QObject, QThreadPool, Signal
from qtpy.QtWidgets import QApplication

from ..annotator import Task

IDLE_S = 3.0
EXIT_WAIT_S = 10.0
MIN_POOL_THREADS = 4  # urgent lane + embedding + prefetch or a job + a cancelled one finishing


class _Relay(QObject):
    progressed = Signal(object, int, int)  # task, done, total: queued to the GUI thread


class NapariExecutor:
    def __init__(self) -> None:
        pool = QThreadPool.globalInstance()
        if pool.maxThreadCount() < MIN_POOL_THREADS:
            pool.setMaxThreadCount(MIN_POOL_THREADS)
        self._relay = _Relay()
        self._relay.progressed.connect(self._progressed)
        self._bars: dict[Task, object] = {}
        self._urgent: queue.Queue = queue.Queue()
        self._lane = None  # the urgent worker while it runs
        self._lane_task: Task | None = None  # what the urgent worker runs now
        self.closed = False
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    def submit(self, task: Task) -> None:
        if task.urgent:
            self._urgent.put(task)
            if self._lane is None:
                self._start_lane()
            return
        bar = cancelable_progress(total=task.total, desc=task.label)
        self._bars[task] = bar
        task.cancel_sources.append(lambda: bool(getattr(bar, "is_canceled", False)))
        relay = self._relay

        def body():
            return (yield from task.steps(lambda done, total: relay.progressed.emit(task, int(done), int(total))))

        worker = create_worker(body, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(task.yielded)
        worker.returned.connect(task.returned)
        worker.errored.connect(task.errored)
        worker.finished.connect(lambda: self._finished(task))
        worker.start()

    def close(self) -> None:
        """Stop the urgent worker (running tasks finish; nothing new starts there)."""
        self.closed = True
        self._urgent.put(None)

    def shutdown(self, wait_s: float = EXIT_WAIT_S) -> bool:
        """Cancel every task of this executor, stop the urgent worker and wait up to ``wait_s``
        seconds for the worker threads; True when they all finished."""
        self.close()
        for task in [*self._bars, self._lane_task]:
            if task is not None:
                task.cancel()
        return bool(QThreadPool.globalInstance().waitForDone(int(wait_s * 1000)))

    # --- GUI thread --------------------------------------------------------------------
    def _progressed(self, task: Task, done: int, total: int) -> None:
        bar = self._bars.get(task)
        if bar is not None:
            try:
                if total and bar.total != total:
                    bar.total = total
                bar.update(done - bar.n)
            except RuntimeError:  # the progress view of a closed napari window
                pass
        task.progressed(done, total)

    def _finished(self, task: Task) -> None:
        bar = self._bars.pop(task, None)
        if bar is not None:
            if bar.is_canceled:
                task.cancel()
            bar.close()
        task.finish()

    def _start_lane(self) -> None:
        self._lane = create_worker(self._lane_loop, _start_thread=False, _ignore_errors=True)
        self._lane.yielded.connect(self._lane_item)
        self._lane.finished.connect(self._lane_finished)
        self._lane.start()

    def _lane_loop(self):
        """The urgent worker (a generator in its thread): run tasks as they come."""
        while True:
            try:
                task = self._urgent.get(timeout=IDLE_S)
            except queue.Empty:
                return
            if task is None:
                return
            self._lane_task = task
            steps = task.steps(lambda done, total: None)
            try:
                while True:
                    yield task, "yield", next(steps)
            except StopIteration as stop:
                yield task, "result", stop.value
            except Exception as exc:  # noqa: BLE001 (delivered to the task)
                yield task, "error", exc
            self._lane_task = None
            yield task, "finish", None

    @staticmethod
    def _lane_item(item) -> None:
        task, what, value = item
        {"yield": task.yielded, "result": task.returned, "error": task.errored,
         "finish": lambda _: task.finish()}[what](value)

    def _lane_finished(self) -> None:
        self._lane = None
        if not self.closed and not self._urgent.empty():  # work came in while it was stopping
            self._start_lane()


def _shutdown_if_alive(ref: weakref.ref) -> None:
    executor = ref()
    if executor is not None:
        executor.shutdown()
