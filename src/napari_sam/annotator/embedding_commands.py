"""The session's model and embeddings: loading, embedding the plane on screen, prefetching its
neighbours, embedding stores (a part of :class:`~napari_sam.annotator.session.Session`)."""

from __future__ import annotations

from pathlib import Path

from ..engine import resolve_device
from . import tasks
from .executor import Task


class EmbeddingCommands:
    """Mixed into :class:`~napari_sam.annotator.session.Session` (its state and events)."""

    def load_model(self, name_or_path, device: str = "auto") -> bool:
        """Load ``vit_b``/``vit_l``/``vit_h`` (downloaded if needed) or a ``.pth`` file in the
        background; the plane on screen is embedded when it is ready."""
        try:
            resolve_device(device)
        except ValueError as exc:
            self.message(str(exc), warn=True)
            return False
        self.slots.cancel("load")
        self.slots.cancel("embed")
        self.slots.cancel("prefetch")
        self.model, self.embedding = None, None
        self.drop_candidates()
        self._model_token += 1
        text = str(name_or_path)
        self.model_source = (text, device)
        label = Path(text).name if Path(text).suffix else text
        what = f"loading {label}" if Path(text).is_file() else f"downloading {text}"
        self.message(f"{what}…")
        token = self._model_token
        self.slots.start("load", Task(what, token, tasks.load(text, device)),
                         lambda t, p: self._loaded(t, p, label), self._task_failed, on_progress=self._progress)
        self.events.model.emit()
        return True

    def _loaded(self, task: Task, loaded, label: str) -> None:
        if task.key != self._model_token:
            return
        predictor, decoder = loaded
        self.model = tasks.LoadedModel(predictor, self._model_token, label, decoder=decoder)
        self.message(f"Model {label} ready on {predictor.device}.")
        self.events.model.emit()
        self.start_embedding()

    def volume_for(self, key: tasks.EmbeddingKey):
        return self.embeddings.volume_for(key, self.planes, self.model)

    def start_embedding(self) -> None:
        """Embed the plane on screen in the background unless it is ready; tiled planes are
        ready at once (their tiles are embedded when a prompt needs them)."""
        key = self.current_key()
        if key is None or (self.embedding is not None and self.embedding[0] == key):
            return
        try:
            vol = self.volume_for(key)
        except (ValueError, OSError) as exc:
            self.message(f"Cannot segment '{self.image.name}': {exc}", warn=True)
            return
        self.slots.cancel("embed")
        item = key.plane + (0, 0)
        cached = vol.cached(item)
        if vol.layout is not None or cached is not None:
            self._embedded(key, cached)
            return
        where = self.planes.plane_label(key.plane)
        label = f"embedding {self.image.name}{' ' + where if where else ''}"
        self.message(f"{label}…")
        self.slots.start("embed", Task(label, key, tasks.embed(self.model, vol, item), self.model.encoder_steps()),
                         lambda t, emb: self._embedded(t.key, emb), self._task_failed, on_progress=self._progress)

    def _embedded(self, key, embedding) -> None:
        self._report_store_problems()
        if key != self.current_key():
            return  # computed for another image, data version, plane or model: never applied
        self.embedding = (key, embedding)
        self.message(f"Ready: click on '{self.image.name}' to segment (model {self.model.label})"
                     f"{self.embeddings.note(self.planes)}.")
        self.request_decode()
        self.prefetch()

    def _report_store_problems(self) -> None:
        for text in self.embeddings.problems():
            self.message(text, warn=True)

    def prefetch(self) -> None:
        """Embed the neighbours of the plane on screen in the background (nearest first)."""
        vol, planes, key = self.volume, self.planes, self.current_key()
        axis = planes.through_axis() if planes is not None else None
        radius = self.settings.prefetch_radius
        if vol is None or axis is None or vol.layout is not None or radius < 1 or key is None:
            return
        items = [p + (0, 0) for p in vol.neighbours(key.plane, axis, radius) if vol.cached(p + (0, 0)) is None]
        if items:
            self.slots.start("prefetch", Task("prefetching planes", key, tasks.prefetch(vol, items, self.urgent),
                                              len(items)),
                             lambda t, n: self._report_store_problems(), lambda t, e: self._report_store_problems())

    def cancel_prefetch(self) -> None:
        self.slots.cancel("prefetch")

    def open_store(self, path) -> bool:
        """Use the embedding store at ``path`` (made by ``napari-sam embed``) for the image; it
        is checked against the pixels and model when first used."""
        if self.image is None:
            self.message("Choose the image first, then open its embedding store.", warn=True)
            return False
        try:
            text = self.embeddings.open_store(self.image, path)
        except ValueError as exc:
            self.message(str(exc), warn=True)
            return False
        self.message(text)
        self.embedding = None
        self.start_embedding()
        return True
