"""Tasks, the synchronous executor and the session's slots (no model, no Qt)."""

from __future__ import annotations

from napari_sam.annotator import Progress, Slots, SyncExecutor, Task
from napari_sam.engine import Cancelled


def record():
    out = []
    return out, (lambda t, r: out.append(("result", t.label, r))), (lambda t, e: out.append(("error", t.label, e)))


def test_a_generator_task_delivers_partial_results_progress_and_its_result():
    out, on_result, on_error = record()
    progress, partial = [], []

    def fn(report, cancelled):
        report(0, 2)
        yield "plane 1"
        yield Progress(1, 2)
        yield "plane 2"
        return "done"

    slots = Slots(SyncExecutor())
    slots.start("job", Task("job", 1, fn), on_result, on_error, on_yield=lambda t, item: partial.append(item),
                on_progress=lambda t, d, n: progress.append((d, n)))
    assert partial == ["plane 1", "plane 2"] and progress == [(0, 2), (1, 2)] and out == [("result", "job", "done")]
    assert not slots.busy and not slots.running("job")


def test_a_newer_task_replaces_and_cancels_the_current_one():
    executor = SyncExecutor(deferred=True)
    out, on_result, on_error = record()
    changes = []
    slots = Slots(executor, lambda: changes.append(slots.running("embed")))
    first = slots.start("embed", Task("first", 1, lambda r, c: "stale"), on_result, on_error)
    slots.start("embed", Task("second", 2, lambda r, c: "fresh"), on_result, on_error)
    assert first.cancelled() and slots.busy
    executor.run_all()
    assert out == [("result", "second", "fresh")]  # the replaced one's result was dropped
    assert not slots.busy and changes[-1] is False


def test_errors_of_replaced_tasks_are_dropped_and_a_cancelled_current_one_ends_cancelled():
    executor = SyncExecutor(deferred=True)
    out, on_result, on_error = record()
    slots = Slots(executor)

    def fails(report, cancelled):
        raise RuntimeError("boom")

    slots.start("load", Task("old", 1, fails), on_result, on_error)
    task = slots.start("load", Task("new", 2, lambda r, c: "ok"), on_result, on_error)
    task.cancel_sources.append(lambda: True)  # cancelled from outside while it runs
    executor.run_all()
    assert len(out) == 1 and out[0][:2] == ("error", "new") and isinstance(out[0][2], Cancelled)


def test_latest_wins_keeps_one_waiting_task_and_runs_it_after_the_running_one():
    executor = SyncExecutor(deferred=True)
    out, on_result, on_error = record()
    cleaned = []
    slots = Slots(executor)
    tasks = [Task(f"d{k}", k, lambda r, c, k=k: k, urgent=True) for k in range(4)]
    for task in tasks:
        task.cleanups.append(lambda task=task: cleaned.append(task.label))
        slots.submit_latest("decode", task, on_result, on_error)
    assert executor.submitted == [tasks[0]] and slots.waiting["decode"] is tasks[3]
    assert cleaned == ["d1", "d2"]  # replaced before they ran
    executor.run_all()
    assert [r for _, _, r in out] == [0, 3] and not slots.busy and cleaned == ["d1", "d2", "d0", "d3"]
    slots.submit_latest("decode", Task("d4", 4, lambda r, c: 4), on_result, on_error)
    slots.drop_waiting("decode")  # nothing waits: the running one is kept
    executor.run_all()
    assert out[-1][2] == 4
