"""Reliability findings seen from the widget (issue 10), through its public API: fixed below it
(per-call cancellation in the engine, export paths in ``io``, devices in ``resolve_device``)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from .helpers import add_point, go_to, shown_candidates


@pytest.fixture()
def committed(viewer, widget, rgb_image, tiny_checkpoint):
    """A 2D image with one committed object."""
    viewer.add_image(rgb_image, name="discs")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding is not None, widget.status_text
    add_point(viewer, 80, 100)
    assert widget.wait_idle(60) and widget.commit()
    return widget


def test_export_to_a_png_name_is_refused_with_a_message(committed, tmp_path):
    assert committed.export_labels(tmp_path / "labels.png") is None
    assert "TIFF" in committed.status_text and ".png" in committed.status_text
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_name_without_extension_writes_a_tif(committed, tmp_path):
    out = committed.export_labels(tmp_path / "labels")
    assert out == tmp_path / "labels.tif" and out.is_file()


def test_export_to_an_empty_path_says_what_is_wrong(committed):
    assert committed.export_labels("") is None
    assert "empty" in committed.status_text and "Errno" not in committed.status_text


def test_load_model_on_an_unknown_device_reports_it(widget, tiny_checkpoint):
    widget.load_model(str(tiny_checkpoint), device="banana")  # no exception out of the API
    assert widget.wait_idle(30)
    assert "banana" in widget.status_text and "'cpu'" in widget.status_text
    assert widget.model is None


def slowed(forward, seconds: float = 0.05):
    def run(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    return run


def test_moving_the_slider_while_neighbours_prefetch_never_cancels_the_plane_on_screen(viewer, widget, qtbot,
                                                                                       tiny_checkpoint):
    """Cancelling the prefetch of neighbours (and the embedding of planes left behind) must not
    stop the embedding of the plane on screen: it used to end 'cancelled', never embedded."""
    rng = np.random.default_rng(12)
    viewer.add_image(rng.integers(0, 4000, (24, 64, 80)).astype(np.uint16), name="tall stack")
    widget.load_model(str(tiny_checkpoint), device="cpu")
    assert widget.wait_idle(120) and widget.embedding is not None
    for block in widget.model.predictor.model.image_encoder.blocks:  # slow blocks: the jobs overlap
        block.forward = slowed(block.forward)
    for wait, (start, end) in zip((10, 40, 80, 120, 160), ((6, 12), (17, 23), (1, 19), (9, 15), (3, 21))):
        go_to(viewer, start)  # a plane not embedded yet: embedded, then its neighbours prefetched ...
        qtbot.waitUntil(lambda: widget.embedding is not None and widget.embedding[0].plane == (start,),  # noqa: B023
                        timeout=60_000)
        qtbot.wait(wait)
        go_to(viewer, end)  # ... and their prefetch is cancelled while it runs
        assert widget.wait_idle(120)
        assert "cancelled" not in widget.status_text, widget.status_text
        key, emb = widget.embedding
        assert key.plane == (end,) and emb.original_size == (64, 80)
        assert torch.isfinite(emb.features).all()
    add_point(viewer, 30, 40)  # new points are decoded, not left waiting
    assert widget.wait_idle(60) and len(shown_candidates(viewer)) == 3
