"""Background work of the session: stale results are never used, Cancel works, decoding is
latest-wins. A deferred synchronous executor holds tasks until the test runs them, so a test
can act while one is "running". (Moved from the widget tests; napari's progress bars and
workers are tested in tests/widgets/.)"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.annotator import ImageSource, Session, SyncExecutor, tasks
from napari_sam.engine import Cancelled

from .helpers import Prompts


@pytest.fixture()
def deferred():
    executor = SyncExecutor(deferred=True)
    return Session(executor), executor


@pytest.fixture()
def stubborn_embedding(monkeypatch):
    """Embedding tasks that ignore Cancel (a worst case: the result of a stale task does arrive,
    and must be dropped)."""
    original = tasks.embed

    def stubborn(model, volume, item):
        run = original(model, volume, item)
        return lambda report, cancelled: run(report, lambda: False)

    monkeypatch.setattr(tasks, "embed", stubborn)


def load(session, executor, checkpoint):
    session.load_model(str(checkpoint), device="cpu")
    executor.run_next()  # the model; its embedding task is queued next


def test_switching_image_mid_embedding_discards_the_stale_result(deferred, stubborn_embedding, tiny_checkpoint):
    s, executor = deferred
    a = ImageSource(np.zeros((64, 96), np.uint8), name="A")
    b = ImageSource(np.zeros((80, 50), np.uint8), name="B")
    s.set_image(a)
    load(s, executor, tiny_checkpoint)
    assert len(executor.queue) == 1
    s.set_image(b)
    assert len(executor.queue) == 2
    executor.run_next()  # A's embedding finishes after the switch
    assert s.embedding is None  # A's features were not applied to B
    executor.run_all()
    key, embedding = s.embedding
    assert embedding.original_size == (80, 50) and key == s.current_key()
    assert key.layer_id == b.serial != a.serial


def test_image_data_change_mid_embedding_reembeds(deferred, stubborn_embedding, tiny_checkpoint):
    s, executor = deferred
    source = ImageSource(np.zeros((64, 96), np.uint8), name="A")
    s.set_image(source)
    load(s, executor, tiny_checkpoint)
    source.data = np.zeros((40, 40), np.uint8)
    s.image_changed()
    assert len(executor.queue) == 2
    executor.run_all()
    key, embedding = s.embedding
    assert embedding.original_size == (40, 40) and key.data_version == 1


def test_model_change_mid_embedding(deferred, stubborn_embedding, tiny_checkpoint):
    s, executor = deferred
    s.set_image(ImageSource(np.zeros((64, 96), np.uint8), name="A"))
    load(s, executor, tiny_checkpoint)
    first_token = s.model.token
    load(s, executor, tiny_checkpoint)
    executor.run_all()
    key, _ = s.embedding
    assert key.model_token == s.model.token != first_token


def test_removing_the_image_mid_embedding(deferred, stubborn_embedding, tiny_checkpoint):
    s, executor = deferred
    s.set_image(ImageSource(np.zeros((64, 96), np.uint8), name="A"))
    load(s, executor, tiny_checkpoint)
    s.set_image(None)
    executor.run_all()
    assert s.embedding is None and s.image is None
    assert "No image" in s.status_text


def test_cancel_stops_embedding(deferred, tiny_checkpoint):
    s, executor = deferred
    busy = []
    s.events.busy.connect(busy.append)
    s.set_image(ImageSource(np.zeros((64, 96), np.uint8), name="A"))
    load(s, executor, tiny_checkpoint)
    assert s.slots.running("embed") and busy[-1] is True  # the view enables Cancel
    s.cancel()
    assert "cancelled" in s.status_text and busy[-1] is False
    executor.run_all()
    assert s.embedding is None and not s.slots.running("embed")
    s.start_embedding()  # pressing 'Load model' again with the same model: embeds again
    executor.run_all()
    assert s.embedding is not None


def test_prompts_during_embedding_are_decoded_when_it_is_ready(deferred, rgb_image, tiny_checkpoint):
    s, executor = deferred
    prompts = Prompts(s)
    s.set_image(ImageSource(rgb_image, rgb=True, name="discs"))
    load(s, executor, tiny_checkpoint)
    prompts.add(80, 100)
    assert "decoded as soon as the embedding is ready" in s.status_text
    executor.run_all()
    assert len(s.object.candidates) == 3


@pytest.fixture()
def ready_deferred(deferred, rgb_image, tiny_checkpoint):
    s, executor = deferred
    s.set_image(ImageSource(rgb_image, rgb=True, name="discs"))
    s.load_model(str(tiny_checkpoint), device="cpu")
    executor.run_all()
    assert s.embedding is not None
    return s, executor


def decodes(executor) -> list:
    return [t for t in executor.submitted if t.label == "decoding"]


def test_decoding_is_latest_wins(ready_deferred):
    s, executor = ready_deferred
    prompts = Prompts(s)
    for k in range(6):  # rapid edits while the first decode is busy
        prompts.add(60 + 5 * k, 90 + 5 * k)
    assert len(decodes(executor)) == 1 and not s.urgent.idle  # prefetch would wait now
    executor.run_all()
    requests = [t.key for t in decodes(executor)]
    assert len(requests) == 2  # the first and the latest; four never ran
    assert requests[-1].plan.points.shape == (6, 2)
    (cand,) = s.object.candidates  # result of the latest request only
    assert cand.index == 0 and s.urgent.idle


def test_result_after_clear_is_dropped(ready_deferred):
    s, executor = ready_deferred
    Prompts(s).add(80, 100)
    s.clear()
    executor.run_all()
    assert len(decodes(executor)) == 1 and not s.object.candidates


def test_prefetch_yields_to_a_pending_decode(ready_stack):
    """A prefetch task does not embed while a decode is in flight, and goes on after it."""
    import threading
    import time

    s = ready_stack
    vol = s.volume
    vol.cache.clear()
    release = s.urgent.hold()  # a click's decode is submitted
    done = []
    run = tasks.prefetch(vol, [(1, 0, 0), (3, 0, 0)], s.urgent)
    worker = threading.Thread(target=lambda: done.append(list(run(lambda *a: None, lambda: False))))
    worker.start()
    time.sleep(0.5)
    assert not vol.cache.keys() and not done  # waiting
    release()
    worker.join(60)
    assert sorted(vol.cache.keys()) == [(1, 0, 0), (3, 0, 0)] and len(done[0]) == 2
    release()  # a second release changes nothing
    assert s.urgent.idle


def test_download_progress_in_the_status_line(session, said, monkeypatch, tiny_model):
    from napari_sam.engine import Predictor

    def load_model(name, device="auto", progress=None, cancel=None):
        for done in range(0, 1001, 10):
            if cancel():
                raise Cancelled("download cancelled")
            progress(done, 1000)
        return Predictor(tiny_model, device="cpu")

    monkeypatch.setattr("napari_sam.weights.load_model", load_model)
    session.set_image(ImageSource(np.zeros((64, 96), np.uint8), name="A"))
    session.load_model("vit_b", device="cpu")
    assert "downloading vit_b: 37%" in [text for text, _ in said]
    assert session.model is not None and session.embedding is not None


class BarCancelled(SyncExecutor):
    """As if the user pressed Cancel in napari's activity panel while each task ran."""

    def submit(self, task):
        if not task.urgent:
            task.cancel_sources.append(lambda: True)
        super().submit(task)


def test_cancel_from_outside_of_a_task_that_finishes_anyway(monkeypatch, tiny_model):
    """Loading a checkpoint never polls cancel: the task returns normally after it was
    cancelled from outside (napari's progress bar). Its result is dropped and the session says so."""
    from napari_sam.engine import Predictor

    monkeypatch.setattr("napari_sam.weights.load_model", lambda *a, **k: Predictor(tiny_model, device="cpu"))
    s = Session(BarCancelled())
    s.set_image(ImageSource(np.zeros((64, 96), np.uint8), name="A"))
    s.load_model("vit_b", device="cpu")
    assert s.model is None and s.embedding is None
    assert s.status_text == "downloading vit_b cancelled."
    assert not s.slots.running("load")
