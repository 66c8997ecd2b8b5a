"""The GUI benchmark runs end to end in a real window on a small configuration (no timing assertions).

It runs as a script in its own process, as a person runs it: napari registers our plugin's commands
once per process, and the viewers other display tests made (``make_napari_viewer``) must not share it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HAS_DISPLAY = bool(os.environ.get("DISPLAY")) and os.environ.get("QT_QPA_PLATFORM") not in (None, "offscreen")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not HAS_DISPLAY, reason="needs a display with OpenGL (e.g. xvfb-run, QT_QPA_PLATFORM=xcb)")
def test_bench_gui_prints_its_table():
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_gui.py"), "--model", "vit_tiny_test", "--sizes", "256",
               "--clicks", "2", "--prefetch-size", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| size | decode (engine) | click -> drawn |" in done.stdout and "| 256² |" in done.stdout
