"""Cancellation is per call: a cancelled embedding never stops another thread's work."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_sam.engine import Cancelled, Predictor


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8)


def one_trial(predictor: Predictor, image: np.ndarray) -> tuple[object, str]:
    """Thread A embeds (never cancelling) while thread B cancels itself as soon as A is inside
    its encoder; returns A's features (or its exception) and B's outcome."""
    a_running = threading.Event()
    result: dict[str, object] = {}

    def a_polls() -> bool:  # never cancels; says when A is inside its encoder
        a_running.set()
        return False

    def run_a():
        try:
            result["a"] = predictor.compute_embedding(image, cancel=a_polls).features
        except Cancelled as exc:
            result["a"] = exc

    def run_b():
        try:
            predictor.compute_embedding(image, cancel=a_running.is_set)
            result["b"] = "done"
        except Cancelled:
            result["b"] = "cancelled"

    threads = [threading.Thread(target=run_b), threading.Thread(target=run_a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return result["a"], result["b"]


def test_two_threads_embedding_one_cancelled_the_other_completes_correctly(tiny_model, image):
    """A cancelled call on one thread never aborts another thread's embedding on the same
    Predictor, which finishes with exactly the single-threaded features (the old
    forward-pre-hooks fired B's cancel check inside A's forward pass: 3-4 trials in 10)."""
    predictor = Predictor(tiny_model, device="cpu")
    expected = predictor.compute_embedding(image).features
    outcomes = [one_trial(predictor, image) for _ in range(12)]
    aborted = [a for a, _ in outcomes if not isinstance(a, torch.Tensor)]
    assert aborted == []
    assert all(torch.equal(a, expected) for a, _ in outcomes)
    assert any(b == "cancelled" for _, b in outcomes)  # the cancel itself still works


def test_no_hooks_are_left_on_the_shared_encoder(tiny_model, image):
    predictor = Predictor(tiny_model, device="cpu")
    calls = []
    with pytest.raises(Cancelled):
        predictor.compute_embedding(image, cancel=lambda: bool(calls.append(1)) or len(calls) > 2)
    predictor.compute_embeddings([image, image], batch_size=1, cancel=lambda: False)
    encoder = tiny_model.image_encoder
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in encoder.modules())


def test_batched_embedding_polls_inside_the_encoder(tiny_model, image):
    """``compute_embeddings`` polls between encoder blocks too (not only between batches)."""
    predictor = Predictor(tiny_model, device="cpu")
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2  # 1: before the batch, 2: block 0, 3: block 1 -> stop

    with pytest.raises(Cancelled):
        predictor.compute_embeddings([image], cancel=cancel)
    assert len(calls) == 3


def test_encoder_forward_takes_a_poll_per_block(tiny_model):
    polls = []
    x = torch.zeros(1, 3, 1024, 1024)
    with torch.no_grad():
        tiny_model.image_encoder(x, poll=lambda: polls.append(1))
    assert len(polls) == len(tiny_model.image_encoder.blocks)

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), torch.no_grad():
        tiny_model.embed(torch.zeros(1, 3, 64, 64), poll=stop)
