"""The GUI benchmark runs end to end in a real window on a small configuration (no timing assertions)."""

from __future__ import annotations

import os

import pytest

HAS_DISPLAY = bool(os.environ.get("DISPLAY")) and os.environ.get("QT_QPA_PLATFORM") not in (None, "offscreen")


@pytest.mark.skipif(not HAS_DISPLAY, reason="needs a display with OpenGL (e.g. xvfb-run, QT_QPA_PLATFORM=xcb)")
def test_bench_gui_prints_its_table(qapp, capsys):
    from benchmarks import bench_gui

    assert bench_gui.main(["--model", "vit_tiny_test", "--sizes", "256", "--clicks", "2", "--prefetch-size", "0"]) == 0
    text = capsys.readouterr().out
    assert "| size | decode (engine) | click -> drawn |" in text and "| 256² |" in text
