"""The session's embeddings: one :class:`~napari_sam.engine.VolumeEmbeddings` for the image as
SAM sees it (its version, axes choice) and the loaded model; embedding stores opened per image.

A store opened for an image is checked when first used (it hashes every pixel, in a worker).
One that does not fit is reported once and forgotten for the image (planes are then embedded
without it); one that cannot be written is still read (new embeddings stay in memory), with
one warning. Problems are recorded by the volume in worker threads and collected here, on
the session's thread, after each embedding task (:meth:`Embeddings.problems`).
"""

from __future__ import annotations

from pathlib import Path
from weakref import WeakKeyDictionary

from ..engine import EmbeddingCache, EmbeddingStore, VolumeEmbeddings
from .source import ImageSource, Planes
from .tasks import EmbeddingKey, LoadedModel

CACHE_MIB = 512


def first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:400]


def limits_text(limits) -> str:
    return "uint8 values as they are" if limits is None else f"contrast limits {limits[0]:g}-{limits[1]:g}"


class Embeddings:
    """Volumes and stores of a session (see module docstring)."""

    def __init__(self, cache_mib: int = CACHE_MIB) -> None:
        self.cache_mib = cache_mib
        self.volume: VolumeEmbeddings | None = None
        self._volume_id: tuple | None = None
        self._source: ImageSource | None = None
        self.stores: WeakKeyDictionary = WeakKeyDictionary()  # image source -> store path
        self._reported: WeakKeyDictionary = WeakKeyDictionary()  # volume -> problems already reported

    def drop(self) -> None:
        self.volume, self._volume_id = None, None

    def volume_for(self, key: EmbeddingKey, planes: Planes, model: LoadedModel) -> VolumeEmbeddings:
        """The volume for ``key`` (its image, version and model), made when they change."""
        vid = (key.layer_id, key.data_version, key.model_token)
        if self._volume_id != vid or self.volume is None:
            data, rgb, limits = planes.view()
            vol = VolumeEmbeddings(data, model.predictor, rgb=rgb, contrast_limits=limits,
                                   cache=EmbeddingCache(self.cache_mib))
            self.volume, self._volume_id, self._source = vol, vid, planes.source
            path = self.stores.get(planes.source)
            if path is not None:
                vol.on_store_problem = lambda exc: None  # recorded on the volume; reported by problems()
                vol.use_store(path)
        return self.volume

    def store_path(self, source: ImageSource | None) -> Path | None:
        return self.stores.get(source) if source is not None else None

    def open_store(self, source: ImageSource, path) -> str:
        """Use the store at ``path`` for ``source`` from the next volume on; returns the message.
        Raises ``ValueError`` (with the reason) when ``path`` is no readable store."""
        try:
            info = EmbeddingStore(path, mode="r").info
        except Exception as exc:  # noqa: BLE001 (any folder can be picked: say why it is not a store)
            raise ValueError(f"Cannot use {path} as an embedding store: {exc}") from exc
        self.stores[source] = Path(path)
        self.drop()
        norm = info.normalisation
        limits = "" if norm is None or norm.rgb else limits_text(norm.contrast_limits)
        return (f"Embedding store '{Path(path).name}' (model {info.model}{', ' + limits if limits else ''}) "
                f"opened for '{source.name}'; it is checked against the image when first used.")

    def problems(self) -> list[str]:
        """Messages about store problems of the current volume not reported yet (each once)."""
        vol, out = self.volume, []
        if vol is None:
            return out
        path = vol.store.path if vol.store is not None else self.stores.get(self._source)
        name = Path(path).name if path is not None else "?"
        refused, write_error = vol.store_refused, vol.store_write_error
        reported = self._reported.setdefault(vol, set())
        if refused is not None and "refused" not in reported:
            reported.add("refused")
            if self._source is not None and self.stores.get(self._source) is not None:
                del self.stores[self._source]  # not checked again for every new volume (model, channel)
            out.append(f"Embedding store '{name}' not used for '{self._source.name}': {first_line(refused)}")
        if write_error is not None and "write" not in reported:
            reported.add("write")
            out.append(f"Cannot write to embedding store '{name}' ({first_line(write_error)}): it is still "
                       "read, and new embeddings are kept in memory only.")
        return out

    def note(self, planes: Planes | None) -> str:
        """How the image is embedded, for the status line ('' for a plain image)."""
        vol, parts = self.volume, []
        if vol is None:
            return ""
        if vol.layout is not None:
            parts.append("large image: tiles are embedded where you click")
        seen = planes.describe() if planes is not None else ""
        if seen:
            parts.append(f"SAM sees {seen}")
        if vol.store_refused is not None:
            parts.append(f"embedding store not used: {first_line(vol.store_refused)}")
        if vol.store is not None:
            read_only = " (not writable: new embeddings kept in memory)" if vol.store_write_error else ""
            parts.append(f"embeddings from '{vol.store.path.name}'{read_only}")
            if not vol.rgb:
                source = " (the store's)" if vol.adopted_limits else ""
                parts.append(limits_text(vol.contrast_limits) + source)
        return f" ({'; '.join(parts)})" if parts else ""
