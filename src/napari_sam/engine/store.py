"""On-disk zarr store of image embeddings (per slice and/or per tile), resumable and checked.

Layout of a store (a zarr v3 group):

- ``features``: float array ``(*index_shape, 256, g, g)``, one chunk per item (fill NaN);
- ``high_res_0``, ``high_res_1`` (SAM 2 stores only): its high-resolution features
  ``(*index_shape, 32, 4g, 4g)`` and ``(*index_shape, 64, 2g, 2g)``, likewise;
- ``sizes``: int32 ``(*index_shape, 4)``: original ``(H, W)`` and resized input ``(h, w)``;
- ``done``: bool ``(*index_shape)``, set only after an item's features are written, so an
  interrupted precompute resumes where it stopped;
- attribute ``napari_sam``: ``format`` (of this layout, :data:`FORMAT`), ``signature``
  (hash of pixels and normalisation), ``normalisation`` (``rgb`` and the ``contrast_limits``
  the embeddings were computed with, so a reader can adopt them), ``model`` and
  ``model_fingerprint`` (:mod:`.fingerprint`: every weight of the image encoder), ``layout``
  (``index_shape``, ``tile``, ``halo``, ``plane_shape``), ``version`` of the package that made it.

``index_shape`` is the image's leading (non-spatial) shape followed by the tile grid
``(ny, nx)`` (``(1, 1)`` when the plane is not tiled).

Integrity: every chunk is zstd-compressed and carries a crc32c checksum. **A damaged entry is
a missing entry**: an entry whose chunk fails its checksum, cannot be decompressed, was never
written (a deleted chunk reads as NaN features or zero sizes, never as zero features) or holds
non-finite values or sizes that do not fit its window is not returned by :meth:`EmbeddingStore.get`
(one :class:`StoreDamageWarning` per entry names the store and the plane), so the reader
computes it again and rewrites it; :meth:`EmbeddingStore.verify` reads every entry (``napari-sam
embed`` repairs exactly those). Damaged attributes or array metadata raise
:class:`StoreMismatch` saying what to do, never a ``KeyError``.

Compatibility: a store whose ``format`` is not :data:`FORMAT` is refused on opening, with a
message: a newer one (update napari-sam), or an older one (format 1: its fingerprint covered
only four tensors and it had no checksums: compute it again, ``--overwrite`` replaces it). The
package ``version`` is recorded for diagnosis only: another version with the same format reads
the store, because everything the embeddings depend on (pixels, normalisation, model weights,
tile layout) is checked itself.

Creating a store never touches anything else (see :mod:`.store_files`).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import store_files
from .fingerprint import SCHEME, model_fingerprint  # noqa: F401  (model_fingerprint: public here too)
from .predictor import Embedding
from .store_files import StoreExists  # noqa: F401  (public here too)
from .tiling import TileLayout

FORMAT = 2  # bump when the layout changes in a way older readers would misread (1: no checksums)


class StoreMismatch(ValueError):
    """The store was made for other pixels, normalisation, model or layout (or in a format
    this version cannot read, or its metadata is damaged)."""


class StoreDamageWarning(RuntimeWarning):
    """An entry of a store is damaged; it is treated as missing (computed again)."""


def _redo(path) -> str:
    return f"compute it again (napari-sam embed IMAGE --out {path} --overwrite replaces it)"


@dataclass(frozen=True)
class Normalisation:
    """How pixels were mapped to the model's uint8 RGB input: ``rgb`` (colour kept as is) or
    gray scaled from ``contrast_limits`` (None: uint8 values used as they are)."""

    rgb: bool
    contrast_limits: tuple[float, float] | None


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds embeddings of (see the module docstring). ``normalisation`` is None
    when unknown (stores made before it was recorded); ``format``/``version``: see there."""

    signature: str
    model: str
    model_fingerprint: str
    index_shape: tuple[int, ...]
    plane_shape: tuple[int, int]
    tile: int | None
    halo: int | None
    normalisation: Normalisation | None = None
    format: int = FORMAT
    version: str | None = None

    def as_attrs(self) -> dict:
        from .. import __version__

        norm = self.normalisation
        return {"format": FORMAT, "signature": self.signature, "model": self.model,
                "model_fingerprint": self.model_fingerprint, "version": __version__,
                "normalisation": None if norm is None else {
                    "rgb": norm.rgb,
                    "contrast_limits": None if norm.contrast_limits is None else list(norm.contrast_limits)},
                "layout": {"index_shape": list(self.index_shape), "plane_shape": list(self.plane_shape),
                           "tile": self.tile, "halo": self.halo}}

    @classmethod
    def from_attrs(cls, attrs: dict, where: object = "the store") -> StoreInfo:
        """Parse the ``napari_sam`` attribute; raise :class:`StoreMismatch` for another format
        or damaged metadata."""
        if not isinstance(attrs, dict):
            raise StoreMismatch(f"{where} has damaged metadata (attribute napari_sam is not a mapping): {_redo(where)}")
        fmt, version = attrs.get("format"), attrs.get("version")
        if fmt != FORMAT:
            from .. import __version__

            if isinstance(fmt, int) and fmt < FORMAT:
                raise StoreMismatch(f"{where} was made by an earlier napari-sam ({version}, store format {fmt}) whose "
                                    "model fingerprint covered only a few weights and whose entries had no "
                                    f"checksums, so it cannot be trusted: {_redo(where)}")
            raise StoreMismatch(f"{where} is an embedding store of format {fmt!r} (made by napari-sam {version}); "
                                f"napari-sam {__version__} reads format {FORMAT} only: update napari-sam or "
                                "compute a new store")
        try:
            lay, norm = attrs["layout"], attrs.get("normalisation")
            if norm is not None:
                limits = norm.get("contrast_limits")
                norm = Normalisation(bool(norm["rgb"]), None if limits is None else tuple(float(v) for v in limits))
            info = cls(str(attrs["signature"]), str(attrs["model"]), str(attrs["model_fingerprint"]),
                       tuple(int(n) for n in lay["index_shape"]), tuple(int(n) for n in lay["plane_shape"]),
                       lay["tile"], lay["halo"], norm, fmt, version)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreMismatch(f"{where} has damaged metadata (missing or invalid {exc}): {_redo(where)}") from None
        if len(info.plane_shape) != 2 or (info.tile is None) != (info.halo is None):
            raise StoreMismatch(f"{where} has damaged metadata (layout {lay}): {_redo(where)}")
        return info


def image_signature(image, rgb: bool, contrast_limits: tuple[float, float] | None) -> str:
    """Hash of shape, dtype, normalisation and all pixels (read one leading index at a time)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr((tuple(image.shape), str(image.dtype), bool(rgb),
                        None if contrast_limits is None else tuple(map(float, contrast_limits)))).encode())
    lead = image.shape[: image.ndim - (3 if rgb else 2)]
    for idx in np.ndindex(*lead):
        digest.update(np.ascontiguousarray(np.asarray(image[idx])).tobytes())
    return digest.hexdigest()


class EmbeddingStore:
    """Open (``mode="r"``/``"a"``) or :meth:`create` an embedding store at ``path``."""

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise FileNotFoundError(f"no embedding store at {self.path}")
        try:
            self.group = zarr.open_group(str(self.path), mode=mode)
            attrs = dict(self.group.attrs).get("napari_sam")
        except Exception as exc:  # noqa: BLE001 (zarr raises many kinds for a garbled zarr.json)
            raise StoreMismatch(f"{self.path} has damaged metadata ({exc}): {_redo(self.path)}") from None
        if not attrs:
            if store_files.path_kind(self.path) == "interrupted":
                raise StoreMismatch(f"{self.path}: the creation of this embedding store was interrupted (it holds "
                                    "no embeddings): run napari-sam embed again to create it")
            raise StoreMismatch(f"{self.path} is a zarr store but not a napari-sam embedding store")
        self.info = StoreInfo.from_attrs(attrs, self.path)
        self._arrays = self._open_arrays()
        self._reported: set[tuple[int, ...]] = set()  # damaged entries already warned about

    def _open_arrays(self) -> dict:
        shape = self.info.index_shape
        try:
            names = ["features", "sizes", "done"]
            while f"high_res_{len(names) - 3}" in self.group:
                names.append(f"high_res_{len(names) - 3}")
            arrays = {name: self.group[name] for name in names}
            ok = (tuple(arrays["done"].shape) == shape and tuple(arrays["sizes"].shape) == (*shape, 4)
                  and tuple(arrays["features"].shape[: len(shape) + 1]) == (*shape, 256)
                  and all(tuple(arrays[n].shape[: len(shape)]) == shape for n in names[3:]))
        except Exception as exc:  # noqa: BLE001 (a missing or garbled array)
            raise StoreMismatch(f"{self.path} is damaged (array {exc} cannot be read): {_redo(self.path)}") from None
        if not ok:
            raise StoreMismatch(f"{self.path} is damaged (its arrays do not have the shapes its metadata "
                                f"records): {_redo(self.path)}")
        return arrays

    @classmethod
    def create(cls, path: str | Path, info: StoreInfo, grid: int = 64, dtype: str = "float32",
               overwrite: bool = False, high_res: tuple[tuple[int, int], ...] = ()) -> EmbeddingStore:
        """Create a store at ``path``: a path that does not exist, an empty folder, a store whose
        creation was interrupted, or (only with ``overwrite``) an existing store, whose entries
        are then removed. Anything else raises :class:`StoreExists` and is left untouched. The
        store is built aside and renamed into place when complete (see :mod:`.store_files`).
        ``grid`` and ``high_res`` (``(channels, size)`` per SAM 2 high-resolution level): as
        :func:`store_layout` gives them for a model."""
        import zarr
        from zarr.codecs import Crc32cCodec, ZstdCodec

        path = Path(path)
        kind = store_files.check_creatable(path, overwrite)
        store_files.remove_leftovers(path)
        built = store_files.building_folder(path)
        try:
            group = zarr.create_group(str(built), attributes={"napari_sam": info.as_attrs()})
            n, checked = len(info.index_shape), (ZstdCodec(), Crc32cCodec())
            group.create_array("features", shape=(*info.index_shape, 256, grid, grid),
                               chunks=(1,) * n + (256, grid, grid), dtype=dtype, fill_value=float("nan"),
                               compressors=checked)
            group.create_array("sizes", shape=(*info.index_shape, 4), chunks=(1,) * n + (4,), dtype="int32",
                               fill_value=0, compressors=checked)
            group.create_array("done", shape=info.index_shape, chunks=(1,) * n, dtype="bool", fill_value=False,
                               compressors=checked)
            for i, (chans, size) in enumerate(high_res):
                group.create_array(f"high_res_{i}", shape=(*info.index_shape, chans, size, size),
                                   chunks=(1,) * n + (chans, size, size), dtype=dtype, fill_value=float("nan"),
                                   compressors=checked)
            if kind in ("store", "damaged", "interrupted"):
                store_files.remove_store_entries(path)
            store_files.move_into_place(built, path)
        except BaseException:
            store_files.remove_leftovers(path)
            raise
        return cls(path)

    def check(self, expected: StoreInfo) -> None:
        """Raise :class:`StoreMismatch` with a clear reason if this store does not fit: model
        and weights, pixels and normalisation (the signature), tile layout. The format was
        checked on opening; the package version is not compared (see the module docstring)."""
        have = self.info
        if have.model != expected.model or have.model_fingerprint != expected.model_fingerprint:
            scheme = have.model_fingerprint.split(":")[0]
            why = f" (made with another fingerprint scheme, {scheme!r})" if scheme != SCHEME else ""
            raise StoreMismatch(f"{self.path} holds embeddings of model {have.model!r} with other weights "
                                f"than the model in use ({expected.model!r}){why}; compute a new store")
        if have.signature != expected.signature:
            raise StoreMismatch(f"{self.path} was computed for other pixels or another normalisation "
                                "(contrast limits, RGB/channel choice); compute a new store")
        if (have.index_shape, have.plane_shape, have.tile, have.halo) != (
                expected.index_shape, expected.plane_shape, expected.tile, expected.halo):
            raise StoreMismatch(f"{self.path} uses another tile layout (tile={have.tile}, halo={have.halo}, "
                                f"items {have.index_shape}); compute a new store or use its layout")

    # --- entries -----------------------------------------------------------------------
    def describe(self, index: tuple[int, ...]) -> str:
        """``plane (3,)``, ``plane (3,) tile (0, 1)`` or ``the plane`` for an item."""
        lead, tile = tuple(index[:-2]), tuple(index[-2:])
        plane = f"plane {lead}" if lead else "the plane"
        return plane if self.info.tile is None else f"{plane} tile {tile}"

    def _damaged(self, index: tuple[int, ...], why: str) -> None:
        if index not in self._reported:
            self._reported.add(index)
            warnings.warn(f"embedding store {self.path}: the entry of {self.describe(index)} is damaged ({why}); "
                          "it is treated as missing and computed again", StoreDamageWarning, stacklevel=4)

    def has(self, index: tuple[int, ...]) -> bool:
        """Whether the entry was completed (an unreadable ``done`` flag counts as not done)."""
        index = tuple(int(i) for i in index)
        try:
            return bool(self._arrays["done"][index])
        except Exception as exc:  # noqa: BLE001 (checksum, decompression, truncated chunk ...)
            self._damaged(index, f"unreadable completion flag: {exc}")
            return False

    def done_mask(self) -> np.ndarray:
        try:
            return np.asarray(self._arrays["done"][...], dtype=bool)
        except Exception:  # noqa: BLE001 (some flag is damaged: read them one by one)
            out = np.zeros(self.info.index_shape, bool)
            for idx in np.ndindex(*self.info.index_shape):
                out[idx] = self.has(idx)
            return out

    def missing(self, verify: bool = False) -> list[tuple[int, ...]]:
        """Items not completed; with ``verify``, also completed ones that are damaged."""
        todo = {tuple(int(i) for i in idx) for idx in np.argwhere(~self.done_mask())}
        if verify:
            todo.update(index for index, _ in self.verify())
        return sorted(todo)

    def verify(self) -> list[tuple[tuple[int, ...], str]]:
        """Read every completed entry: ``(index, reason)`` of the damaged ones (reported here,
        so reading them later warns no more)."""
        damaged = []
        for idx in np.argwhere(self.done_mask()):
            index = tuple(int(i) for i in idx)
            emb, why = self._read(index)
            if emb is None:
                self._reported.add(index)
                damaged.append((index, why))
        return damaged

    def _window(self, index: tuple[int, ...]) -> tuple[int, int]:
        if self.info.tile is None:
            return self.info.plane_shape
        r0, c0, r1, c1 = TileLayout(self.info.plane_shape, self.info.tile, self.info.halo).window(index[-2:])
        return r1 - r0, c1 - c0

    def _read(self, index: tuple[int, ...]) -> tuple[Embedding | None, str]:
        try:
            features = np.asarray(self._arrays["features"][index], dtype=np.float32)
            h, w, ih, iw = (int(v) for v in self._arrays["sizes"][index])
            high = [np.asarray(self._arrays[name][index], dtype=np.float32) for name in self._high_res_names()]
        except Exception as exc:  # noqa: BLE001 (checksum, decompression, truncated chunk ...)
            return None, f"unreadable: {exc}"
        if not (np.isfinite(features).all() and all(np.isfinite(a).all() for a in high)):
            return None, "features never written or not finite"
        if (h, w) != tuple(self._window(index)) or min(ih, iw) < 1:
            return None, f"sizes {(h, w, ih, iw)} do not fit its window"
        return Embedding(torch.from_numpy(features)[None], (h, w), (ih, iw), self.info.model,
                         self.info.model_fingerprint, tuple(torch.from_numpy(a)[None] for a in high) or None), ""

    def _high_res_names(self) -> list[str]:
        return [name for name in self._arrays if name.startswith("high_res_")]

    def get(self, index: tuple[int, ...]) -> Embedding | None:
        """The entry's embedding; None if it is missing or damaged (warned once, see above)."""
        index = tuple(int(i) for i in index)
        if not self.has(index):
            return None
        emb, why = self._read(index)
        if emb is None:
            self._damaged(index, why)
        return emb

    def put(self, index: tuple[int, ...], embedding: Embedding) -> None:
        index = tuple(int(i) for i in index)
        features = embedding.features[0].detach().float().cpu().numpy()
        want = tuple(self._arrays["features"].shape[len(index):])
        if features.shape != want:
            raise ValueError(f"embedding features {features.shape} do not fit this store's {want}")
        names, high = self._high_res_names(), embedding.high_res or ()
        if len(names) != len(high):
            raise ValueError(f"the embedding has {len(high)} high-resolution feature levels, this store holds "
                             f"{len(names)}: it was made for another model family")
        for name, tensor in zip(names, high):
            self._arrays[name][index] = tensor[0].detach().float().cpu().numpy()
        self._arrays["features"][index] = features
        self._arrays["sizes"][index] = np.array([*embedding.original_size, *embedding.input_size], np.int32)
        self._arrays["done"][index] = True  # last: an interrupted write is recomputed
        self._reported.discard(index)


def store_layout(model: torch.nn.Module) -> dict:
    """``grid`` and ``high_res`` of :meth:`EmbeddingStore.create` for ``model``'s embeddings."""
    g = model.prompt_encoder.image_embedding_size[0]
    if getattr(model, "family", "sam") == "sam2":
        return {"grid": g, "high_res": ((model.mask_decoder.conv_s0.out_channels, 4 * g),
                                        (model.mask_decoder.conv_s1.out_channels, 2 * g))}
    return {"grid": g}
