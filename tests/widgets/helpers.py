"""Helpers of the widget tests: find our layers by their metadata role, move the sliders."""

from __future__ import annotations


def with_role(viewer, role):
    return [lay for lay in viewer.layers if lay.metadata.get("napari_sam", {}).get("role") == role]


def candidates(viewer):
    return sorted(with_role(viewer, "candidate"), key=lambda lay: lay.metadata["napari_sam"]["index"])


def points_layer(viewer):
    (layer,) = with_role(viewer, "points")
    return layer


def record_predict_calls(w, monkeypatch) -> list[dict]:
    """The keyword arguments of every ``predict`` call the widget's predictor gets from now on."""
    calls: list[dict] = []
    original = w.model.predictor.predict
    monkeypatch.setattr(w.model.predictor, "predict", lambda **kw: calls.append(kw) or original(**kw))
    return calls


def boxes_layer(viewer):
    (layer,) = with_role(viewer, "boxes")
    return layer


def add_point(viewer, row, col):
    (points,) = with_role(viewer, "points")
    points.add([[row, col]])


def go_to(viewer, z):
    step = list(viewer.dims.current_step)
    step[0] = z
    viewer.dims.current_step = tuple(step)
