"""Open napari with the Segment Anything widget docked (used by the ``napari-sam`` command)."""

from __future__ import annotations

from pathlib import Path

PLUGIN, WIDGET = "napari-sam-annotator", "Segment Anything"
DEFAULT_SAMPLE = "coins"


def open_viewer(image: str | None = None, model: str | None = None, device: str = "auto",
                show: bool = True):
    """A napari viewer showing ``image`` (a file napari can read) or the scikit-image
    ``coins`` sample, with the widget docked. Returns ``(viewer, widget)``.
    With ``model``, that model starts loading right away."""
    import napari

    viewer = napari.Viewer(show=show, title="napari-sam")
    if image is not None:
        layers = viewer.open(str(image))
        name_axes(layers, image)
    else:
        viewer.open_sample(PLUGIN, DEFAULT_SAMPLE)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    fit_soon(viewer)
    if model:
        widget.load_model(model, device)
    return viewer, widget


def name_axes(layers, path) -> None:
    """Give the image layers read from ``path`` the axis names its TIFF metadata has (Z, C, T...)."""
    from ..io.images import axis_names

    axes = axis_names(path)
    for layer in layers or []:
        if axes is None or getattr(layer, "rgb", False) and "S" not in axes:
            continue
        names = [a.lower() for a in axes if a != "S"] if getattr(layer, "rgb", False) else [a.lower() for a in axes]
        if len(names) == layer.ndim:
            layer.axis_labels = tuple(names)


def fit_soon(viewer) -> None:
    """Fit the view once the dock has taken its room (a fit before it crops the image)."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, viewer.reset_view)
    QTimer.singleShot(300, viewer.reset_view)


def launch(image: str | None = None, model: str | None = None, device: str = "auto") -> int:
    """Run napari until its window closes; returns a process exit status."""
    if image is not None and not Path(image).exists():
        print(f"napari-sam: no such file: {image}")
        return 2
    import napari

    try:
        open_viewer(image, model, device)
    except Exception as exc:  # unreadable file, no plugin reader: say so, no traceback
        print(f"napari-sam: could not open {image}: {exc}")
        return 1
    napari.run()
    return 0
