"""The session's work in napari workers: progress bars with Cancel, the urgent lane for
decoding, stale results from real threads. Jobs are held at a gate (a threading.Event) so a
test can act while one runs, then release it and check what the widget did with the result."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam.annotator import tasks

from .helpers import add_point, points_layer, shown_candidates


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


def current_bar(widget, label):
    (task,) = [t for t in widget.executor._bars if t.label == label]
    return widget.executor._bars[task]


def test_download_progress_in_the_status_line_and_the_bar(viewer, widget, fake_download, qtbot):
    at_37, release = fake_download
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    widget.load_model("vit_b", device="cpu")
    qtbot.waitUntil(at_37.is_set, timeout=5000)
    qtbot.waitUntil(lambda: "downloading vit_b: 37%" in widget.status_text, timeout=5000)
    assert widget.wait_idle(0.2) is False  # still working
    bar = current_bar(widget, "downloading vit_b")
    assert bar.n == 370 and bar.total == 1000 and widget.ui.cancel.isEnabled()
    release.set()
    assert widget.wait_idle(60)
    assert widget.model is not None and widget.embedding is not None and not widget.ui.cancel.isEnabled()


def test_cancel_from_napari_progress_bar(viewer, widget, fake_download, qtbot):
    at_37, release = fake_download
    widget.load_model("vit_b", device="cpu")
    qtbot.waitUntil(at_37.is_set, timeout=5000)
    current_bar(widget, "downloading vit_b").cancel()  # the Cancel button of napari's activity panel
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
    current_bar(widget, "downloading vit_b").cancel()
    release.set()
    assert widget.wait_idle(30)
    assert widget.model is None and widget.embedding is None
    assert widget.status_text == "downloading vit_b cancelled."
    assert not widget.ui.cancel.isEnabled() and not widget.executor._bars


def test_switching_image_mid_embedding_discards_the_stale_result(viewer, widget, tiny_checkpoint, qtbot,
                                                                 monkeypatch):
    jobs, original = [], tasks.embed

    def gated(model, volume, item):  # waits at a gate and ignores Cancel meanwhile
        run, event = original(model, volume, item), threading.Event()
        jobs.append(event)
        return lambda report, cancelled: event.wait(30) and run(report, lambda: False)

    monkeypatch.setattr(tasks, "embed", gated)
    viewer.add_image(np.zeros((64, 96), np.uint8), name="A")
    viewer.add_image(np.zeros((80, 50), np.uint8), name="B")
    qtbot.waitUntil(lambda: widget.ui.image.count() == 2, timeout=5000)  # the widget saw both
    assert widget.image.name == "A"
    widget.load_model(str(tiny_checkpoint), device="cpu")
    qtbot.waitUntil(lambda: len(jobs) == 1, timeout=30_000)
    widget.ui.image.setCurrentText("B")
    assert widget.image.name == "B" and len(jobs) == 2
    jobs[0].set()  # A's embedding finishes after the switch
    qtbot.wait(300)
    assert widget.embedding is None  # A's features were not applied to B
    jobs[1].set()
    assert widget.wait_idle(60)
    key, embedding = widget.embedding
    assert embedding.original_size == (80, 50) and key == widget.current_key()


def test_decoding_runs_on_the_urgent_lane_latest_wins(viewer, widget, rgb_image, tiny_checkpoint, monkeypatch,
                                                      qtbot):
    viewer.add_image(rgb_image, name="discs")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60)
    gate, requests, original = threading.Event(), [], tasks.decode

    def gated(request):
        run = original(request)

        def held(report, cancelled):
            requests.append(request)
            assert len(requests) > 1 or gate.wait(30)
            return run(report, cancelled)

        return held

    monkeypatch.setattr(tasks, "decode", gated)
    pts = points_layer(viewer)
    for k in range(6):  # rapid edits while the first decode is busy
        pts.add([[60 + 5 * k, 90 + 5 * k]])
    qtbot.waitUntil(lambda: len(requests) == 1, timeout=5000)
    assert widget.executor._lane is not None
    gate.set()
    assert widget.wait_idle(60)
    assert len(requests) == 2 and requests[-1].plan.points.shape == (6, 2)  # the first and the latest
    assert len(shown_candidates(viewer)) == 1
    add_point(viewer, 200, 300)
    assert widget.wait_idle(60) and len(requests) == 3


EXIT_SCRIPT = """
import sys, threading, time
from qtpy.QtWidgets import QApplication
app = QApplication([])
from napari_sam.annotator import Task
from napari_sam.widgets.executor import NapariExecutor

executor = NapariExecutor()
started = threading.Event()

def slow(report, cancelled):  # a job that runs until it is cancelled (an embedding, a propagation)
    started.set()
    while not cancelled():
        time.sleep(0.01)
    return "stopped"

def decode(report, cancelled):
    return "decoded"

executor.submit(Task("job", "k", slow))
executor.submit(Task("decode", "d", decode, urgent=True))
assert started.wait(10)
app.processEvents()
print("exiting", flush=True)
sys.exit(0)  # the script ends while its job and the urgent worker still run
"""


def test_process_exits_cleanly_while_workers_run(tmp_path):
    """A script (or napari quitting) that ends while a job runs: the executor cancels it and waits
    for its threads at exit, so no worker outlives Qt's objects (that aborted the process)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exiting" in done.stdout
