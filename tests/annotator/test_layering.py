"""The session is Qt-free, and the view holds no annotation logic of its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

WIDGETS = Path(__file__).parents[2] / "src" / "napari_sam" / "widgets"


def test_annotator_imports_no_qt_napari_or_magicgui():
    code = (
        "import sys, napari_sam.annotator; "
        "bad = [m for m in sys.modules if m.split('.')[0] in {'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', "
        "'PySide6', 'magicgui', 'superqt', 'vispy'}]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_view_files_are_small_and_helpers_hold_no_widget():
    for path in WIDGETS.glob("*.py"):
        lines = path.read_text().count("\n")
        assert lines < 400, f"{path.name}: {lines} lines"
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # helper constructors take the session and layers, never the widget
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                names = [a.arg for a in node.args.args]
                assert not {"w", "owner", "widget"} & set(names), f"{path.name}: __init__({', '.join(names)})"
    assert (WIDGETS / "sam_widget.py").read_text().count("\n") <= 250
