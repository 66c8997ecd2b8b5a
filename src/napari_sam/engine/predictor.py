"""NumPy-in / NumPy-out interactive predictor (thread-agnostic, no Qt).

Coordinates follow napari: points are ``(row, col)``, boxes are
``(min_row, min_col, max_row, max_col)`` in pixels of the original image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..model.fastpath import encoder_context, prepare_encoder, resolve_precision
from . import checks
from .allocator import MemoryJobs, keep_freed_memory
from .fingerprint import keep_fingerprint, model_fingerprint
from .postprocess import masks_from_logits, upscale_logits  # noqa: F401  (upscale_logits: public)
from .preprocess import Geometry, points_inside, resize_rgb, to_rgb_uint8


class Cancelled(Exception):
    """Raised inside engine work when its ``cancel()`` callback returned True."""


def cancel_poll(cancel: Callable[[], bool] | None) -> Callable[[], None] | None:
    """A poll for one call: raises :class:`Cancelled` when ``cancel()`` returns True (None: none).
    Passed down the call (``Sam.embed(x, poll=...)``), never registered on shared modules, so a
    cancelled call cannot stop another thread's work on the same model."""
    if cancel is None:
        return None

    def poll() -> None:
        if cancel():
            raise Cancelled("embedding cancelled")

    return poll


@dataclass(frozen=True)
class Embedding:
    """Image features of one 2D image, ready for decoding.

    ``features``: ``(1, 256, 64, 64)`` tensor; ``original_size``: the image's ``(H, W)``;
    ``input_size``: its resized ``(h, w)`` inside the model's ``S x S`` input (SAM 2: ``(S, S)``,
    the image is stretched); ``model_name``: the model that computed it (features of another
    model are meaningless); ``model_fingerprint``: its weights
    (:func:`~napari_sam.engine.fingerprint.model_fingerprint`; None when unknown), so an
    embedding of other weights of the same model type is refused; ``high_res``: SAM 2's
    high-resolution features ``(1, 32, 256, 256)`` and ``(1, 64, 128, 128)`` (None for SAM 1).
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_name: str
    model_fingerprint: str | None = None
    high_res: tuple[torch.Tensor, ...] | None = None

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.original_size, self.input_size)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.features, *(self.high_res or ()))

    def to(self, device: torch.device | str) -> Embedding:
        """This embedding with its tensors on ``device`` (itself if they are there)."""
        if all(t.device == torch.device(device) for t in self.tensors):
            return self
        high = None if self.high_res is None else tuple(t.to(device) for t in self.high_res)
        return replace(self, features=self.features.to(device), high_res=high)


def is_sam2(model: torch.nn.Module) -> bool:
    return getattr(model, "family", "sam") == "sam2"


def mask_frame(model: torch.nn.Module, geometry: Geometry) -> tuple[Geometry, int]:
    """Geometry and input size to upscale low-res logits with (:func:`masks_from_logits`): SAM's
    (upsample to ``S``, crop, resize), or for SAM 2 one resize of the logits to the image size."""
    if is_sam2(model):
        g = 4 * model.prompt_encoder.image_embedding_size[0]
        return Geometry(geometry.original_size, (g, g)), g
    return geometry, model.img_size


@dataclass(frozen=True)
class Prediction:
    """Decoder output for one object: ``masks (K, H, W)`` bool, ``scores (K,)`` float32
    predicted IoU, ``logits (K, 256, 256)`` float32 low-res logits (valid ``mask_input``)."""

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray


DEVICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; other values (see :data:`DEVICES`) are checked
    to exist: anything else is a ``ValueError`` naming the argument and the accepted values."""
    mps = getattr(torch.backends, "mps", None)
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r} is not a device: use {DEVICES}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported: use {DEVICES}")
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple's MPS is not available here")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {dev} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return dev


def available_devices() -> list[str]:
    """Device names to offer: ``auto``, ``cpu``, and ``cuda`` / ``mps`` where present (the
    values :func:`resolve_device` takes)."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


class Predictor:
    """Embed an image once, then decode point/box/mask prompts in milliseconds."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "auto", *,
                 precision: str = "auto", compile: bool = False) -> None:
        """``precision``: ``"auto"`` (bf16 fast path on CUDA, exact fp32 elsewhere), ``"fp32"``,
        ``"bf16"`` or ``"int8"`` (CPU, opt-in); see :mod:`napari_sam.model.fastpath`. It converts
        the model's image encoder in place. ``compile=True`` wraps the encoder in
        ``torch.compile`` (slow first call; ``cancel`` is then polled only before a run)."""
        self.device = resolve_device(device)
        keep_freed_memory()  # no page faults on the encoder's and decoder's reused buffers
        self.memory_jobs = MemoryJobs()  # freed memory returned after each embedding unless a job runs
        self.precision = resolve_precision(precision, self.device)
        self.fingerprint = model_fingerprint(model)  # of the weights as loaded (before any conversion)
        self.model = model.to(self.device).eval()
        prepare_encoder(self.model.image_encoder, self.precision)
        keep_fingerprint(self.model, self.fingerprint)
        self._encoder = torch.compile(self.model.image_encoder) if compile else None
        self.embedding: Embedding | None = None
        self.image: np.ndarray | None = None  # RGB uint8 given to set_image (crop layers re-embed crops)

    @property
    def model_name(self) -> str:
        return getattr(self.model, "model_type", type(self.model).__name__)

    @property
    def is_image_set(self) -> bool:
        return self.embedding is not None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        return None if self.embedding is None else self.embedding.original_size

    # --- embedding -------------------------------------------------------------------
    def compute_embedding(
        self,
        image: np.ndarray,
        contrast_limits: tuple[float, float] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Embedding:
        """Embed a 2D image (see :func:`to_rgb_uint8` for accepted input). Heavy: run it in
        a worker. ``cancel()`` is polled between encoder blocks; True raises :class:`Cancelled`."""
        rgb = to_rgb_uint8(image, contrast_limits)
        geometry, resized = self._model_input(rgb)
        x = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float()
        poll = cancel_poll(cancel)
        if poll is not None:
            poll()
        try:
            features, high = self._embed(x, poll)
        finally:
            self.memory_jobs.step_done()
        return Embedding(features, geometry.original_size, geometry.input_size, self.model_name, self.fingerprint,
                         high)

    def _model_input(self, rgb: np.ndarray) -> tuple[Geometry, np.ndarray]:
        """The geometry of ``rgb`` in the model and the pixels to give it: SAM's resized to the
        longest side ``S`` here; SAM 2's as they are (the model resizes them to ``S x S``)."""
        if is_sam2(self.model):
            return Geometry(rgb.shape[:2], (self.model.img_size,) * 2), rgb
        geometry = Geometry.for_image(*rgb.shape[:2], self.model.img_size)
        return geometry, resize_rgb(rgb, geometry.input_size)

    def compute_embeddings(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        contrast_limits: tuple[float, float] | None = None,
        batch_size: int = 4,
        cancel: Callable[[], bool] | None = None,
    ) -> list[Embedding]:
        """Embed several 2D images (e.g. the slices of a stack, ``(N, H, W[, C])``), running
        the encoder on batches of ``batch_size`` images of equal resized shape (the GPU path is
        faster per image in batches). ``cancel()`` is polled between batches and encoder blocks."""
        prepared = []
        for image in images:
            prepared.append(self._model_input(to_rgb_uint8(image, contrast_limits)))
        out: list[Embedding | None] = [None] * len(prepared)
        poll = cancel_poll(cancel)
        for i in range(0, len(prepared), max(1, batch_size)):
            if poll is not None:
                poll()
            chunk = range(i, min(i + max(1, batch_size), len(prepared)))
            by_shape: dict[tuple[int, int], list[int]] = {}
            for j in chunk:
                by_shape.setdefault(prepared[j][1].shape[:2], []).append(j)
            for idx in by_shape.values():
                x = torch.from_numpy(np.stack([prepared[j][1] for j in idx])).to(self.device)
                features, high = self._embed(x.permute(0, 3, 1, 2).float(), poll)
                for n, j in enumerate(idx):
                    g = prepared[j][0]
                    hr = None if high is None else tuple(h[n:n + 1].clone() for h in high)
                    out[j] = Embedding(features[n:n + 1].clone(), g.original_size, g.input_size, self.model_name,
                                       self.fingerprint, hr)
        self.memory_jobs.step_done()
        return out  # type: ignore[return-value]

    def _embed(self, x: torch.Tensor, poll: Callable[[], None] | None = None
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Resized RGB ``(B, 3, h, w)`` -> fp32 features ``(B, 256, G, G)`` at this precision, and
        SAM 2's high-resolution features (None for SAM). ``poll()`` runs between encoder blocks
        (this call's own: not seen by other threads)."""
        with torch.no_grad(), encoder_context(self.precision, self.device):
            if is_sam2(self.model):
                features, high = self.model.embed(x, poll=poll)
                return features.float(), tuple(h.float() for h in high)
            if self._encoder is None:
                features = self.model.embed(x, poll=poll)
            else:
                features = self._encoder(self.model.preprocess(x))
        return features.float(), None

    def set_embedding(self, embedding: Embedding) -> None:
        """Decode on ``embedding`` from now on; one of another model, other weights (see
        :attr:`Embedding.model_fingerprint`), another shape or with non-finite features is refused."""
        embedding = self._require_embedding(embedding)
        if not all(torch.isfinite(t).all() for t in embedding.tensors):
            raise ValueError("embedding features hold NaN or infinity (a damaged embedding): compute it again")
        self.embedding = embedding
        self.image = None

    def set_image(self, image: np.ndarray, contrast_limits: tuple[float, float] | None = None) -> None:
        rgb = to_rgb_uint8(image, contrast_limits)
        self.set_embedding(self.compute_embedding(rgb))
        self.image = rgb

    def reset_image(self) -> None:
        self.embedding = None
        self.image = None

    # --- decoding --------------------------------------------------------------------
    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        *,
        embedding: Embedding | None = None,
    ) -> Prediction:
        """Decode one object from points ``(N, 2)`` (row, col) with ``labels`` ``(N,)``
        (1 foreground, 0 background; default all 1), an optional ``box`` and optional
        ``mask_input`` ``(1, 256, 256)`` logits from an earlier prediction. ``embedding``
        decodes on that embedding instead of the one set (the predictor's state is unchanged)."""
        emb = self._require_embedding(embedding)
        pts = None
        if labels is not None and np.asarray(labels).size and (points is None or not np.asarray(points).size):
            raise ValueError("labels given without points: pass the points they label")
        if points is not None and np.asarray(points).size:
            points = checks.coordinates(points, "points", 2, "(row, col)")
            labels = np.ones(len(points), np.int64) if labels is None else np.asarray(labels).reshape(-1)
            self._check_points(points, labels, emb.original_size)
            xy = torch.from_numpy(emb.geometry.points_to_model(points))[None].to(self.device)
            pts = (xy, torch.from_numpy(labels.astype(np.int64))[None].to(self.device))
        if box is not None:
            if np.size(box) != 4:
                raise ValueError(f"box must be 4 numbers (min_row, min_col, max_row, max_col), got shape "
                                 f"{np.shape(box)}; several boxes: use predict_boxes")
            box = checks.coordinates(np.ravel(box), "box", 4, "(min_row, min_col, max_row, max_col)")
        boxes = None if box is None else self._boxes_tensor(box, emb)
        masks = None if mask_input is None else self._mask_tensor(mask_input)
        if pts is None and boxes is None and masks is None:
            raise ValueError("nothing to segment: give at least one point, a box or a mask_input")
        return self._decode(emb, pts, boxes, masks, multimask, squeeze=True)

    def predict_boxes(self, boxes: np.ndarray, multimask: bool = False, *,
                      embedding: Embedding | None = None) -> Prediction:
        """Decode one object per box ``(N, 4)`` at once: ``masks (N, K, H, W)``, ``scores (N, K)``,
        ``logits (N, K, 256, 256)``."""
        emb = self._require_embedding(embedding)
        boxes = checks.coordinates(boxes, "boxes", 4, "(min_row, min_col, max_row, max_col)")
        if not len(boxes):
            k, (gh, gw) = (3 if multimask else 1), self._mask_hw()
            return Prediction(np.zeros((0, k, *emb.original_size), bool), np.zeros((0, k), np.float32),
                              np.zeros((0, k, gh, gw), np.float32))
        return self._decode(emb, None, self._boxes_tensor(boxes, emb), None, multimask, squeeze=False)

    def _decode(self, emb, pts, boxes, masks, multimask, squeeze) -> Prediction:
        extra = {} if emb.high_res is None else {"high_res": emb.high_res}
        logits, iou = self.model.decode(emb.features, pts, boxes, masks, multimask, **extra)
        full = masks_from_logits(logits.float(), *mask_frame(self.model, emb.geometry), self.model.mask_threshold)
        clamp = getattr(self.model, "logit_clamp", None)  # SAM 2 returns its logits clamped
        if clamp is not None:
            logits = logits.clamp(-clamp, clamp)
        out = (full.cpu().numpy(), iou.float().cpu().numpy(), logits.float().cpu().numpy())
        if squeeze:
            out = tuple(a[0] for a in out)
        return Prediction(*out)

    def _mask_tensor(self, mask_input) -> torch.Tensor:
        """Low-res logits ``(1, 256, 256)`` (also ``(256, 256)`` or ``(1, 1, 256, 256)``) as a tensor."""
        hw = self._mask_hw()
        try:
            arr = np.asarray(mask_input, dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"mask_input must be an array of logits, got {type(mask_input).__name__}") from None
        if arr.shape[-2:] != hw or arr.ndim > 4 or any(n != 1 for n in arr.shape[:-2]):
            raise ValueError(f"mask_input must be low-res logits of shape (1, {hw[0]}, {hw[1]}) (e.g. "
                             f"Prediction.logits[k:k + 1] of an earlier prediction), got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("mask_input must be finite logits: it holds NaN or infinity")
        return torch.from_numpy(arr).to(self.device).reshape(1, 1, *hw)

    def _mask_hw(self) -> tuple[int, int]:
        g = self.model.prompt_encoder.image_embedding_size
        return 4 * g[0], 4 * g[1]

    def _require_embedding(self, embedding: Embedding | None = None) -> Embedding:
        if embedding is not None:
            if embedding.model_name != self.model_name:
                raise ValueError(f"embedding was computed by model {embedding.model_name!r}, "
                                 f"this predictor runs {self.model_name!r}")
            if embedding.model_fingerprint not in (None, self.fingerprint):
                raise ValueError(f"embedding was computed by model {embedding.model_name!r} with other weights "
                                 f"than this predictor's ({embedding.model_fingerprint} vs {self.fingerprint}): "
                                 "compute it again with this predictor")
            g = self.model.prompt_encoder.image_embedding_size
            if tuple(embedding.features.shape[1:]) != (256, *g) or embedding.features.shape[0] != 1:
                raise ValueError(f"embedding features have shape {tuple(embedding.features.shape)}; this model "
                                 f"decodes (1, 256, {g[0]}, {g[1]})")
            if is_sam2(self.model) and embedding.high_res is None:
                raise ValueError("a SAM 2 embedding needs its high-resolution features (Embedding.high_res)")
            return embedding.to(self.device)
        if self.embedding is None:
            raise RuntimeError("no image set: call set_image() or set_embedding() first")
        return self.embedding

    def _boxes_tensor(self, boxes: np.ndarray, emb: Embedding) -> torch.Tensor:
        """Finite ``(N, 4)`` boxes -> model coordinates; degenerate boxes and boxes entirely
        outside the image are refused."""
        if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise ValueError("degenerate box: need min_row < max_row and min_col < max_col")
        h, w = emb.original_size
        outside = (boxes[:, 2] < -0.5) | (boxes[:, 0] > h - 0.5) | (boxes[:, 3] < -0.5) | (boxes[:, 1] > w - 0.5)
        if outside.any():
            raise ValueError(f"box {boxes[np.argmax(outside)].tolist()} lies entirely outside the image of shape "
                             f"{emb.original_size}")
        return torch.from_numpy(emb.geometry.boxes_to_model(boxes)).to(self.device)

    @staticmethod
    def _check_points(points: np.ndarray, labels: np.ndarray, shape: tuple[int, int]) -> None:
        if len(labels) != len(points):
            raise ValueError(f"{len(points)} points but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("point labels must be 1 (foreground) or 0 (background)")
        outside = ~points_inside(points, shape)
        if outside.any():
            r, c = points[np.argmax(outside)]
            raise ValueError(f"point ({r:.1f}, {c:.1f}) lies outside the image of shape {shape}")
