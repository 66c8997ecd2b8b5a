"""Automatic instance segmentation ("AIS") with micro-sam's decoder on cached embeddings.

``segment_instances(source, decoder)`` turns embeddings into instance labels without prompts:
the decoder (:class:`napari_sam.model.unetr.InstanceDecoder`) predicts three maps per image
(foreground, distance to centre, distance to boundary), and :mod:`.instance_maps` turns them
into labels. Sources:

- a :class:`Predictor` with an image set, or an :class:`Embedding`: one 2D image;
- a :class:`VolumeEmbeddings`: every plane of a stack / time series (or one ``plane``). A tiled
  plane is decoded tile by tile and each tile's core is pasted into full-size maps before the
  post-processing, which then runs once on the whole plane: no seams at tile borders. Planes are
  segmented one by one and then merged along the last leading axis by overlap (``merge``), or
  across the ``planes`` given (e.g. the z stack at one time point of a time series).

Default parameters are per model, as micro-sam's (its annotator's settings for the
light-microscopy and electron-microscopy models, its generator's defaults otherwise): see
:func:`instance_defaults`. ``progress(done, total)`` and ``cancel()`` are per call; cancelling
raises :class:`Cancelled` (polled between decoder stages, tiles and planes). Thread-agnostic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from ..model.unetr import InstanceDecoder
from .allocator import keep_freed_memory, release_freed_memory
from .instance_maps import labels_from_maps, merge_planes
from .predictor import Cancelled, Embedding, Predictor
from .volume import VolumeEmbeddings

GENERIC_DEFAULTS = {
    "center_distance_threshold": 0.5, "boundary_distance_threshold": 0.5, "foreground_threshold": 0.5,
    "foreground_smoothing": 1.0, "distance_smoothing": 1.6, "min_size": 0,
}
# micro-sam 1.8.14's per-model settings (micro_sam/_model_settings.py, AIS_SETTINGS).
_PER_MODEL = {
    "vit_t_lm": (0.5, 0.5, 2.0), "vit_b_lm": (0.4, 0.5, 2.0), "vit_l_lm": (0.4, 0.4, 1.6), "vit_h_lm": (0.5, 0.5, 1.4),
    "vit_t_em_organelles": (0.4, 0.5, 1.2), "vit_b_em_organelles": (0.3, 0.4, 1.2),
    "vit_l_em_organelles": (0.3, 0.4, 1.2), "vit_h_em_organelles": (0.3, 0.4, 1.2),
}
MODEL_DEFAULTS: dict[str, dict] = {
    name: {**GENERIC_DEFAULTS, "center_distance_threshold": c, "boundary_distance_threshold": b,
           "distance_smoothing": s, "min_size": 100}
    for name, (c, b, s) in _PER_MODEL.items()
}


def instance_defaults(model_name: str | None) -> dict:
    """The post-processing parameters :func:`segment_instances` uses for ``model_name`` (a
    registry name; None or an unknown name: micro-sam's generic defaults)."""
    return dict(MODEL_DEFAULTS.get(model_name or "", GENERIC_DEFAULTS))


def load_decoder(name_or_path: str | os.PathLike, progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> InstanceDecoder:
    """The instance decoder of a registered model (downloaded on first use, see
    :func:`napari_sam.weights.fetch`) or of a file: a ``*_decoder.pt``, a micro-sam export or a
    training checkpoint with a ``decoder_state``. Raises ``ValueError`` for a model without one."""
    from ..weights import load_decoder as load

    return load(name_or_path, progress=progress, cancel=cancel)


def checked_instance_params(model_name: str | None, given: dict) -> dict:
    """:func:`instance_defaults` of ``model_name`` updated with the values of ``given`` that are
    not None, each checked (``ValueError`` naming a bad one and its range), as
    :func:`segment_instances` takes them (cheap: for callers to check before starting work)."""
    params = instance_defaults(model_name)
    params.update({k: v for k, v in given.items() if v is not None})
    for name in ("center_distance_threshold", "boundary_distance_threshold", "foreground_threshold"):
        if not 0.0 <= float(params[name]) <= 1.0:
            raise ValueError(f"{name} must lie in 0..1 (the decoder's maps are probabilities), got {params[name]}")
    for name in ("foreground_smoothing", "distance_smoothing"):
        if float(params[name]) < 0:
            raise ValueError(f"{name} is a Gaussian sigma in pixels and must be >= 0, got {params[name]}")
    if int(params["min_size"]) < 0:
        raise ValueError(f"min_size is a pixel count and must be >= 0, got {params['min_size']}")
    return params


def decode_maps(decoder: InstanceDecoder, embedding: Embedding, poll: Callable[[], None] | None = None) -> np.ndarray:
    """The decoder's maps ``(3, H, W)`` float32 for one embedding, at its image's size."""
    maps = decoder.maps(embedding.features, embedding.input_size, embedding.original_size, poll)
    return maps[0].cpu().numpy()


def segment_instances(
    predictor_or_embedding: Predictor | Embedding | VolumeEmbeddings,
    decoder: InstanceDecoder | str | os.PathLike,
    *,
    center_distance_threshold: float | None = None,
    boundary_distance_threshold: float | None = None,
    foreground_threshold: float | None = None,
    foreground_smoothing: float | None = None,
    distance_smoothing: float | None = None,
    min_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    plane: tuple[int, ...] | None = None,
    merge: bool = True,
    planes: Sequence[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """Instance labels (uint32, 0 background) at the image's resolution: ``(H, W)`` for a 2D
    source or one ``plane`` of a volume, ``(*lead, H, W)`` for a whole volume, ``(N, H, W)`` for
    the ``N`` given ``planes`` of a volume (a stack through a 4D image; merged across them in
    the order given) (see module docstring). ``decoder``: an :class:`InstanceDecoder`, or a model name / file for
    :func:`load_decoder`. A parameter left at None takes the decoder's model default
    (:func:`instance_defaults`). ``merge``: join objects across the last leading axis of a
    volume (stack planes) by overlap; False keeps each plane's objects apart (ids stay unique)."""
    if not isinstance(decoder, InstanceDecoder):
        decoder = load_decoder(decoder)
    params = checked_instance_params(getattr(decoder, "model_name", None), dict(
        center_distance_threshold=center_distance_threshold, boundary_distance_threshold=boundary_distance_threshold,
        foreground_threshold=foreground_threshold, foreground_smoothing=foreground_smoothing,
        distance_smoothing=distance_smoothing, min_size=min_size))

    def poll() -> None:
        if cancel is not None and cancel():
            raise Cancelled("instance segmentation cancelled")

    keep_freed_memory()  # freed buffers are reused from decode to decode, and returned at the end
    try:
        if isinstance(predictor_or_embedding, VolumeEmbeddings):
            return _segment_volume(predictor_or_embedding, decoder, params, plane, planes, merge, progress, cancel,
                                   poll)
        if plane is not None or planes is not None:
            raise TypeError("plane and planes select planes of a VolumeEmbeddings; this source is one image")
        return _segment_image(_embedding_of(predictor_or_embedding), decoder, params, progress, poll)
    finally:
        release_freed_memory()


def _embedding_of(source: Predictor | Embedding) -> Embedding:
    if isinstance(source, Predictor):
        if source.embedding is None:
            raise RuntimeError("no image set: call set_image() on the predictor first")
        return source.embedding
    if isinstance(source, Embedding):
        return source
    raise TypeError("predictor_or_embedding must be a Predictor, an Embedding or a VolumeEmbeddings, "
                    f"got {type(source).__name__}")


def _segment_image(embedding: Embedding, decoder: InstanceDecoder, params: dict, progress, poll) -> np.ndarray:
    _check_model(decoder, embedding.model_name)
    poll()
    maps = decode_maps(decoder, embedding, poll)
    _report(progress, 1, 2)
    poll()
    labels = labels_from_maps(*maps, **params)
    _report(progress, 2, 2)
    return labels


def _check_model(decoder: InstanceDecoder, model_name: str) -> None:
    expected = getattr(decoder, "model_name", None)
    if expected is not None and model_name != expected:
        raise ValueError(f"the decoder belongs to model {expected!r}, but the embedding was computed by "
                         f"{model_name!r}: embed with {expected!r} (or load that model's decoder)")


def _report(progress, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _checked_plane(vol: VolumeEmbeddings, plane) -> tuple[int, ...]:
    plane = tuple(int(i) for i in plane)
    if len(plane) != len(vol.lead_shape) or any(not 0 <= i < n for i, n in zip(plane, vol.lead_shape)):
        raise IndexError(f"plane {plane} outside the volume's leading shape {vol.lead_shape}")
    return plane


def offset_ids(arrays) -> None:
    """Shift the ids of each label array (in place) past the largest id of the arrays before
    it, so ids are unique across all of them (0 stays background)."""
    shift = 0
    for labels in arrays:
        if labels.any():
            labels[labels > 0] += np.uint32(shift)
            shift = int(labels.max())


def _segment_volume(vol: VolumeEmbeddings, decoder, params, plane, chosen, merge, progress, cancel, poll) -> np.ndarray:
    _check_model(decoder, vol.predictor.model_name)
    tiles = [(iy, ix) for iy in range(vol.grid[0]) for ix in range(vol.grid[1])]
    if plane is not None and chosen is not None:
        raise TypeError("give plane (one plane) or planes (a stack of them), not both")
    if plane is not None:
        planes = [_checked_plane(vol, plane)]
    elif chosen is not None:
        planes = [_checked_plane(vol, p) for p in chosen]
        if not planes:
            raise ValueError("planes is empty: give at least one plane of the volume")
    else:
        planes = [tuple(int(i) for i in idx) for idx in np.ndindex(*vol.lead_shape)]
    if chosen is not None:
        merging = merge and len(planes) > 1
    else:
        merging = plane is None and merge and len(vol.lead_shape) > 0 and vol.lead_shape[-1] > 1
    total = len(planes) * (len(tiles) + 1) + (1 if merging else 0)
    done = 0
    out = np.zeros((len(planes), *vol.plane_shape), np.uint32)
    for n, lead in enumerate(planes):
        maps = np.zeros((3, *vol.plane_shape), np.float32)
        for tile in tiles:
            poll()
            emb = vol.embedding(lead + tile, cancel=cancel)
            r0, c0, _, _ = vol.window(tile)
            k0, l0, k1, l1 = vol.layout.core(tile) if vol.layout is not None else (0, 0, *vol.plane_shape)
            maps[:, k0:k1, l0:l1] = decode_maps(decoder, emb, poll)[:, k0 - r0:k1 - r0, l0 - c0:l1 - c0]
            done += 1
            _report(progress, done, total)
        poll()
        out[n] = labels_from_maps(*maps, **params)
        done += 1
        _report(progress, done, total)
    offset_ids(out)  # ids unique across planes
    if plane is not None:
        return out[0]
    if chosen is None:
        out = out.reshape(*vol.lead_shape, *vol.plane_shape)
    if merging:
        poll()
        stacks = out.reshape(-1, len(planes) if chosen is not None else vol.lead_shape[-1], *vol.plane_shape)
        merged = [merge_planes(stack) for stack in stacks]
        offset_ids(merged)  # ids unique across the stacks of a time series
        out = np.stack(merged).reshape(out.shape)
        _report(progress, total, total)
    return out
