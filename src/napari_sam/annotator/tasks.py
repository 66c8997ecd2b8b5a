"""Task functions of the session (run by an executor, in worker threads; no Qt): loading a
model, embedding a plane, prefetching planes, decoding prompts. Also their identities.

Results carry the key they were computed for; the session uses a result only while its key
is still current, so nothing computed for one image, plane or model lands on another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine import Predictor, VolumeEmbeddings
from .executor import Progress
from .objects import merge_objects, rank_single
from .prompts import DecodePlan


@dataclass(frozen=True)
class EmbeddingKey:
    """Identity of an embedding: which image (its serial), which version of what SAM sees of
    it, which model load, which plane (``()`` for 2D)."""

    layer_id: int
    data_version: int
    model_token: int
    plane: tuple[int, ...] = ()


@dataclass(eq=False)
class LoadedModel:
    """A ready predictor; ``token`` changes with every load, ``kind`` names the model family
    (``"sam1"``; SAM 2 models say ``"sam2"``). ``lock`` serialises decoding. ``decoder``: the
    model's instance-segmentation decoder (None: it has none; see :mod:`.instances`)."""

    predictor: Predictor
    token: int
    label: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    decoder: object = None

    @property
    def kind(self) -> str:
        return "sam2" if getattr(self.predictor.model, "family", "sam") == "sam2" else "sam1"

    @property
    def device(self):
        return self.predictor.device

    def encoder_steps(self) -> int:
        """How often an embedding polls its cancel callback (once + once per encoder block)."""
        blocks = getattr(getattr(self.predictor.model, "image_encoder", None), "blocks", ())
        return len(blocks) + 1


@dataclass(frozen=True)
class DecodeRequest:
    generation: int
    key: EmbeddingKey
    volume: VolumeEmbeddings
    model: LoadedModel
    plan: DecodePlan


class UrgentWork:
    """Urgent work in flight (decodes submitted and not finished). Background embedding waits
    while there is any, so a click is never slowed down by prefetch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._idle = threading.Event()
        self._idle.set()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    def hold(self) -> Callable[[], None]:
        """Count one piece of urgent work; returns its release (safe to call more than once)."""
        with self._lock:
            self._count += 1
            self._idle.clear()
        released = []

        def release() -> None:
            with self._lock:
                if released:
                    return
                released.append(True)
                self._count -= 1
                if self._count == 0:
                    self._idle.set()

        return release

    def wait(self, cancelled: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until no urgent work is in flight, ``cancelled()``, or ``timeout`` seconds."""
        waited = 0.0
        while not self._idle.wait(0.02) and not cancelled() and waited < timeout:
            waited += 0.02


def own_poll(cancelled: Callable[[], bool], before: Callable[[], None] | None = None) -> Callable[[], bool]:
    """A cancel callback for one engine call (the engine polls it per call, between encoder
    blocks): runs ``before`` first (progress, yielding to urgent work), then answers
    ``cancelled()``."""
    def poll() -> bool:
        if before is not None:
            before()
        return cancelled()

    return poll


def load(name_or_path: str, device: str) -> Callable:
    """Task function that returns a :class:`~napari_sam.engine.Predictor` and the model's
    instance decoder on its device (None when it has none)."""
    def run(report, cancelled):
        from ..weights import load_model
        from .instances import find_decoder

        predictor = load_model(name_or_path, device=device, progress=report, cancel=cancelled)
        return predictor, find_decoder(name_or_path, predictor.device, progress=report, cancel=cancelled)

    return run


def embed(model: LoadedModel, volume: VolumeEmbeddings, item: tuple[int, ...]) -> Callable:
    """Task function that returns the embedding of ``item`` (a plane and tile of ``volume``),
    reporting one step per encoder block."""
    steps = model.encoder_steps()

    def run(report, cancelled):
        polls = [0]

        def count() -> None:
            polls[0] += 1
            report(min(polls[0], steps), steps)

        return volume.embedding(item, cancel=own_poll(cancelled, count))

    return run


def prefetch(volume: VolumeEmbeddings, items: list[tuple[int, ...]], urgent: UrgentWork) -> Callable:
    """Task function (a generator) that embeds ``items`` into ``volume``'s cache, nearest first,
    pausing whenever urgent work (a decode) is in flight; returns how many it embedded."""
    def run(report, cancelled):
        todo = [item for item in items if volume.cached(item) is None]
        poll = own_poll(cancelled, lambda: urgent.wait(cancelled))
        for n, item in enumerate(todo):
            urgent.wait(cancelled)
            if cancelled():
                return n
            volume.embedding(item, cancel=poll)
            yield Progress(n + 1, len(todo))
        return len(todo)

    return run


def decode(request: DecodeRequest) -> Callable:
    """Task function: candidates of ``request.plan`` on its plane (embedding the tile first if it
    is not yet), best first, placed by their window's offset."""
    def run(report, cancelled):
        vol, plan, plane = request.volume, request.plan, request.key.plane
        with request.model.lock:
            if plan.several_objects:
                out = vol.predict_boxes(plane, plan.boxes)
                return [merge_objects(out.prediction.masks[:, 0], out.prediction.scores[:, 0], out.offset)]
            out = vol.predict(plane, points=plan.points, labels=plan.labels, box=plan.box,
                              mask_input=plan.mask_input, multimask=plan.multimask)
        pred = out.prediction
        return rank_single(pred.masks, pred.scores, pred.logits, out.offset)

    return run
