"""The nD side of the widget: the plane on screen, on-demand embeddings, prefetch, propagation.

An image layer is ``(*lead, H, W)`` (``(*lead, H, W, C)`` when RGB). The *plane* is the
leading index the viewer shows (``()`` for 2D images). Embeddings live in one
:class:`~napari_sam.engine.VolumeEmbeddings` per (layer, data version, model): computed
for the plane on screen, prefetched for its neighbours while idle, kept in a bounded LRU
cache, and read from / written to an on-disk store when one is opened. Large planes are
tiled: tiles are embedded when a prompt needs them.
"""

from __future__ import annotations

import numpy as np

from ..engine import EmbeddingCache, PropagationStep, VolumeEmbeddings, propagate
from .jobs import Task, TaskRunner

PREFETCH_RADIUS = 2
CACHE_MIB = 512


def lead_shape(image) -> tuple[int, ...]:
    """Leading (non-spatial) shape of an image layer's data."""
    spatial = 3 if image.rgb else 2
    return tuple(int(s) for s in image.data.shape[: image.data.ndim - spatial])


class Planes:
    """Owned by a :class:`SamWidget` ``w``."""

    def __init__(self, w) -> None:
        self.w = w
        self.volume: VolumeEmbeddings | None = None
        self._volume_id: tuple | None = None
        self.store_path = None  # an on-disk embedding store to use for the image, if any
        self.prefetch_radius = PREFETCH_RADIUS
        self.propagation = {"min_score": 0.5, "min_overlap": 0.1, "min_area": 10}  # see engine.propagate
        self.cache_mib = CACHE_MIB
        self.prefetcher = TaskRunner(lambda *a: None)
        self.propagator = TaskRunner(w._progress)
        self._shown: tuple[int, ...] | None = None

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
        return tuple(int(i) for i in idx)

    def dims_seen(self) -> None:
        """Remember the plane on screen (a new image starts there)."""
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
        """The leading axis walked by prefetch and propagation: the last one longer than 1."""
        lead = lead_shape(self.w.image) if self.w.image is not None else ()
        longer = [i for i, n in enumerate(lead) if n > 1]
        return longer[-1] if longer else None

    def open_store(self, path) -> None:
        """Use the embedding store at ``path`` (made by ``napari-sam embed``) for the image."""
        self.store_path = path
        self._volume_id, self.volume = None, None

    # --- embeddings ------------------------------------------------------------------
    def volume_for(self, key) -> VolumeEmbeddings:
        """The image's :class:`VolumeEmbeddings` for ``key`` (its layer, version and model)."""
        vid = (key.layer_id, key.data_version, key.model_token)
        if self._volume_id != vid or self.volume is None:
            image = self.w.image
            limits = None if image.rgb else tuple(float(v) for v in image.contrast_limits)
            self.volume = VolumeEmbeddings(image.data, self.w.model.predictor, rgb=image.rgb,
                                           contrast_limits=limits, cache=EmbeddingCache(self.cache_mib))
            self._volume_id = vid
            if self.store_path is not None:
                self.volume.use_store(self.store_path)
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
        ann.show_propagated(planes)
        why = "; ".join(f"stopped at {i} ({reason})" for i, reason in stops) or "reached both ends"
        self.w.message(f"Propagated through {len(planes)} planes ({why}). C commits them as one object.")


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

