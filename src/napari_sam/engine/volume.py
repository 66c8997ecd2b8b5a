"""Embeddings of nD images (stacks, time series, large planes), computed on demand.

An image is ``(*lead, H, W)`` or, when ``rgb``, ``(*lead, H, W, 3|4)`` (alpha dropped).
``lead`` indexes planes (z, t, ...). Each plane is embedded whole, or by tiles with a halo
when it is large (see :mod:`.tiling`). An *item* is ``(*lead_index, tile_row, tile_col)``.
Embeddings come from the in-memory LRU cache, else the on-disk store, else are computed
(and then written to both). Only the pixels of the needed window are read, so dask- or
zarr-backed images are never loaded whole.

Store problems never stop the work: a store given to :meth:`VolumeEmbeddings.use_store` that
does not fit is refused and the volume goes on without it; a store that cannot be written
(e.g. a shared one in a read-only folder) is still read, and new embeddings stay in memory.
Either is reported once, to :attr:`VolumeEmbeddings.on_store_problem` (else as a
``RuntimeWarning``), and recorded in :attr:`~VolumeEmbeddings.store_refused` /
:attr:`~VolumeEmbeddings.store_write_error`. A damaged entry of a store is a missing entry: it
is computed again (and rewritten when the store can be written), with one
:class:`~napari_sam.engine.store.StoreDamageWarning` naming the store and the plane.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from . import checks, store_files
from .cache import EmbeddingCache
from .fingerprint import model_fingerprint
from .predictor import Embedding, Prediction, Predictor
from .preprocess import estimate_limits
from .store import EmbeddingStore, Normalisation, StoreInfo, image_signature, store_layout
from .tiling import TileLayout, choose_layout, prompt_extent


@dataclass(frozen=True)
class PlanePrediction:
    """A prediction on one plane: masks cover ``window`` ``(r0, c0, r1, c1)`` of the plane."""

    prediction: Prediction
    window: tuple[int, int, int, int]
    tile: tuple[int, int]

    @property
    def offset(self) -> tuple[int, int]:
        return self.window[0], self.window[1]


class VolumeEmbeddings:
    """On-demand embeddings of an nD image for one predictor (see module docstring)."""

    def __init__(self, image, predictor: Predictor, *, rgb: bool = False,
                 contrast_limits: tuple[float, float] | None = None, tile: int | None = None,
                 halo: int | None = None, cache: EmbeddingCache | None = None) -> None:
        checks.pixel_dtype(image.dtype)
        contrast_limits = checks.contrast_limits(contrast_limits)
        spatial = 3 if rgb else 2
        if image.ndim < spatial:
            raise ValueError(f"image of shape {image.shape} has fewer than {spatial} dimensions")
        if rgb and image.shape[-1] not in (3, 4):
            raise ValueError(f"an RGB image needs 3 or 4 channels last, got shape {image.shape}")
        self.image = image
        self.predictor = predictor
        self.rgb = rgb
        self.lead_shape: tuple[int, ...] = tuple(image.shape[: image.ndim - spatial])
        self.plane_shape: tuple[int, int] = tuple(image.shape[image.ndim - spatial: image.ndim - spatial + 2])
        self.contrast_limits = contrast_limits if contrast_limits is not None else estimate_limits(image, rgb)
        self.layout: TileLayout | None = choose_layout(self.plane_shape, tile, halo)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.store: EmbeddingStore | None = None
        self.adopted_limits = False  # True once contrast limits were taken from an attached store
        self.store_refused: Exception | None = None  # why the store given to use_store is not used
        self.store_write_error: OSError | None = None  # why the store is no longer written to
        self.on_store_problem: Callable[[Exception], None] | None = None  # called once per problem, any thread
        self._store_to_open = None
        self._store_lock = threading.RLock()  # held while a store is attached (a pixel hash)
        self._limits_serial = 0  # bumped when the contrast limits change (cached embeddings dropped)

    # --- items -----------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        return self.layout.grid if self.layout else (1, 1)

    @property
    def index_shape(self) -> tuple[int, ...]:
        return self.lead_shape + self.grid

    def items(self) -> Iterator[tuple[int, ...]]:
        return (tuple(int(i) for i in idx) for idx in np.ndindex(*self.index_shape))

    def window(self, tile: tuple[int, int]) -> tuple[int, int, int, int]:
        if self.layout is None:
            return 0, 0, *self.plane_shape
        return self.layout.window(tuple(tile))

    def pixels(self, lead: tuple[int, ...], tile: tuple[int, int] = (0, 0)) -> np.ndarray:
        """The window's pixels ``(h, w)`` or ``(h, w, 3)`` of plane ``lead``."""
        r0, c0, r1, c1 = self.window(tile)
        data = np.asarray(self.image[tuple(lead) + (slice(r0, r1), slice(c0, c1))])
        return data[..., :3] if self.rgb else data

    # --- embeddings ------------------------------------------------------------------
    def store_info(self, contrast_limits=...) -> StoreInfo:
        """What a matching on-disk store must hold (hashes all pixels: run in a worker);
        ``contrast_limits`` replaces this volume's for the signature."""
        limits = self.contrast_limits if contrast_limits is ... else contrast_limits
        return StoreInfo(
            signature=image_signature(self.image, self.rgb, limits),
            model=self.predictor.model_name,
            model_fingerprint=getattr(self.predictor, "fingerprint", None) or model_fingerprint(self.predictor.model),
            index_shape=self.index_shape, plane_shape=self.plane_shape,
            tile=self.layout.tile if self.layout else None, halo=self.layout.halo if self.layout else None,
            normalisation=Normalisation(self.rgb, None if limits is None else tuple(map(float, limits))))

    def attach_store(self, path, create: bool = True, adopt: bool = False, overwrite: bool = False) -> EmbeddingStore:
        """Use the store at ``path`` (created if missing and ``create``); a store made for
        other pixels, normalisation, model or layout, or of an unknown format, raises
        ``StoreMismatch``. ``adopt``: if the store records other contrast limits than this
        volume's (e.g. ``napari-sam embed`` defaults vs a layer's display limits), use the
        store's when the pixels match with them: its embeddings were computed with them, so
        decoding on them is right (sets :attr:`adopted_limits`); embeddings cached with the
        old limits are dropped. :meth:`embedding` calls from other threads wait meanwhile.

        Nothing else is ever replaced: a path holding anything but a store (a folder of files,
        a file) raises :class:`~napari_sam.engine.store_files.StoreExists` untouched;
        ``overwrite=True`` (with ``create``) replaces a store that is there (its own entries
        only: a store folder that also holds other files is refused)."""
        with self._store_lock:
            kind = store_files.path_kind(path) if create else None
            if create and (overwrite or kind in ("missing", "empty", "interrupted")):
                self.store = EmbeddingStore.create(path, self.store_info(), overwrite=overwrite,
                                                   **store_layout(self.predictor.model))
                return self.store
            if kind == "foreign":
                store_files.check_creatable(path)  # raises, saying what is there
            store = EmbeddingStore(path)
            norm = store.info.normalisation
            own = None if self.contrast_limits is None else tuple(map(float, self.contrast_limits))
            if adopt and not self.rgb and norm is not None and not norm.rgb and norm.contrast_limits != own:
                store.check(self.store_info(norm.contrast_limits))
                self.contrast_limits, self.adopted_limits = norm.contrast_limits, True
                self._limits_serial += 1
                self.cache.clear()  # computed with the old limits
            else:
                store.check(self.store_info())
            self.store = store
            return store

    def use_store(self, path) -> None:
        """Open the existing store at ``path`` on the first :meth:`embedding` call, adopting
        its contrast limits (see :meth:`attach_store`). Checking it hashes every pixel, so let
        that happen in a worker thread; other threads' calls wait for it. If it does not fit
        (or cannot be opened), it is reported once (see the module docstring) and the volume
        goes on without a store, with its own contrast limits."""
        self._store_to_open = path

    def _open_pending_store(self) -> None:
        with self._store_lock:  # one thread opens it; others wait and then use it (or not)
            path = self._store_to_open
            if path is None:  # attached or refused meanwhile
                return
            try:
                self.attach_store(path, create=False, adopt=True)
            except Exception as exc:  # noqa: BLE001 (any reason: go on without the store)
                self.store_refused = exc
                self._report(exc, f"embedding store {path} not used: {exc}")
            finally:
                self._store_to_open = None

    def _report(self, problem: Exception, text: str) -> None:
        if self.on_store_problem is not None:
            self.on_store_problem(problem)
        else:
            warnings.warn(text, RuntimeWarning, stacklevel=4)

    def _write(self, store: EmbeddingStore, item: tuple[int, ...], emb: Embedding) -> None:
        """Best effort: the first failure (e.g. a read-only store) is reported and writing stops."""
        if self.store_write_error is not None:
            return
        try:
            store.put(item, emb)
        except OSError as exc:
            with self._store_lock:
                first = self.store_write_error is None
                self.store_write_error = exc
            if first:
                self._report(exc, f"cannot write to the embedding store {store.path} ({exc}): "
                                  "new embeddings are kept in memory only")

    def cached(self, item: tuple[int, ...]) -> Embedding | None:
        """The embedding of ``item`` if it is in memory or on disk (never computes)."""
        item = tuple(int(i) for i in item)
        emb = self.cache.get(item)
        if emb is None and self.store is not None:
            emb = self.store.get(item)
            if emb is not None:
                self.cache.put(item, emb)
        return emb

    def embedding(self, item: tuple[int, ...], cancel: Callable[[], bool] | None = None) -> Embedding:
        """Embedding of ``item`` (``lead + tile``): from memory, disk, or computed now."""
        item = tuple(int(i) for i in item)
        if len(item) != len(self.index_shape) or any(not 0 <= i < n for i, n in zip(item, self.index_shape)):
            raise IndexError(f"item {item} outside the index shape {self.index_shape}")
        while True:
            if self._store_to_open is not None:
                self._open_pending_store()
            with self._store_lock:  # a consistent store and limits (not while one is attached)
                store, limits, serial = self.store, self.contrast_limits, self._limits_serial
            emb = self.cached(item)
            if emb is not None:
                return emb
            lead, tile = item[:-2], item[-2:]
            emb = self.predictor.compute_embedding(self.pixels(lead, tile), limits, cancel=cancel)
            with self._store_lock:
                if serial != self._limits_serial:
                    continue  # a store's limits were adopted meanwhile: this one is stale
                self.cache.put(item, emb)
            if store is not None:
                self._write(store, item, emb)
            return emb

    def missing(self, verify: bool = False) -> list[tuple[int, ...]]:
        """Items neither in memory nor on disk; ``verify`` reads every stored entry and counts
        the damaged ones as missing (so :meth:`precompute` repairs them)."""
        done = np.zeros(self.index_shape, bool)
        if self.store is not None:
            done[...] = True
            for item in self.store.missing(verify=verify):
                done[item] = False
        return [item for item in self.items() if not done[item] and item not in self.cache]

    def precompute(self, items=None, progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> int:
        """Embed ``items`` (default: all missing ones); returns how many were computed."""
        todo = self.missing() if items is None else [tuple(i) for i in items]
        for n, item in enumerate(todo):
            self.embedding(item, cancel=cancel)
            if progress is not None:
                progress(n + 1, len(todo))
        return len(todo)

    def neighbours(self, lead: tuple[int, ...], axis: int, radius: int) -> list[tuple[int, ...]]:
        """Plane indices within ``radius`` of ``lead`` along lead ``axis``, nearest first."""
        out = []
        for d in range(1, radius + 1):
            for sign in (1, -1):
                i = lead[axis] + sign * d
                if 0 <= i < self.lead_shape[axis]:
                    out.append(lead[:axis] + (i,) + lead[axis + 1:])
        return out

    # --- decoding --------------------------------------------------------------------
    def tile_for(self, points: np.ndarray | None, box: np.ndarray | None) -> tuple[int, int]:
        if self.layout is None:
            return 0, 0
        return self.layout.best_tile(prompt_extent(points, box))

    def _window_for(self, points, box, tile) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """The tile to decode on (``tile`` or the best one) and its window; raises when the
        prompts do not fit in it."""
        tile = tuple(tile) if tile is not None else self.tile_for(points, box)
        r0, c0, r1, c1 = window = self.window(tile)
        if self.layout is not None:
            e0, f0, e1, f1 = prompt_extent(points, box)
            if e0 < r0 - 0.5 or f0 < c0 - 0.5 or e1 > r1 - 0.5 or f1 > c1 - 0.5:
                raise ValueError(f"the prompts span more than one tile window ({self.layout.tile} px + "
                                 f"{self.layout.halo} px halo): use closer prompts or a larger tile")
        return tile, window

    def predict(self, lead: tuple[int, ...], points=None, labels=None, box=None, mask_input=None,
                multimask: bool = True, tile: tuple[int, int] | None = None,
                cancel: Callable[[], bool] | None = None) -> PlanePrediction:
        """Decode prompts given in plane coordinates ``(row, col)`` on the best window."""
        points = None if points is None or not np.size(points) else checks.coordinates(points, "points", 2, "(row, col)")
        box = None if box is None else checks.coordinates(box, "box", 4, "(min_row, min_col, max_row, max_col)")
        if box is not None and len(box) != 1:
            raise ValueError(f"box must be one box of 4 numbers, got {len(box)}: use predict_boxes")
        box = None if box is None else box[0]
        tile, window = self._window_for(points, box, tile)
        emb = self.embedding(tuple(lead) + tile, cancel=cancel)
        shift = np.array(window[:2], float)
        pred = self.predictor.predict(
            points=None if points is None else points - shift, labels=labels,
            box=None if box is None else box - np.tile(shift, 2), mask_input=mask_input,
            multimask=multimask, embedding=emb)
        return PlanePrediction(pred, window, tile)

    def predict_boxes(self, lead: tuple[int, ...], boxes, multimask: bool = False,
                      cancel: Callable[[], bool] | None = None) -> PlanePrediction:
        """One object per box ``(N, 4)`` (plane coordinates), all decoded on one window:
        masks ``(N, K, h, w)``."""
        boxes = checks.coordinates(boxes, "boxes", 4, "(min_row, min_col, max_row, max_col)")
        corners = boxes.reshape(-1, 2)
        tile, window = self._window_for(corners, None, None)
        emb = self.embedding(tuple(lead) + tile, cancel=cancel)
        pred = self.predictor.predict_boxes(boxes - np.tile(window[:2], 2), multimask=multimask, embedding=emb)
        return PlanePrediction(pred, window, tile)
