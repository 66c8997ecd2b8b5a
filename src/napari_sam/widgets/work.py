"""What runs in worker threads (no Qt): loading, embedding, decoding, and their identities.

Results carry the key they were computed for; the widget applies a result only while its
key is still current, so nothing computed for one image/model ever lands on another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..engine import Embedding, Predictor
from .prompts import DecodePlan
from .state import Candidate, merge_objects, rank_single


@dataclass(frozen=True)
class EmbeddingKey:
    """Identity of an embedding: which image layer (a serial number), which version of its
    data, which model load."""

    layer_id: int
    data_version: int
    model_token: int


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
    embedding: Embedding
    model: LoadedModel
    plan: DecodePlan


def load(name_or_path: str, device: str) -> Callable:
    """Task function that returns a :class:`~napari_sam.engine.Predictor`."""
    def run(report, cancelled):
        from ..weights import load_model

        return load_model(name_or_path, device=device, progress=report, cancel=cancelled)

    return run


def embed(model: LoadedModel, image: np.ndarray, contrast_limits: tuple[float, float] | None) -> Callable:
    """Task function that returns the :class:`~napari_sam.engine.Embedding` of ``image``
    (``(H, W)`` or ``(H, W, 3)``), reporting one step per encoder block."""
    steps = model.encoder_steps()

    def run(report, cancelled):
        polls = [0]

        def poll() -> bool:
            polls[0] += 1
            report(min(polls[0], steps), steps)
            return cancelled()

        return model.predictor.compute_embedding(image, contrast_limits, cancel=poll)

    return run


def decode(request: DecodeRequest) -> list[Candidate]:
    """Decode ``request.plan`` on ``request.embedding``: candidates best first."""
    predictor, plan = request.model.predictor, request.plan
    with request.model.lock:
        current = predictor.embedding
        if current is None or current.features is not request.embedding.features:
            predictor.set_embedding(request.embedding)
        if plan.several_objects:
            pred = predictor.predict_boxes(plan.boxes, multimask=False)
            return [merge_objects(pred.masks[:, 0], pred.scores[:, 0])]
        pred = predictor.predict(points=plan.points, labels=plan.labels, box=plan.box,
                                 mask_input=plan.mask_input, multimask=plan.multimask)
    return rank_single(pred.masks, pred.scores, pred.logits)
