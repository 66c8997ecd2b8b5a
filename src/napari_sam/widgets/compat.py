"""Names of earlier versions that scripts still reach through the widget."""

from __future__ import annotations

from ..annotator import Session


class SessionPlanes:
    """What scripts of issue 5 reach through ``w.planes`` (``w.planes.axes.set_channel`` ...)."""

    def __init__(self, session: Session) -> None:
        self.axes = self.session = session

    def __getattr__(self, name):
        return getattr(self.session, name)
