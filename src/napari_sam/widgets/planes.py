"""The nD side of the widget: the plane on screen, on-demand embeddings, prefetch, propagation.

An image layer is ``(*lead, H, W)`` (``(*lead, H, W, C)`` when RGB). The *plane* is the
leading index the viewer shows (``()`` for 2D images), without the channel axis when one is
chosen (see :mod:`.axes`). Embeddings live in one :class:`~napari_sam.engine.VolumeEmbeddings`
per (layer, data version, model): computed for the plane on screen, prefetched for its
neighbours along the *through* axis while idle, kept in a bounded LRU cache, and read from /
written to an on-disk store when one is opened for the image (its contrast limits are then
adopted). A store that does not fit is reported once and forgotten for the image (the plane is
embedded without it); one that cannot be written is still read (new embeddings stay in
memory), with a warning. Large planes are tiled: tiles are embedded when a prompt needs them.
"""

from __future__ import annotations

from pathlib import Path
from weakref import WeakKeyDictionary

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QFileDialog

from ..engine import EmbeddingCache, EmbeddingStore, PropagationStep, VolumeEmbeddings, propagate
from .axes import Axes, lead_shape
from .jobs import Task, TaskRunner

PREFETCH_RADIUS = 2
CACHE_MIB = 512


class _Relay(QObject):
    store_problem = Signal(object, object, object, bool)  # layer, store path, exception, refused; to the GUI thread


class Planes:
    """Owned by a :class:`SamWidget` ``w``."""

    def __init__(self, w) -> None:
        self.w = w
        self.volume: VolumeEmbeddings | None = None
        self._volume_id: tuple | None = None
        self.stores: WeakKeyDictionary = WeakKeyDictionary()  # image layer -> embedding store path
        self.prefetch_radius = PREFETCH_RADIUS
        self.propagation = {"min_score": 0.5, "min_overlap": 0.1, "min_area": 10}  # see engine.propagate
        self.cache_mib = CACHE_MIB
        self.prefetcher = TaskRunner(lambda *a: None)
        self.propagator = TaskRunner(w._progress)
        self._shown: tuple[int, ...] | None = None
        self.axes = Axes(w)
        self._relay = _Relay()
        self._relay.store_problem.connect(self._store_problem)
        w.ui.open_store.clicked.connect(self._open_store_clicked)

    @property
    def busy(self) -> bool:
        return self.prefetcher.busy or self.propagator.busy

    def cancel(self) -> None:
        self.prefetcher.cancel()
        self.propagator.cancel()

    # --- the plane on screen ---------------------------------------------------------
    def current(self) -> tuple[int, ...]:
        """Leading index of the image plane the viewer shows (``()`` for 2D images)."""
        image = self.w.image
        lead = lead_shape(image) if image is not None else ()
        if not lead:
            return ()
        point = np.asarray(self.w.viewer.dims.point, float)
        data = np.asarray(image.world_to_data(point[-image.ndim:]), float)
        idx = np.clip(np.round(data[: len(lead)]).astype(int), 0, np.array(lead) - 1)
        return self.axes.plane_of(tuple(int(i) for i in idx))

    def dims_seen(self, reset: bool = True) -> None:
        """Remember the plane on screen (a new image starts there, with default axis choices)."""
        if reset:
            self.axes.reset()
        self._shown = self.current()

    def dims_changed(self, event=None) -> None:
        """The slider moved: the current object belongs to the plane it was made on."""
        plane = self.current() if self.w.image is not None else None
        if plane == self._shown:
            return
        self._shown = plane
        self.prefetcher.cancel()
        self.w.annotation.reset_object(clear_prompts=True)
        self.w.embedding = None
        self.w.start_embedding()

    def axis(self) -> int | None:
        """The plane axis walked by prefetch and propagation (see :meth:`Axes.through_axis`)."""
        return self.axes.through_axis() if self.w.image is not None else None

    def labels_at(self, plane: tuple[int, ...]) -> tuple:
        return self.axes.labels_at(plane)

    # --- embedding stores ------------------------------------------------------------
    @property
    def store_path(self):
        """The embedding store opened for the chosen image, if any."""
        return self.stores.get(self.w.image) if self.w.image is not None else None

    def open_store(self, path) -> bool:
        """Use the embedding store at ``path`` (made by ``napari-sam embed``) for the chosen
        image; False (and a message) if there is no image or no readable store there. Whether
        it fits the pixels and model is checked when it is first used (it hashes every pixel)."""
        w = self.w
        if w.links.pending:  # an image was just added (scripts): adopt it now
            w._refresh_choices()
        if w.image is None:
            w.message("Choose the image first, then open its embedding store.", warn=True)
            return False
        try:
            info = EmbeddingStore(path, mode="r").info
        except Exception as exc:  # noqa: BLE001 (any folder can be picked: say why it is not a store)
            w.message(f"Cannot use {path} as an embedding store: {exc}", warn=True)
            return False
        self.stores[w.image] = Path(path)
        self._volume_id, self.volume = None, None
        norm = info.normalisation
        limits = "" if norm is None or norm.rgb else _limits_text(norm.contrast_limits)
        w.message(f"Embedding store '{Path(path).name}' (model {info.model}{', ' + limits if limits else ''}) "
                  f"opened for '{w.image.name}'; it is checked against the image when first used.")
        return True

    def _open_store_clicked(self, *_) -> None:
        path = QFileDialog.getExistingDirectory(self.w, "Open embedding store (a .zarr folder made by napari-sam embed)")
        if path:
            self.w.open_embedding_store(path)

    def _store_problem(self, layer, path, exc: Exception, refused: bool) -> None:
        """A volume refused (or could not write to) the store at ``path`` (reported once per volume)."""
        name, why = Path(path).name, _first_line(exc)
        if not refused:
            self.w.message(f"Cannot write to embedding store '{name}' ({why}): it is still read, and new "
                           "embeddings are kept in memory only.", warn=True)
            return
        if self.stores.get(layer) == Path(path):
            del self.stores[layer]  # refused: not checked again for every new volume (model, channel)
        self.w.message(f"Embedding store '{name}' not used for '{layer.name}': {why}", warn=True)

    def note(self) -> str:
        """How the image is embedded, for the status line ('' for a plain image)."""
        vol, parts = self.volume, []
        if vol is None:
            return ""
        if vol.layout is not None:
            parts.append("large image: tiles are embedded where you click")
        if self.axes.describe():
            parts.append(f"SAM sees {self.axes.describe()}")
        if vol.store_refused is not None:
            parts.append(f"embedding store not used: {_first_line(vol.store_refused)}")
        if vol.store is not None:
            read_only = " (not writable: new embeddings kept in memory)" if vol.store_write_error else ""
            parts.append(f"embeddings from '{vol.store.path.name}'{read_only}")
            if not vol.rgb:
                source = " (the store's)" if vol.adopted_limits else ""
                parts.append(_limits_text(vol.contrast_limits) + source)
        return f" ({'; '.join(parts)})" if parts else ""

    # --- embeddings ------------------------------------------------------------------
    def volume_for(self, key) -> VolumeEmbeddings:
        """The image's :class:`VolumeEmbeddings` for ``key`` (its layer, version and model)."""
        vid = (key.layer_id, key.data_version, key.model_token)
        if self._volume_id != vid or self.volume is None:
            data, rgb, limits = self.axes.source(self.w.image)
            self.volume = VolumeEmbeddings(data, self.w.model.predictor, rgb=rgb, contrast_limits=limits,
                                           cache=EmbeddingCache(self.cache_mib))
            self._volume_id = vid
            vol, layer, path, relay = self.volume, self.w.image, self.store_path, self._relay
            if path is not None:
                vol.on_store_problem = lambda exc: relay.store_problem.emit(layer, path, exc, exc is vol.store_refused)
                vol.use_store(path)
        return self.volume

    def item(self, plane: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(plane) + (0, 0)

    def prefetch(self) -> None:
        """Embed the neighbours of the plane on screen in the background (nearest first)."""
        vol, axis, key = self.volume, self.axis(), self.w.current_key()
        if vol is None or axis is None or vol.layout is not None or self.prefetch_radius < 1 or key is None:
            return
        items = [self.item(p) for p in vol.neighbours(key.plane, axis, self.prefetch_radius)
                 if vol.cached(self.item(p)) is None]
        if items:
            from . import work

            self.prefetcher.start("prefetching planes", key, work.prefetch(vol, items), len(items),
                                  lambda task, n: None, lambda task, exc: None)

    # --- propagation -----------------------------------------------------------------
    def propagate(self) -> bool:
        """Segment the current object on the following and preceding planes (background)."""
        w, ann = self.w, self.w.annotation
        cand, axis, vol, key = ann.object.chosen_candidate, self.axis(), self.volume, w.current_key()
        if cand is None or cand.ious:
            w.message("Propagate needs one object: place prompts and wait for its mask first.", warn=True)
            return False
        if axis is None or vol is None or key is None:
            w.message("Propagate needs a stack or time series (an image with more than one plane).", warn=True)
            return False
        if vol.layout is not None:
            w.message("Propagation works on untiled planes (planes up to 2048 px).", warn=True)
            return False
        plane, n = key.plane, vol.lead_shape[axis]
        self.prefetcher.cancel()
        fn = _propagation_task(vol, w.model, plane, axis, cand.mask > 0, cand.logits, self.propagation)
        self.propagator.start("propagating", (key, ann.generation), fn, n - 1,
                              self._propagated, w._task_failed)
        w.message("propagating…")
        w._busy_changed()
        return True

    def _propagated(self, task: Task, result) -> None:
        key, generation = task.key
        ann = self.w.annotation
        if key != self.w.current_key() or generation != ann.generation:
            return  # the object, plane, image or model changed meanwhile
        planes, stops = result
        ann.show_propagated({self.labels_at(p): mask for p, mask in planes.items()})
        why = "; ".join(f"stopped at {i} ({reason})" for i, reason in stops) or "reached both ends"
        self.w.message(f"Propagated through {len(planes)} planes ({why}). C commits them as one object.")


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:400]


def _limits_text(limits) -> str:
    return "uint8 values as they are" if limits is None else f"contrast limits {limits[0]:g}-{limits[1]:g}"


def _propagation_task(vol: VolumeEmbeddings, model, plane, axis, mask, logits, options):
    """Task function: ``({plane: mask}, [(index, reason), ...])`` both ways from ``plane``."""
    def run(report, cancelled):
        out = {tuple(plane): mask}
        stops = []
        n = vol.lead_shape[axis]

        def plane_at(i):
            return plane[:axis] + (i,) + plane[axis + 1:]

        for stop in (n, -1):
            steps = propagate(model.predictor, lambda i: vol.embedding(plane_at(i) + (0, 0), cancel=cancelled),
                              plane[axis], stop, mask, None if logits is None else logits[None], cancel=cancelled,
                              **options)
            for step in steps:
                if isinstance(step, PropagationStep):
                    out[plane_at(step.index)] = step.mask
                    report(len(out) - 1, n - 1)
                else:
                    stops.append((step.index, step.reason))
        return out, stops

    return run

