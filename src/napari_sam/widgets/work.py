"""What runs in worker threads (no Qt): loading, embedding, decoding, and their identities.

Results carry the key they were computed for; the widget applies a result only while its
key is still current, so nothing computed for one image/model ever lands on another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine import Predictor, VolumeEmbeddings
from .prompts import DecodePlan
from .state import Candidate, merge_objects, rank_single


@dataclass(frozen=True)
class EmbeddingKey:
    """Identity of an embedding: which image layer (a serial number), which version of its
    data, which model load, which plane (leading indices of an nD image; ``()`` for 2D)."""

    layer_id: int
    data_version: int
    model_token: int
    plane: tuple[int, ...] = ()


@dataclass(eq=False)
class LoadedModel:
    """A ready predictor; ``token`` changes with every load. ``lock`` serialises decoding."""

    predictor: Predictor
    token: int
    label: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def encoder_steps(self) -> int:
        """How often ``compute_embedding`` polls its cancel callback (once + once per block)."""
        blocks = getattr(getattr(self.predictor.model, "image_encoder", None), "blocks", ())
        return len(blocks) + 1


@dataclass(frozen=True)
class DecodeRequest:
    generation: int
    key: EmbeddingKey
    volume: VolumeEmbeddings
    model: LoadedModel
    plan: DecodePlan


def load(name_or_path: str, device: str) -> Callable:
    """Task function that returns a :class:`~napari_sam.engine.Predictor`."""
    def run(report, cancelled):
        from ..weights import load_model

        return load_model(name_or_path, device=device, progress=report, cancel=cancelled)

    return run


def embed(model: LoadedModel, volume: VolumeEmbeddings, item: tuple[int, ...]) -> Callable:
    """Task function that returns the :class:`~napari_sam.engine.Embedding` of ``item`` (a plane
    and tile of ``volume``), reporting one step per encoder block."""
    steps = model.encoder_steps()

    def run(report, cancelled):
        polls = [0]

        def poll() -> bool:
            polls[0] += 1
            report(min(polls[0], steps), steps)
            return cancelled()

        return volume.embedding(item, cancel=poll)

    return run


def prefetch(volume: VolumeEmbeddings, items: list[tuple[int, ...]]) -> Callable:
    """Task function that embeds ``items`` into ``volume``'s cache (nearest first)."""
    def run(report, cancelled):
        todo = [item for item in items if volume.cached(item) is None]
        for n, item in enumerate(todo):
            if cancelled():
                break
            volume.embedding(item, cancel=cancelled)
            report(n + 1, len(todo))
        return len(todo)

    return run


def decode(request: DecodeRequest) -> list[Candidate]:
    """Decode ``request.plan`` on the request's plane (embedding it first if it is a tile
    not yet embedded): candidates best first, placed by their window's offset."""
    vol, plan, plane = request.volume, request.plan, request.key.plane
    with request.model.lock:
        if plan.several_objects:
            out = vol.predict_boxes(plane, plan.boxes)
            return [merge_objects(out.prediction.masks[:, 0], out.prediction.scores[:, 0], out.offset)]
        out = vol.predict(plane, points=plan.points, labels=plan.labels, box=plan.box,
                          mask_input=plan.mask_input, multimask=plan.multimask)
    pred = out.prediction
    return rank_single(pred.masks, pred.scores, pred.logits, out.offset)
