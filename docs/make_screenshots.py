"""Make the screenshots used in docs/usage.md, headless: first what the ``napari-sam`` command
opens, then a session (load, embed, a point, three candidates, commits).

    xvfb-run -a python docs/make_screenshots.py            # Linux without a display
    xvfb-run -a python docs/make_screenshots.py --tracking-only   # just the SAM 2 tracking one
    python docs/make_screenshots.py --model vit_b           # with real weights (cached/downloaded)

Without ``--model`` it uses the official ``vit_b`` weights if they are already in the cache,
else a random-weight ``vit_b`` (no download): the interface is then real but the masks are
not meaningful, and the images say so in their captions in usage.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def _model_path(choice: str | None) -> tuple[str, str]:
    """(name or path to load, description)."""
    from napari_sam.weights import REGISTRY, cache_dir

    if choice:
        return choice, choice
    cached = cache_dir() / REGISTRY["vit_b"].filename
    if cached.is_file():
        return "vit_b", "vit_b (official weights)"
    import torch

    from napari_sam.model import build_sam, random_state_dict

    path = Path(tempfile.mkdtemp(prefix="napari-sam-shots-")) / "sam_vit_b_random.pth"
    torch.save(random_state_dict(build_sam("vit_b"), seed=0), path)
    return str(path), "vit_b with random weights"


def start_command(path: Path) -> None:
    """Run the ``napari-sam`` command itself (no arguments) and screenshot what it opens."""
    import napari
    from napari.qt import get_qapp
    from qtpy.QtCore import QTimer

    from napari_sam.cli import main as napari_sam

    def shoot():
        viewer = napari.current_viewer()
        _save(viewer, path)
        viewer.close()

    get_qapp()
    QTimer.singleShot(5000, shoot)
    napari_sam([])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model name or .pth (default: cached vit_b, else random vit_b)")
    parser.add_argument("--out", default=str(HERE), help="folder for the PNG files")
    parser.add_argument("--tracking-only", action="store_true", help="only the SAM 2 tracking screenshot")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    out = Path(args.out)
    if args.tracking_only:
        return tracking(out / "screenshot_tracking.png")
    start_command(out / "screenshot_start_command.png")

    from napari_sam.widgets.launch import open_viewer

    model, description = _model_path(args.model)
    viewer, widget = open_viewer(model=model, device="cpu", show=True)  # what `napari-sam` opens
    viewer.window._qt_window.resize(1400, 860)
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    viewer.reset_view()  # fitted to the resized window
    if not widget.wait_idle(600) or widget.embedding is None:
        print(f"model/embedding not ready: {widget.status_text}")
        return 1
    save = lambda name: _save(viewer, out / name)  # noqa: E731
    save("screenshot_ready.png")

    points = viewer.layers["SAM points"]
    points.add([[150, 188]])  # a coin in the middle row
    widget.wait_idle(120)
    widget.select_candidate(0)
    save("screenshot_candidates.png")

    widget.commit()
    boxes = viewer.layers["SAM boxes"]
    boxes.add_rectangles([[[25, 20], [90, 80]], [[20, 95], [85, 150]], [[15, 170], [85, 235]]])
    widget.wait_idle(120)
    widget.commit()
    viewer.layers.selection.active = viewer.layers["SAM labels"]
    save("screenshot_committed.png")
    widget.grab().save(str(out / "screenshot_widget.png"))
    print(f"screenshots written to {out} ({description})")
    viewer.close()
    if Path(model).name == "sam_vit_b_random.pth":
        Path(model).unlink()
        Path(model).parent.rmdir()
    return tracking(out / "screenshot_tracking.png")


def tracking(path: Path) -> int:
    """A 12-plane uint16 stack of two drifting cells, a small random-weight SAM 2 model (``.pt``
    in Meta's layout), one point on plane 5, *Track* both ways, the committed object on plane 9."""
    import numpy as np
    import tifffile
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_sam.model import build_sam, random_state_dict
    from napari_sam.widgets.launch import open_viewer

    folder = Path(tempfile.mkdtemp(prefix="track-shot-"))
    rng = np.random.default_rng(5)
    rr, cc = np.mgrid[:128, :160]
    stack = rng.integers(0, 300, (12, 128, 160)).astype(np.uint16)
    for z in range(12):
        for r, c in ((38, 40 + 2 * z), (90, 120 - 2 * z)):
            stack[z][(rr - r) ** 2 + (cc - c) ** 2 < 18**2] += 2500
    tifffile.imwrite(folder / "cells.tif", stack)
    torch.save({"model": random_state_dict(build_sam("sam2_tiny128_test"), seed=1)}, folder / "sam2_random.pt")
    viewer, widget = open_viewer(str(folder / "cells.tif"), model=str(folder / "sam2_random.pt"), device="cpu")
    viewer.window._qt_window.resize(1400, 860)
    QApplication.processEvents()
    viewer.reset_view()
    if not widget.wait_idle(300):
        print(f"model/embedding not ready: {widget.status_text}")
        return 1
    viewer.dims.set_current_step(0, 5)
    widget.wait_idle(60)
    viewer.layers["SAM points"].add([[38, 50]])
    widget.wait_idle(60)
    if not widget.track(direction="both") or not widget.wait_idle(600):
        print(f"tracking did not run: {widget.status_text}")
        return 1
    print(f"tracked planes: {widget.tracked_planes()}")
    viewer.dims.set_current_step(0, 9)
    widget.wait_idle(30)
    _save(viewer, path)
    viewer.close()
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    return 0


def _save(viewer, path: Path) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    window = viewer.window._qt_window
    for toast in [*QApplication.topLevelWidgets(), *window.findChildren(NapariQtNotification)]:
        if isinstance(toast, NapariQtNotification):  # e.g. napari's own deprecation notice
            toast.close()
            toast.deleteLater()
    QApplication.processEvents()
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(path)


if __name__ == "__main__":
    sys.exit(main())
