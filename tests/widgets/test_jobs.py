"""Background work: stale results are never applied, Cancel works, decoding is latest-wins.

Embedding/decoding jobs are held at a gate (a threading.Event) so a test can act while one
is running, then release it and check what the widget did with the result.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam.engine import Cancelled
from napari_sam.widgets import work

from .helpers import candidates, points_layer


class Gates:
    """Each gated job appends ``(what, event)``; it runs once its event is set."""

    def __init__(self):
        self.jobs: list[tuple[object, threading.Event]] = []

    def release_all(self):
        for _, event in self.jobs:
            event.set()


@pytest.fixture()
def embed_gates(monkeypatch):
    """Embedding jobs wait at a gate; they ignore Cancel while waiting (a worst case: the
    result of a stale job does arrive, and must be dropped)."""
    gates, original = Gates(), work.embed

    def gated(model, volume, item):
        run, event = original(model, volume, item), threading.Event()
        gates.jobs.append((volume.plane_shape, event))

        def body(report, cancelled):
            assert event.wait(30)
            return run(report, lambda: False)

        return body

    monkeypatch.setattr(work, "embed", gated)
    return gates


def load(widget, checkpoint, qtbot):
    widget.load_model(str(checkpoint), device="cpu")
    qtbot.waitUntil(lambda: widget.model is not None, timeout=30_000)


def test_switching_image_mid_embedding_discards_the_stale_result(viewer, widget, embed_gates, tiny_checkpoint, qtbot):
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    viewer.add_image(np.zeros((80, 50), np.uint8), name="B")
    qtbot.waitUntil(lambda: widget.ui.image.count() == 2, timeout=5000)  # the widget saw both
    assert widget.image.name == "A"
    load(widget, tiny_checkpoint, qtbot)
    qtbot.waitUntil(lambda: len(embed_gates.jobs) == 1, timeout=5000)
    widget.ui.image.setCurrentText("B")
    assert widget.image.name == "B" and len(embed_gates.jobs) == 2
    embed_gates.jobs[0][1].set()  # A's embedding finishes after the switch
    qtbot.wait(300)
    assert widget.embedding is None  # A's features were not applied to B
    embed_gates.jobs[1][1].set()
    assert widget.wait_idle(60)
    key, embedding = widget.embedding
    assert embedding.original_size == (80, 50) and key == widget.current_key()
    assert key.layer_id == widget._identity(viewer.layers["B"])[0] != widget._identity(viewer.layers["A"])[0]


def test_image_data_change_mid_embedding_reembeds(viewer, widget, embed_gates, tiny_checkpoint, qtbot):
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    load(widget, tiny_checkpoint, qtbot)
    qtbot.waitUntil(lambda: len(embed_gates.jobs) == 1, timeout=5000)
    viewer.layers["A"].data = np.zeros((40, 40), np.uint8)
    assert len(embed_gates.jobs) == 2
    embed_gates.release_all()
    assert widget.wait_idle(60)
    key, embedding = widget.embedding
    assert embedding.original_size == (40, 40) and key.data_version == 1


def test_model_change_mid_embedding(viewer, widget, embed_gates, tiny_checkpoint, qtbot):
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    load(widget, tiny_checkpoint, qtbot)
    qtbot.waitUntil(lambda: len(embed_gates.jobs) == 1, timeout=5000)
    first_token = widget.model.token
    load(widget, tiny_checkpoint, qtbot)
    qtbot.waitUntil(lambda: len(embed_gates.jobs) == 2, timeout=5000)
    embed_gates.release_all()
    assert widget.wait_idle(60)
    key, _ = widget.embedding
    assert key.model_token == widget.model.token != first_token


def test_removing_the_image_mid_embedding(viewer, widget, embed_gates, tiny_checkpoint, qtbot):
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    load(widget, tiny_checkpoint, qtbot)
    qtbot.waitUntil(lambda: len(embed_gates.jobs) == 1, timeout=5000)
    viewer.layers.remove("A")
    embed_gates.release_all()
    assert widget.wait_idle(60)
    assert widget.embedding is None and widget.image is None
    assert "No image" in widget.status_text or "removed" in widget.status_text


def test_cancel_button_stops_embedding(viewer, widget, monkeypatch, tiny_checkpoint, qtbot):
    started = threading.Event()
    original = work.embed

    def slow(model, image, limits):
        original(model, image, limits)  # the real task function is still built (arguments checked)

        def body(report, cancelled):
            started.set()
            while not cancelled():
                threading.Event().wait(0.01)
            raise Cancelled("embedding cancelled")

        return body

    monkeypatch.setattr(work, "embed", slow)
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    load(widget, tiny_checkpoint, qtbot)
    qtbot.waitUntil(started.is_set, timeout=5000)
    assert widget.ui.cancel.isEnabled()
    widget.ui.cancel.click()
    assert "cancelled" in widget.status_text
    assert widget.wait_idle(30)
    assert widget.embedding is None and not widget.ui.cancel.isEnabled()
    monkeypatch.setattr(work, "embed", original)
    widget.ui.load.click()  # loading again works
    assert widget.wait_idle(60) and widget.embedding is not None


def test_prompts_during_embedding_are_decoded_when_it_is_ready(viewer, widget, embed_gates, tiny_checkpoint,
                                                              rgb_image, qtbot):
    viewer.add_image(rgb_image, name="discs")
    load(widget, tiny_checkpoint, qtbot)
    qtbot.waitUntil(lambda: len(embed_gates.jobs) == 1, timeout=5000)
    points_layer(viewer).add([[80, 100]])
    assert "decoded as soon as the embedding is ready" in widget.status_text
    embed_gates.release_all()
    assert widget.wait_idle(60)
    assert len(candidates(viewer)) == 3


@pytest.fixture()
def ready(viewer, widget, rgb_image, tiny_checkpoint):
    viewer.add_image(rgb_image, name="discs")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding is not None
    return widget


def gate_decoder(widget):
    """Hold the next decode until the returned event is set; record every request."""
    requests, gate = [], threading.Event()
    decode = widget._decoder._fn

    def gated(request):
        requests.append(request)
        if len(requests) == 1:
            assert gate.wait(30)
        return decode(request)

    widget._decoder._fn = gated
    return requests, gate


def test_decoding_is_latest_wins(ready, viewer):
    requests, gate = gate_decoder(ready)
    pts = points_layer(viewer)
    for k in range(6):  # rapid edits while the first decode is busy
        pts.add([[60 + 5 * k, 90 + 5 * k]])
    assert len(requests) == 1 and ready._decoder.submitted == 6
    gate.set()
    assert ready.wait_idle(60)
    assert len(requests) == 2  # the first and the latest; four never ran
    assert requests[-1].plan.points.shape == (6, 2)
    (cand,) = candidates(viewer)  # result of the latest request only
    assert cand.metadata["napari_sam"]["index"] == 0


def test_result_after_clear_is_dropped(ready, viewer):
    requests, gate = gate_decoder(ready)
    points_layer(viewer).add([[80, 100]])
    ready.clear()
    gate.set()
    assert ready.wait_idle(60)
    assert len(requests) == 1 and not candidates(viewer)


@pytest.fixture()
def fake_download(monkeypatch, tiny_model):
    """``weights.load_model`` that 'downloads' 1000 bytes, pausing at 37 % until released."""
    from napari_sam.engine import Predictor
    from napari_sam.weights import DownloadCancelled

    at_37, release = threading.Event(), threading.Event()

    def load_model(name, device="auto", progress=None, cancel=None):
        for done in range(0, 1001, 10):
            if cancel():
                raise DownloadCancelled("download cancelled")
            progress(done, 1000)
            if done == 370:
                at_37.set()
                assert release.wait(30)
        return Predictor(tiny_model, device="cpu")

    monkeypatch.setattr("napari_sam.weights.load_model", load_model)
    return at_37, release


def test_download_progress_in_the_status_line(viewer, widget, fake_download, qtbot):
    at_37, release = fake_download
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    widget.load_model("vit_b", device="cpu")
    qtbot.waitUntil(at_37.is_set, timeout=5000)
    qtbot.waitUntil(lambda: "downloading vit_b: 37%" in widget.status_text, timeout=5000)
    assert widget.wait_idle(0.2) is False  # still working
    assert widget._loader.current.bar.n == 370 and widget._loader.current.bar.total == 1000
    release.set()
    assert widget.wait_idle(60)
    assert widget.model is not None and widget.embedding is not None


def test_cancel_from_napari_progress_bar(viewer, widget, fake_download, qtbot):
    at_37, release = fake_download
    widget.load_model("vit_b", device="cpu")
    qtbot.waitUntil(at_37.is_set, timeout=5000)
    widget._loader.current.bar.cancel()  # what the Cancel button of napari's activity panel does
    release.set()
    assert widget.wait_idle(30)
    assert widget.model is None and "cancelled" in widget.status_text


def test_progress_bar_cancel_of_a_task_that_finishes_anyway(viewer, widget, monkeypatch, tiny_model, qtbot):
    """Loading a checkpoint never polls cancel: the task returns normally after the user
    cancelled it in napari's activity panel. Its result is dropped and the widget says so."""
    from napari_sam.engine import Predictor

    started, release = threading.Event(), threading.Event()

    def load_model(name, device="auto", progress=None, cancel=None):  # ignores cancel
        started.set()
        assert release.wait(30)
        return Predictor(tiny_model, device="cpu")

    monkeypatch.setattr("napari_sam.weights.load_model", load_model)
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    widget.load_model("vit_b", device="cpu")
    qtbot.waitUntil(started.is_set, timeout=5000)
    assert widget.ui.cancel.isEnabled() and "downloading vit_b" in widget.status_text
    widget._loader.current.bar.cancel()  # the Cancel button of napari's activity panel
    release.set()
    assert widget.wait_idle(30)
    assert widget.model is None and widget.embedding is None
    assert widget.status_text == "downloading vit_b cancelled."
    assert not widget.ui.cancel.isEnabled() and widget._loader.current is None
