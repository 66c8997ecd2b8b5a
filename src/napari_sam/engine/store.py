"""On-disk zarr store of image embeddings (per slice and/or per tile), resumable.

Layout of a store (a zarr v3 group):

- ``features``: float array ``(*index_shape, 256, g, g)``, one chunk per item;
- ``sizes``: int32 ``(*index_shape, 4)``: original ``(H, W)`` and resized input ``(h, w)``;
- ``done``: bool ``(*index_shape)``, set only after an item's features are written, so an
  interrupted precompute resumes where it stopped;
- attribute ``napari_sam``: ``signature`` (hash of pixels and normalisation),
  ``model`` and ``model_fingerprint``, ``layout`` (``index_shape``, ``tile``, ``halo``,
  ``plane_shape``), ``version`` of this package.

``index_shape`` is the image's leading (non-spatial) shape followed by the tile grid
``(ny, nx)`` (``(1, 1)`` when the plane is not tiled).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .predictor import Embedding

FORMAT = 1


class StoreMismatch(ValueError):
    """The store was made for other pixels, normalisation, model or layout."""


@dataclass(frozen=True)
class StoreInfo:
    signature: str
    model: str
    model_fingerprint: str
    index_shape: tuple[int, ...]
    plane_shape: tuple[int, int]
    tile: int | None
    halo: int | None

    def as_attrs(self) -> dict:
        from .. import __version__

        return {"format": FORMAT, "signature": self.signature, "model": self.model,
                "model_fingerprint": self.model_fingerprint, "version": __version__,
                "layout": {"index_shape": list(self.index_shape), "plane_shape": list(self.plane_shape),
                           "tile": self.tile, "halo": self.halo}}

    @classmethod
    def from_attrs(cls, attrs: dict) -> "StoreInfo":
        lay = attrs["layout"]
        return cls(attrs["signature"], attrs["model"], attrs["model_fingerprint"], tuple(lay["index_shape"]),
                   tuple(lay["plane_shape"]), lay["tile"], lay["halo"])


def model_fingerprint(model: torch.nn.Module) -> str:
    """Cheap hash that tells models apart: a few characteristic weight tensors."""
    state = model.state_dict()
    digest = hashlib.blake2b(digest_size=16)
    for key in ("image_encoder.patch_embed.proj.weight", "image_encoder.neck.3.weight",
                "mask_decoder.iou_token.weight", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"):
        if key in state:
            digest.update(state[key].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


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
    """Open (``mode="r"``/``"a"``) or create an embedding store at ``path``."""

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise FileNotFoundError(f"no embedding store at {self.path}")
        self.group = zarr.open_group(str(self.path), mode=mode)
        attrs = dict(self.group.attrs).get("napari_sam")
        if not attrs:
            raise StoreMismatch(f"{self.path} is a zarr store but not a napari-sam embedding store")
        self.info = StoreInfo.from_attrs(attrs)

    @classmethod
    def create(cls, path: str | Path, info: StoreInfo, grid: int = 64, dtype: str = "float32") -> "EmbeddingStore":
        import zarr

        n = len(info.index_shape)
        group = zarr.open_group(str(path), mode="w")
        group.create_array("features", shape=(*info.index_shape, 256, grid, grid), chunks=(1,) * n + (256, grid, grid),
                           dtype=dtype, fill_value=0)
        group.create_array("sizes", shape=(*info.index_shape, 4), chunks=(1,) * n + (4,), dtype="int32", fill_value=0)
        group.create_array("done", shape=info.index_shape, chunks=(1,) * n, dtype="bool", fill_value=False)
        group.attrs["napari_sam"] = info.as_attrs()
        return cls(path)

    @classmethod
    def open_or_create(cls, path: str | Path, info: StoreInfo, dtype: str = "float32") -> "EmbeddingStore":
        """Reuse a matching store at ``path`` (raise :class:`StoreMismatch` otherwise) or make one."""
        if Path(path, "zarr.json").exists():
            store = cls(path)
            store.check(info)
            return store
        return cls.create(path, info, dtype=dtype)

    def check(self, expected: StoreInfo) -> None:
        """Raise :class:`StoreMismatch` with a clear reason if this store does not fit."""
        have = self.info
        if have.model != expected.model or have.model_fingerprint != expected.model_fingerprint:
            raise StoreMismatch(f"{self.path} holds embeddings of model {have.model!r} with other weights "
                                f"than the model in use ({expected.model!r}); compute a new store")
        if have.signature != expected.signature:
            raise StoreMismatch(f"{self.path} was computed for other pixels or another normalisation "
                                "(contrast limits, RGB/channel choice); compute a new store")
        if (have.index_shape, have.plane_shape, have.tile, have.halo) != (
                expected.index_shape, expected.plane_shape, expected.tile, expected.halo):
            raise StoreMismatch(f"{self.path} uses another tile layout (tile={have.tile}, halo={have.halo}, "
                                f"items {have.index_shape}); compute a new store or use its layout")

    def has(self, index: tuple[int, ...]) -> bool:
        return bool(self.group["done"][tuple(index)])

    def done_mask(self) -> np.ndarray:
        return np.asarray(self.group["done"][...], dtype=bool)

    def missing(self) -> list[tuple[int, ...]]:
        return [tuple(int(i) for i in idx) for idx in np.argwhere(~self.done_mask())]

    def get(self, index: tuple[int, ...]) -> Embedding | None:
        index = tuple(index)
        if not self.has(index):
            return None
        features = torch.from_numpy(np.asarray(self.group["features"][index], dtype=np.float32))[None]
        h, w, ih, iw = (int(v) for v in self.group["sizes"][index])
        return Embedding(features, (h, w), (ih, iw), self.info.model)

    def put(self, index: tuple[int, ...], embedding: Embedding) -> None:
        index = tuple(index)
        self.group["features"][index] = embedding.features[0].detach().float().cpu().numpy()
        self.group["sizes"][index] = np.array([*embedding.original_size, *embedding.input_size], np.int32)
        self.group["done"][index] = True  # last: an interrupted write is recomputed
