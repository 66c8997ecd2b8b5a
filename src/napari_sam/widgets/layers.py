"""napari layers of the annotator: prompt layers, candidate layers, the committed labels.

Every layer we make carries ``layer.metadata["napari_sam"] = {"role": ...}`` with role
``points``, ``boxes``, ``candidate`` (plus ``index``, 0-based rank, and ``iou``) or ``labels``.
Layers get the image's 2D ``scale`` and ``translate`` so that their data coordinates are the
image's pixel ``(row, col)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.utils.colormaps import DirectLabelColormap

from .state import Candidate, plane_index

KEY = "napari_sam"
POSITIVE, NEGATIVE = "#39ff14", "#ff2d55"
CANDIDATE_COLORS = ("#00e5ff", "#ffb000", "#d36bff")
CHOSEN_OPACITY, DIMMED_OPACITY = 0.6, 0.15


def role(layer: Layer) -> str | None:
    meta = layer.metadata.get(KEY)
    return meta.get("role") if isinstance(meta, dict) else None


def _placement(image: Image, offset: tuple[int, int] = (0, 0)) -> dict:
    """2D placement of the image's plane, shifted by ``offset`` pixels ``(row, col)``."""
    scale = np.asarray(image.scale[-2:], float)
    return {"scale": tuple(scale), "translate": tuple(np.asarray(image.translate[-2:], float) + scale * offset)}


def place_like(layer: Layer, image: Image) -> None:
    """Give ``layer`` the 2D placement of ``image``."""
    for name, value in _placement(image).items():
        setattr(layer, name, value)


def point_size(image_shape: tuple[int, int]) -> float:
    return float(max(4.0, min(image_shape) / 60.0))


def make_points(image: Image, image_shape: tuple[int, int]) -> Points:
    """Empty prompt points with a boolean ``positive`` feature (green True, red False)."""
    layer = Points(
        np.zeros((0, 2)), ndim=2, name="SAM points", size=point_size(image_shape),
        features={"positive": np.zeros(0, bool)},
        face_color="positive", face_color_cycle={True: POSITIVE, False: NEGATIVE},
        border_color="white", border_width=0.15, metadata={KEY: {"role": "points"}}, **_placement(image),
    )
    layer.feature_defaults = {"positive": True}
    return layer


def point_polarity(layer: Points) -> np.ndarray:
    """``(N,)`` bool: True for positive points (missing feature: all positive)."""
    if "positive" not in layer.features:
        return np.ones(len(layer.data), bool)
    return layer.features["positive"].to_numpy(dtype=bool, na_value=True)


def set_next_polarity(layer: Points, positive: bool) -> None:
    layer.feature_defaults = {"positive": bool(positive)}


def set_polarity_of(layer: Points, indices: list[int], positive: bool) -> None:
    """Make points ``indices`` (negative ones count from the end) positive or negative.

    (napari copies the features of selected points into new ones; we set them explicitly.)"""
    if not indices:
        return
    features = layer.features.copy()
    if "positive" not in features:
        features["positive"] = True
    rows = [i % len(features) for i in indices]
    features.loc[features.index[rows], "positive"] = bool(positive)
    layer.features = features
    layer.refresh_colors(update_color_mapping=False)


def make_boxes(image: Image, image_shape: tuple[int, int]) -> Shapes:
    """Empty prompt rectangles (yellow outlines)."""
    return Shapes(
        ndim=2, name="SAM boxes", edge_color="yellow", face_color="transparent",
        edge_width=max(1.0, min(image_shape) / 300.0), metadata={KEY: {"role": "boxes"}}, **_placement(image),
    )


def candidate_name(cand: Candidate) -> str:
    if cand.ious:
        return f"SAM masks · {len(cand.ious)} objects · IoU {cand.iou:.2f}"
    return f"SAM mask {cand.index + 1} · IoU {cand.iou:.2f}"


def _candidate_colormap(cand: Candidate) -> DirectLabelColormap:
    colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    if cand.ious:
        for k in range(1, len(cand.ious) + 1):
            colors[k] = CANDIDATE_COLORS[(k - 1) % len(CANDIDATE_COLORS)]
    else:
        colors[1] = CANDIDATE_COLORS[cand.index % len(CANDIDATE_COLORS)]
    return DirectLabelColormap(color_dict=colors)


def candidate_metadata(cand: Candidate) -> dict:
    meta = {"role": "candidate", "index": cand.index, "iou": float(cand.iou)}
    if cand.ious:
        meta["ious"] = list(cand.ious)
    return {KEY: meta}


def make_candidate(cand: Candidate, image: Image) -> Labels:
    return Labels(cand.mask, name=candidate_name(cand), metadata=candidate_metadata(cand),
                  colormap=_candidate_colormap(cand), opacity=DIMMED_OPACITY, **_placement(image, cand.offset))


def update_candidate(layer: Labels, cand: Candidate, image: Image) -> None:
    layer.metadata = candidate_metadata(cand)
    layer.colormap = _candidate_colormap(cand)
    layer.data = cand.mask
    layer.translate = _placement(image, cand.offset)["translate"]
    layer.name = candidate_name(cand)


def highlight(layer: Labels, chosen: bool) -> None:
    layer.opacity = CHOSEN_OPACITY if chosen else DIMMED_OPACITY
    layer.blending = "translucent"


def make_labels(image: Image, labels_shape: tuple[int, ...], name: str = "SAM labels",
                data: np.ndarray | None = None) -> Labels:
    """A committed-labels layer of ``labels_shape`` (the image's shape without colour), placed
    like the image in all its dimensions: empty uint32 unless ``data`` (that shape) is given."""
    n = len(labels_shape)
    data = np.zeros(labels_shape, np.uint32) if data is None else data
    if data.shape != tuple(labels_shape):
        raise ValueError(f"labels data of shape {data.shape}, expected {tuple(labels_shape)}")
    return Labels(data, name=name, metadata={KEY: {"role": "labels"}},
                  scale=tuple(image.scale[-n:]), translate=tuple(image.translate[-n:]))


def make_propagated(image: Image, labels_shape: tuple[int, ...], planes: dict, name: str) -> Labels:
    """A layer showing one object propagated through planes ``{lead index: (H, W) mask}``."""
    data = np.zeros(labels_shape, np.uint8)
    for at, mask in planes.items():  # at: leading indices, None for every channel
        data[plane_index(at)][..., mask] = 1
    n = len(labels_shape)
    return Labels(data, name=name, metadata={KEY: {"role": "propagated"}}, opacity=CHOSEN_OPACITY,
                  colormap=DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0),
                                                           1: CANDIDATE_COLORS[0]}),
                  scale=tuple(image.scale[-n:]), translate=tuple(image.translate[-n:]))


def bind_keys(layer: Layer, actions: dict[str, Callable[[], object]]) -> None:
    """Bind ``actions`` (napari key names -> callables) on ``layer``, over napari's defaults."""
    for key, action in actions.items():
        layer.bind_key(key, _ignore_layer(action), overwrite=True)


def _ignore_layer(action: Callable[[], object]) -> Callable[[Layer], None]:
    def handler(layer: Layer) -> None:
        action()

    return handler
