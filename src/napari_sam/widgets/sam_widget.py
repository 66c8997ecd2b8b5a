"""``SamWidget``: the dock widget, a thin view of an annotation session.

All annotation logic is in :class:`napari_sam.annotator.Session` (:attr:`SamWidget.session`);
this widget builds the panel (:mod:`.ui`), keeps our layers (:mod:`.sync`) and the choosers
(:mod:`.choosers`) in step with it, runs its work in napari workers (:mod:`.executor`) and
forwards buttons, keys and dialogs. The scripting API of earlier versions delegates to it.
"""

from __future__ import annotations

from pathlib import Path

from napari.layers import Image
from napari.utils import notifications
from qtpy.QtWidgets import QApplication, QFileDialog, QWidget

from ..annotator import Session
from .choosers import Choosers
from .compat import SessionPlanes
from .executor import NapariExecutor
from .instances_view import InstancesView
from .links import Links, process_until
from .panel_view import PanelView
from .sync import LayerSync
from .track_panel import TrackPanel
from .ui import ScrollingPanel, build_panel


class SamWidget(QWidget):
    """Segment Anything for one napari viewer. Scripting API: :meth:`load_model`,
    :meth:`select_candidate`, :meth:`commit`, :meth:`clear`, :meth:`undo`, :meth:`redo`,
    :meth:`export_labels`, :meth:`segment_everything`, :meth:`segment_instances`, :meth:`propagate`,
    :meth:`track`, :meth:`tracked_planes`, :meth:`open_embedding_store`, :meth:`wait_idle`; :attr:`session` for the rest."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        # napari hands plugins a PublicOnlyProxy; we compare layers by identity (and touch
        # only public API), so keep the viewer itself.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        inner = QWidget()
        self.ui = build_panel(inner)
        self.scroll = ScrollingPanel(inner, self)
        self.executor = NapariExecutor()
        self.session = Session(self.executor)
        self.links = Links(self)
        self.sync = LayerSync(self.viewer, self.session, self.links)
        self.choosers = Choosers(self.ui, self.viewer, self.session, self.sync, self.links)
        self.panel = PanelView(self.ui, self.session)
        self.instances = InstancesView(self.ui.instances, self.session, self.viewer, self.sync, self.links)
        self.track_panel = TrackPanel(self.ui, self.session, inner.layout(), lambda: self.links.defer(self.refocus))
        self._refocus_target = None
        self._wire()
        self.choosers.refresh()
        if self.session.image is None:
            self.ui.status.setText(self.session.status_text)

    # --- wiring ----------------------------------------------------------------------
    def _wire(self) -> None:
        ui, s, events = self.ui, self.session, self.viewer.layers.events
        s.events.model.connect(lambda: s.model_source and self.choosers.show_model(*s.model_source))
        s.events.new_labels.connect(lambda *_: setattr(self.choosers, "labels_pick", ui.labels.currentText()))
        self.sync.on_target = self.choosers.target_created
        self.links.listen(events.removed, self._layer_removed)
        for event in (events.inserted, events.removed, events.moved):
            self.links.listen(event, lambda _: self.links.defer(self.choosers.refresh))
        QApplication.instance().focusChanged.connect(self._focus_changed)
        ui.load.clicked.connect(self._load_clicked)
        ui.model.activated.connect(self._model_activated)
        ui.device.activated.connect(lambda _: s.model_source is not None and self._load_clicked())
        ui.cancel.clicked.connect(self.cancel)
        ui.commit.clicked.connect(self.commit)
        ui.clear.clicked.connect(self.clear)
        ui.undo.clicked.connect(self.undo)
        ui.redo.clicked.connect(self.redo)
        ui.export.clicked.connect(self._export_clicked)
        ui.open_store.clicked.connect(self._open_store_clicked)
        ui.everything.run.clicked.connect(lambda _=False: self.segment_everything())
        ui.overwrite.toggled.connect(lambda on: setattr(s.labels, "overwrite", bool(on)))
        ui.polarity.toggled.connect(lambda on: s.set_polarity(not on))
        for k, button in enumerate(ui.choose):
            button.clicked.connect(lambda _=False, k=k: self.select_candidate(k))
        for combo in (ui.image, ui.labels, ui.model, ui.device, ui.channel_axis, ui.channel, ui.through, ui.instances.scope):
            combo.activated.connect(lambda _: self.links.defer(self.refocus))
        for button in [*ui.choose, ui.load, ui.cancel, ui.commit, ui.clear, ui.undo, ui.redo, ui.propagate,
                       ui.export, ui.open_store, ui.polarity, ui.everything.run, ui.everything.toggle, ui.overwrite,
                       ui.instances.run, ui.instances.toggle]:
            button.clicked.connect(lambda *_: self.links.defer(self.refocus))  # Qt gives a click's focus to the window

    def _focus_changed(self, old, new) -> None:
        if new is not None and new.window() is self.window() and not self.isAncestorOf(new) \
                and not new.isAncestorOf(self):
            self._refocus_target = new  # where the user works (the canvas): keys go there

    def refocus(self) -> None:
        """Give the keyboard focus back to where it was before our controls took it."""
        target = self._refocus_target
        if target is not None and self.isVisible():
            try:
                target.setFocus()
            except RuntimeError:  # deleted meanwhile
                self._refocus_target = None
        self.sync.focus_points()

    def _layer_removed(self, event) -> None:
        layer = event.value
        if layer is self.choosers.layer:
            self.choosers.choose(None)
            self.message(f"Image '{layer.name}' was removed; work on it was stopped.")
            self.warn_soon(f"Image '{layer.name}' was removed; work on it was stopped.")
        text = self.sync.layer_removed(layer)
        if text:
            self.message(text)
            self.warn_soon(text)
        self.links.forget(layer)

    # --- messages --------------------------------------------------------------------
    @property
    def status_text(self) -> str:
        return self.ui.status.full_text()

    def message(self, text: str, warn: bool = False) -> None:
        """Show ``text`` in the status line (and as a napari notification when ``warn``)."""
        self.session.message(text, warn)

    def warn_soon(self, text: str) -> None:
        """A notification once napari is done with the current change, unless the viewer is closing."""
        self.links.defer(lambda: len(self.viewer.layers) and notifications.show_warning(f"Segment Anything: {text}"))

    # --- state of earlier versions ---------------------------------------------------
    image = property(lambda self: self.choosers.layer, doc="The image layer being segmented.")
    model = property(lambda self: self.session.model)
    embedding = property(lambda self: self.session.embedding)
    current_key = property(lambda self: self.session.current_key)
    image_shape = property(lambda self: self.session.image.plane_shape if self.session.image else None)
    labels_shape = property(lambda self: self.session.image.labels_shape if self.session.image else None)
    planes = property(lambda self: SessionPlanes(self.session), doc="Issue 5's ``w.planes.axes.set_*`` (the session).")

    def set_image(self, layer: Image | None) -> None:
        """Segment ``layer`` (an Image layer; None: none)."""
        self.choosers.choose(layer)

    # --- model -----------------------------------------------------------------------
    def _model_activated(self, index: int) -> None:
        if self.ui.model.itemData(index) is None:  # "Checkpoint file (.pth)…"
            path, _ = QFileDialog.getOpenFileName(self, "SAM checkpoint", "", "PyTorch checkpoint (*.pth *.pt)")
            if not path:
                return
            self.choosers.show_model(path, self.ui.device.currentText())
        self._load_clicked()

    def _load_clicked(self, *_) -> None:
        source, s = self.choosers.source_choice(), self.session
        if s.model is not None and source == s.model_source and s.embedding is None:
            s.start_embedding()  # same model (e.g. after Cancel): just embed again
        else:
            self.load_model(*source)

    def load_model(self, name_or_path, device: str = "auto") -> None:
        """Load ``vit_b``/``vit_l``/``vit_h`` (downloaded if needed) or a ``.pth`` file, in the
        background. The chosen image is embedded when it is ready (see :meth:`wait_idle`)."""
        if self.links.pending:  # a layer was just added (scripts): adopt it now, not later
            self.choosers.refresh()
        self.session.load_model(name_or_path, device)

    # --- scripting API ---------------------------------------------------------------
    def select_candidate(self, i: int) -> bool:
        """Choose candidate ``i`` (0-based rank, = ``metadata["napari_sam"]["index"]``)."""
        return self.session.select(i)

    def commit(self) -> bool:
        """Write the chosen candidate into the labels layer with a new id."""
        return self.session.commit()

    def clear(self) -> None:
        """Drop the current object's prompts and candidates."""
        self.session.clear()

    def undo(self) -> bool:
        return self.session.undo(self.sync.exists)

    def redo(self) -> bool:
        return self.session.redo(self.sync.exists)

    def cancel(self) -> None:
        """Stop loading, embedding and the running job; the partial work is discarded."""
        self.session.cancel()

    def propagate(self) -> bool:
        """Segment the current object on the next and previous planes of a stack (background);
        :meth:`commit` then writes it through all of them with one id."""
        return self.session.propagate()

    def track(self, direction: str = "both", objects=None) -> bool:
        """SAM 2: track the current object and committed label ids ``objects`` of this plane (see
        :meth:`Session.track`); True when the job started. :meth:`commit` writes them all."""
        return self.session.track(direction, objects)

    def tracked_planes(self) -> list[int]:  # plane indices along the through axis with a tracked mask
        return self.session.tracked_planes()

    def segment_everything(self, **params) -> bool:
        """Find all objects on the plane on screen into a new ``SAM everything`` labels layer
        (background; ``generate_masks`` keywords override the panel's). False if impossible."""
        self.session.settings.everything = self.session.settings.everything.with_values(**self.ui.everything.values())
        return self.session.segment_everything(**params)

    def segment_instances(self, scope: str = "plane", **params) -> bool:
        """Automatic instances (the model's decoder) on the plane on screen or the whole ``"stack"``
        into a new ``SAM instances`` labels layer (background; ``params`` override the panel's)."""
        return self.instances.run(scope, **params)

    def open_embedding_store(self, path) -> bool:
        """Reuse embeddings precomputed by ``napari-sam embed`` (a zarr store) for the image, with
        the store's contrast limits; one made for other pixels or model is refused with a message."""
        if self.links.pending:  # an image was just added (scripts): adopt it now
            self.choosers.refresh()
        return self.session.open_store(path)

    def export_labels(self, path) -> Path | None:
        """Write the committed labels to a TIFF at ``path``; None (and a message) if nothing."""
        return self.session.export(path)

    def _export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.tif", "TIFF (*.tif *.tiff)")
        if path:
            self.export_labels(path)
        self.refocus()

    def _open_store_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open embedding store (a .zarr folder made by napari-sam embed)")
        if path:
            self.open_embedding_store(path)
        self.refocus()

    @property
    def busy(self) -> bool:
        return bool(self.links.pending) or self.session.busy

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Process Qt events until no worker runs (True) or ``timeout`` seconds pass (False)."""
        return process_until(lambda: not self.busy, timeout)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self.session.cancel()
        self.session.cancel_prefetch()
        self.executor.close()
        super().closeEvent(event)

