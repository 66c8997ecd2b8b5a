"""napari layers of the annotator and how a session's state is drawn into them.

Every layer we make carries ``layer.metadata["napari_sam"] = {"role": ...}`` with role
``points``, ``boxes``, ``candidate``, ``propagated``, ``labels`` or ``instances`` (automatic
instances, see :mod:`.instances_view`). Prompt and candidate layers get the image's 2D
``scale`` and ``translate``, so their data coordinates are the image's pixel ``(row, col)``.

The candidates live in ONE layer kept for the whole session (creating and removing layers costs
napari a second): with one object its pixel values are bit sets, bit ``k`` set where candidate
``k`` (0-based rank) covers the pixel, so ``(data >> k) & 1`` is candidate ``k``; with several
objects at once (boxes) they are object ids ``1..K``. Its metadata holds the chosen candidate's
``index`` and ``iou`` and every candidate (``"candidates": [{"index", "iou"}, ...]``); its colour
map shows the chosen one bright and the others dim, so choosing only changes the colour map.
"""

from __future__ import annotations

from collections.abc import Callable
from weakref import WeakKeyDictionary

import numpy as np
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.utils.colormaps import DirectLabelColormap

from ..annotator import Candidate

KEY = "napari_sam"
POSITIVE, NEGATIVE = "#39ff14", "#ff2d55"
CANDIDATE_COLORS = ((0.0, 0.9, 1.0), (1.0, 0.69, 0.0), (0.83, 0.42, 1.0))
TRACK_COLORS = (*CANDIDATE_COLORS, (0.3, 1.0, 0.3), (1.0, 0.3, 0.3), (1.0, 1.0, 0.2), (0.4, 0.5, 1.0))
CHOSEN_ALPHA, DIMMED_ALPHA = 0.6, 0.18
EMPTY_NAME = "SAM candidates"
_COLOURS: WeakKeyDictionary = WeakKeyDictionary()  # candidate layer -> what its colour map shows


def role(layer: Layer) -> str | None:
    meta = layer.metadata.get(KEY)
    return meta.get("role") if isinstance(meta, dict) else None


def placement(image: Image, offset: tuple[int, int] = (0, 0)) -> dict:
    """2D placement of the image's plane, shifted by ``offset`` pixels ``(row, col)``."""
    scale = np.asarray(image.scale[-2:], float)  # an RGB layer's axes do not include the colour
    return {"scale": tuple(scale), "translate": tuple(np.asarray(image.translate[-2:], float) + scale * offset)}


def place_like(layer: Layer, image: Image, offset: tuple[int, int] = (0, 0)) -> None:
    for name, value in placement(image, offset).items():
        if not np.allclose(getattr(layer, name), value):
            setattr(layer, name, value)


def point_size(image_shape: tuple[int, int]) -> float:
    return float(max(4.0, min(image_shape) / 60.0))


def make_points(image: Image, image_shape: tuple[int, int]) -> Points:
    """Empty prompt points with a boolean ``positive`` feature (green True, red False)."""
    layer = Points(
        np.zeros((0, 2)), ndim=2, name="SAM points", size=point_size(image_shape),
        features={"positive": np.zeros(0, bool)},
        face_color="positive", face_color_cycle={True: POSITIVE, False: NEGATIVE},
        border_color="white", border_width=0.15, metadata={KEY: {"role": "points"}}, **placement(image),
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
        edge_width=max(1.0, min(image_shape) / 300.0), metadata={KEY: {"role": "boxes"}}, **placement(image),
    )


# --- candidates ------------------------------------------------------------------------------
def make_candidates(image: Image, plane_shape: tuple[int, int]) -> Labels:
    """The (empty) candidate layer of a plane of ``image``."""
    return Labels(np.zeros(plane_shape, np.uint8), name=EMPTY_NAME, metadata={KEY: {"role": "candidate",
                  "candidates": []}}, colormap=candidate_colormap([Candidate(0, np.zeros((1, 1), np.uint8), 0.0)], 0),
                  blending="translucent", **placement(image))


def candidate_data(candidates: list[Candidate]) -> np.ndarray:
    """Pixel values of the candidate layer (see module docstring)."""
    if len(candidates) == 1 and candidates[0].ious:
        return np.asarray(candidates[0].mask)
    data = np.zeros(candidates[0].mask.shape, np.uint8)
    for cand in candidates:
        data |= (np.asarray(cand.mask) > 0).astype(np.uint8) << cand.index
    return data


def candidate_colormap(candidates: list[Candidate], chosen: int) -> DirectLabelColormap:
    colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    if len(candidates) == 1 and candidates[0].ious:  # object ids
        for k in range(1, len(candidates[0].ious) + 1):
            colors[k] = (*CANDIDATE_COLORS[(k - 1) % 3], CHOSEN_ALPHA)
        return DirectLabelColormap(color_dict=colors)
    for value in range(1, 8):
        if value >> chosen & 1:
            colors[value] = (*CANDIDATE_COLORS[chosen % 3], CHOSEN_ALPHA)
        else:
            lowest = (value & -value).bit_length() - 1
            colors[value] = (*CANDIDATE_COLORS[lowest % 3], DIMMED_ALPHA)
    return DirectLabelColormap(color_dict=colors)


def candidate_metadata(candidates: list[Candidate], chosen: int) -> dict:
    meta = {"role": "candidate", "candidates": [{"index": c.index, "iou": float(c.iou)} for c in candidates]}
    cand = next((c for c in candidates if c.index == chosen), None)
    if cand is not None:
        meta.update(index=cand.index, iou=float(cand.iou))
        if cand.ious:
            meta["ious"] = list(cand.ious)
    return {KEY: meta}


def show_candidates(layer: Labels, candidates: list[Candidate], chosen: int, image: Image) -> None:
    """Draw ``candidates`` (none: an empty layer) into the candidate layer, in place when the
    window is the same (no new layer, no new texture)."""
    if candidates:
        data, offset = candidate_data(candidates), candidates[0].offset
    else:
        data, offset = None, None
    if data is None:
        if layer.data.any():
            layer.data[...] = 0
            layer.refresh(thumbnail=False)
    elif data.shape == layer.data.shape and data.dtype == layer.data.dtype:
        np.copyto(layer.data, data)
        layer.refresh(thumbnail=False)
    else:
        layer.data = data.copy()
    if offset is not None:
        place_like(layer, image, offset)
    choose_candidate(layer, candidates, chosen)


def choose_candidate(layer: Labels, candidates: list[Candidate], chosen: int) -> None:
    """Show candidate ``chosen`` as the chosen one (colour map, name and metadata only)."""
    cand = next((c for c in candidates if c.index == chosen), None)
    layer.metadata = candidate_metadata(candidates, chosen)
    if candidates:  # an empty layer keeps its colours (a colour map without labels is napari's random one)
        kind = ("ids", len(candidates[0].ious)) if len(candidates) == 1 and candidates[0].ious else ("bits", chosen)
        if _COLOURS.get(layer) != kind:  # a new colour map re-maps the whole plane: only when it changes
            layer.colormap = candidate_colormap(candidates, chosen)
            _COLOURS[layer] = kind
    name = cand.name if cand is not None else EMPTY_NAME
    if layer.name != name:
        layer.name = name


def candidate_masks(layer: Labels) -> dict[int, np.ndarray]:
    """``{index: bool mask}`` of the candidates shown (test and script helper)."""
    meta = layer.metadata.get(KEY, {})
    if meta.get("ious"):
        return {meta["index"]: np.asarray(layer.data) > 0}
    return {c["index"]: (np.asarray(layer.data) >> c["index"] & 1).astype(bool) for c in meta.get("candidates", [])}


# --- labels ----------------------------------------------------------------------------------
def make_labels(image: Image, labels_shape: tuple[int, ...], name: str = "SAM labels",
                data: np.ndarray | None = None, role_name: str = "labels") -> Labels:
    """A labels layer of ``labels_shape`` (the image's shape without colour), placed like the
    image in all its dimensions: empty uint32 unless ``data`` (that shape) is given."""
    n = len(labels_shape)
    data = np.zeros(labels_shape, np.uint32) if data is None else data
    if data.shape != tuple(labels_shape):
        raise ValueError(f"labels data of shape {data.shape}, expected {tuple(labels_shape)}")
    return Labels(data, name=name, metadata={KEY: {"role": role_name}},
                  scale=tuple(image.scale[-n:]), translate=tuple(image.translate[-n:]))


def make_propagated(image: Image, labels_shape: tuple[int, ...]) -> Labels:
    """The layer that shows the current object on other planes (id masks, kept for the session)."""
    layer = make_labels(image, labels_shape, "SAM propagated", np.zeros(labels_shape, np.uint8), "propagated")
    colours = {k: (*TRACK_COLORS[(k - 1) % len(TRACK_COLORS)], 1) for k in range(1, 256)}  # a track's objects 1, 2, ...
    layer.colormap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **colours})
    layer.opacity = CHOSEN_ALPHA
    return layer


def bind_keys(layer: Layer, actions: dict[str, Callable[[], object]]) -> None:
    """Bind ``actions`` (napari key names -> callables) on ``layer``, over napari's defaults."""
    for key, action in actions.items():
        layer.bind_key(key, _ignore_layer(action), overwrite=True)


def _ignore_layer(action: Callable[[], object]) -> Callable[[Layer], None]:
    def handler(layer: Layer) -> None:
        action()

    return handler
