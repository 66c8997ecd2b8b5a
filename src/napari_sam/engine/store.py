"""On-disk zarr store of image embeddings (per slice and/or per tile), resumable.

Layout of a store (a zarr v3 group):

- ``features``: float array ``(*index_shape, 256, g, g)``, one chunk per item;
- ``high_res_0``, ``high_res_1`` (SAM 2 stores only): its high-resolution features
  ``(*index_shape, 32, 4g, 4g)`` and ``(*index_shape, 64, 2g, 2g)``, one chunk per item;
- ``sizes``: int32 ``(*index_shape, 4)``: original ``(H, W)`` and resized input ``(h, w)``;
- ``done``: bool ``(*index_shape)``, set only after an item's features are written, so an
  interrupted precompute resumes where it stopped;
- attribute ``napari_sam``: ``format`` (of this layout, :data:`FORMAT`), ``signature``
  (hash of pixels and normalisation), ``normalisation`` (``rgb`` and the ``contrast_limits``
  the embeddings were computed with, so a reader can adopt them), ``model`` and
  ``model_fingerprint``, ``layout`` (``index_shape``, ``tile``, ``halo``, ``plane_shape``),
  ``version`` of the package that made it.

``index_shape`` is the image's leading (non-spatial) shape followed by the tile grid
``(ny, nx)`` (``(1, 1)`` when the plane is not tiled).

Compatibility: a store whose ``format`` is not :data:`FORMAT` (e.g. made by a newer
napari-sam) is refused on opening, with a message. The package ``version`` is recorded for
diagnosis only: another version with the same format reads the store, because everything the
embeddings depend on (pixels, normalisation, model weights, tile layout) is checked itself.
Stores made before ``normalisation`` was recorded are read too (nothing to adopt then).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .predictor import Embedding

FORMAT = 1  # bump when the layout changes in a way older readers would misread


class StoreMismatch(ValueError):
    """The store was made for other pixels, normalisation, model or layout (or in a format
    this version cannot read)."""


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
        """Parse the ``napari_sam`` attribute; raise :class:`StoreMismatch` for an unknown format."""
        fmt, version = attrs.get("format"), attrs.get("version")
        if fmt != FORMAT:
            from .. import __version__

            raise StoreMismatch(f"{where} is an embedding store of format {fmt!r} (made by napari-sam {version}); "
                                f"napari-sam {__version__} reads format {FORMAT} only: update napari-sam or "
                                "compute a new store")
        lay, norm = attrs["layout"], attrs.get("normalisation")
        if norm is not None:
            limits = norm.get("contrast_limits")
            norm = Normalisation(bool(norm["rgb"]), None if limits is None else tuple(float(v) for v in limits))
        return cls(attrs["signature"], attrs["model"], attrs["model_fingerprint"], tuple(lay["index_shape"]),
                   tuple(lay["plane_shape"]), lay["tile"], lay["halo"], norm, fmt, version)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Fingerprint that tells models apart, not a hash of the checkpoint file: a BLAKE2b digest
    of four characteristic weight tensors (patch embedding, encoder neck, IoU token, positional
    Gaussian matrix; SAM 2: their counterparts and the high-resolution projection), which differ
    between any two trainings or random initialisations. Hashing every weight would cost seconds
    per load (2.5 GB for vit_h) for no practical gain."""
    state = model.state_dict()
    digest = hashlib.blake2b(digest_size=16)
    for key in ("image_encoder.patch_embed.proj.weight", "image_encoder.neck.3.weight",
                "mask_decoder.iou_token.weight", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                "image_encoder.trunk.patch_embed.proj.weight", "image_encoder.neck.convs.0.conv.weight",
                "sam_mask_decoder.iou_token.weight", "sam_mask_decoder.conv_s0.weight",
                "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"):
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
        self.info = StoreInfo.from_attrs(attrs, self.path)

    @classmethod
    def create(cls, path: str | Path, info: StoreInfo, grid: int = 64, dtype: str = "float32",
               high_res: tuple[tuple[int, int], ...] = ()) -> EmbeddingStore:
        """A new store for ``info``; ``grid`` and ``high_res`` (``(channels, size)`` per SAM 2
        high-resolution level) as :func:`store_layout` gives them for a model."""
        import zarr

        n = len(info.index_shape)
        group = zarr.open_group(str(path), mode="w")
        group.create_array("features", shape=(*info.index_shape, 256, grid, grid), chunks=(1,) * n + (256, grid, grid),
                           dtype=dtype, fill_value=0)
        for i, (chans, size) in enumerate(high_res):
            group.create_array(f"high_res_{i}", shape=(*info.index_shape, chans, size, size),
                               chunks=(1,) * n + (chans, size, size), dtype=dtype, fill_value=0)
        group.create_array("sizes", shape=(*info.index_shape, 4), chunks=(1,) * n + (4,), dtype="int32", fill_value=0)
        group.create_array("done", shape=info.index_shape, chunks=(1,) * n, dtype="bool", fill_value=False)
        group.attrs["napari_sam"] = info.as_attrs()
        return cls(path)

    def check(self, expected: StoreInfo) -> None:
        """Raise :class:`StoreMismatch` with a clear reason if this store does not fit: model
        and weights, pixels and normalisation (the signature), tile layout. The format was
        checked on opening; the package version is not compared (see the module docstring)."""
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
        high = tuple(torch.from_numpy(np.asarray(self.group[name][index], dtype=np.float32))[None]
                     for name in self._high_res_names()) or None
        return Embedding(features, (h, w), (ih, iw), self.info.model, high)

    def _high_res_names(self) -> list[str]:
        names = []
        while f"high_res_{len(names)}" in self.group:
            names.append(f"high_res_{len(names)}")
        return names

    def put(self, index: tuple[int, ...], embedding: Embedding) -> None:
        index = tuple(index)
        names = self._high_res_names()
        if len(names) != len(embedding.high_res or ()):
            raise StoreMismatch(f"{self.path} holds {len(names)} high-resolution feature levels, the embedding "
                                f"{len(embedding.high_res or ())}: compute a new store for this model")
        for name, tensor in zip(names, embedding.high_res or ()):
            self.group[name][index] = tensor[0].detach().float().cpu().numpy()
        self.group["features"][index] = embedding.features[0].detach().float().cpu().numpy()
        self.group["sizes"][index] = np.array([*embedding.original_size, *embedding.input_size], np.int32)
        self.group["done"][index] = True  # last: an interrupted write is recomputed


def store_layout(model: torch.nn.Module) -> dict:
    """``grid`` and ``high_res`` of :meth:`EmbeddingStore.create` for ``model``'s embeddings."""
    g = model.prompt_encoder.image_embedding_size[0]
    if getattr(model, "family", "sam") == "sam2":
        return {"grid": g, "high_res": ((model.mask_decoder.conv_s0.out_channels, 4 * g),
                                        (model.mask_decoder.conv_s1.out_channels, 2 * g))}
    return {"grid": g}
