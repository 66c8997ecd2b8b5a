"""The panel shows the session: status line (and napari notifications of warnings), Cancel
enabled exactly while a job runs, the candidate buttons, the polarity button."""

from __future__ import annotations

from napari.utils import notifications

from ..annotator import Session
from .ui import Panel


class PanelView:
    def __init__(self, ui: Panel, session: Session) -> None:
        self.ui, self.session = ui, session
        ev = session.events
        ev.status.connect(self.status)
        ev.busy.connect(lambda on: ui.cancel.setEnabled(bool(on)))
        ev.candidates.connect(self.buttons)
        ev.chosen.connect(lambda _: self.buttons())
        ev.polarity.connect(self.polarity)

    def status(self, text: str, warn: bool) -> None:
        self.ui.status.setText(text)
        if warn:
            notifications.show_warning(f"Segment Anything: {text}")

    def buttons(self) -> None:
        obj = self.session.object
        for k, button in enumerate(self.ui.choose):
            cand = obj.get(k) if len(obj.candidates) > 1 else None
            button.setEnabled(cand is not None)
            button.setText(f"{k + 1} · {cand.iou:.2f}" if cand else f"Mask {k + 1}")
            button.setStyleSheet("font-weight: bold" if cand is not None and k == obj.chosen else "")

    def polarity(self, positive: bool) -> None:
        button = self.ui.polarity
        button.blockSignals(True)
        button.setChecked(not positive)
        button.setText(f"Next points: {'positive' if positive else 'negative'} (N)")
        button.blockSignals(False)
