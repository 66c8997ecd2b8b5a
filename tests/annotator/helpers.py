"""Helpers of the session tests: prompts the way the view's prompt layers send them, a session
made ready on an image."""

from __future__ import annotations

import numpy as np


class Prompts:
    """The current object's points and boxes, sent to the session on every change (like the
    view's prompt layers); emptied when the session clears the object's prompts."""

    def __init__(self, session) -> None:
        self.session = session
        self.points: list[list[float]] = []
        self.positive: list[bool] = []
        self.shapes: list[np.ndarray] = []
        self.kinds: list[str] = []
        session.events.prompts_cleared.connect(self._cleared)
        session.events.prompts_restored.connect(self._restored)

    def _cleared(self) -> None:
        self.points, self.positive, self.shapes, self.kinds = [], [], [], []

    def _restored(self, prompts) -> None:
        points, positive, shapes, kinds = prompts
        self.points, self.positive = [list(map(float, p)) for p in points], [bool(p) for p in positive]
        self.shapes, self.kinds = list(shapes), list(kinds)

    def add(self, row: float, col: float, positive: bool | None = None) -> None:
        self.points.append([row, col])
        self.positive.append(self.session.positive if positive is None else positive)
        self.send()

    def box(self, corner0, corner1, kind: str = "rectangle") -> None:
        (r0, c0), (r1, c1) = corner0, corner1
        self.shapes.append(np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float))
        self.kinds.append(kind)
        self.send()

    def boxes(self, *corners) -> None:
        """Several rectangles added at once (one edit)."""
        for c0, c1 in corners:
            (r0, q0), (r1, q1) = c0, c1
            self.shapes.append(np.array([[r0, q0], [r0, q1], [r1, q1], [r1, q0]], float))
            self.kinds.append("rectangle")
        self.send()

    def send(self) -> None:
        self.session.set_prompts(np.array(self.points, float).reshape(-1, 2), np.array(self.positive, bool),
                                 self.shapes, self.kinds)


def record_predict_calls(session, monkeypatch) -> list[dict]:
    """The keyword arguments of every ``predict`` call the session's predictor gets from now on."""
    calls: list[dict] = []
    original = session.model.predictor.predict
    monkeypatch.setattr(session.model.predictor, "predict", lambda **kw: calls.append(kw) or original(**kw))
    return calls


def chosen_mask(session) -> np.ndarray:
    return session.object.chosen_candidate.mask > 0


def make_ready(session, source, checkpoint, position=None):
    """``session`` on ``source`` (at leading index ``position``) with the model in ``checkpoint``
    loaded and the plane on screen embedded (a synchronous executor)."""
    session.set_image(source)
    if position is not None:
        session.set_position(position)
    session.load_model(str(checkpoint), device="cpu")
    assert session.embedding is not None, session.status_text
    return session
