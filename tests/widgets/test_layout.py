"""The panel on a short dock (a laptop screen, docks stacked): it scrolls instead of drawing its
rows over each other, and the scroll area never takes the canvas's keyboard focus."""

from __future__ import annotations

from qtpy.QtCore import QPoint, QRect, Qt
from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QWidget


def _rect(widget: QWidget, ancestor: QWidget) -> QRect:
    return QRect(widget.mapTo(ancestor, QPoint(0, 0)), widget.size())


def _rows(panel: QWidget) -> list[QWidget]:
    """The visible controls of the panel (combos, buttons, labels with text)."""
    found = [*panel.findChildren(QComboBox), *panel.findChildren(QPushButton),
             *[lab for lab in panel.findChildren(QLabel) if lab.text()]]
    return [w for w in found if w.isVisibleTo(panel) and w.parentWidget() is not None
            and not isinstance(w.parentWidget(), QComboBox)]


def _name(w: QWidget) -> str:
    return w.objectName() or f"{type(w).__name__}:{w.text() if hasattr(w, 'text') else ''}"


def _overlaps(panel: QWidget) -> list[tuple[str, str]]:
    """Pairs of controls (neither inside the other) whose rectangles intersect."""
    rows = _rows(panel)
    return [(_name(a), _name(b)) for i, a in enumerate(rows) for b in rows[i + 1:]
            if not (a.isAncestorOf(b) or b.isAncestorOf(a)) and _rect(a, panel).intersects(_rect(b, panel))]


def test_a_short_dock_scrolls_and_no_rows_overlap(qtbot, widget):
    widget.show()
    widget.resize(420, 260)  # far shorter than the panel
    qtbot.waitUntil(lambda: widget.height() == 260)
    inner, bar = widget.scroll.widget(), widget.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    assert inner.height() >= inner.minimumSizeHint().height()
    assert _overlaps(inner) == []
    info, labels = widget.ui.model_info, widget.ui.labels
    assert _rect(info, inner).bottom() < _rect(labels, inner).top()  # the model's description above the Labels row
    legend = next(lab for lab in inner.findChildren(QLabel) if lab.text().startswith("<b>Shortcuts"))
    view = widget.scroll.viewport()
    assert not view.rect().contains(_rect(legend, view).bottomLeft())  # below the fold
    bar.setValue(bar.maximum())  # ... until scrolled to
    qtbot.waitUntil(lambda: view.rect().contains(_rect(legend, view).bottomLeft()))

    widget.resize(420, inner.sizeHint().height() + 40)  # tall enough: no scrolling
    qtbot.waitUntil(lambda: bar.maximum() == 0)
    assert _overlaps(inner) == []
    assert widget.scroll.focusPolicy() == Qt.NoFocus
    assert widget.sizeHint().height() >= inner.sizeHint().height()  # the dock asks for the whole panel


def test_status_lines_keep_two_lines_of_the_font_a_stylesheet_sets(qtbot, widget):
    from qtpy.QtGui import QFontMetrics

    widget.show()
    before = widget.ui.status.height()
    widget.setStyleSheet("QLabel { font-size: 22pt; }")  # as napari's theme sets its own font
    for line in (widget.ui.status, widget.ui.model_info):
        qtbot.waitUntil(lambda line=line: line.height() >= 2 * QFontMetrics(line.font()).lineSpacing())
    assert widget.ui.status.height() > before
