"""``SamWidget``: the dock widget that drives SAM from napari.

Heavy work (weights, checkpoint, embedding) and decoding run in workers (``jobs``); this
class owns the state and keeps the layers in step. Prompt and mask layers share the placement
of the image's plane, so their data coordinates are its pixel ``(row, col)``; nD images are
segmented plane by plane (``planes``), the committed labels layer has the image's shape.
"""

from __future__ import annotations

import time
from itertools import count
from pathlib import Path
from weakref import WeakKeyDictionary

from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QFileDialog, QWidget

from ..engine import Cancelled, resolve_device
from ..weights import DownloadCancelled
from . import layers as L
from . import work
from .annotation import Annotation
from .everything import Everything
from .jobs import LatestWins, Task, TaskRunner
from .links import Links
from .planes import Planes
from .ui import MODEL_FILE, NEW_LABELS, build_panel

_SERIALS = count(1)


class SamWidget(QWidget):
    """Segment Anything for one napari viewer. Scripting API: :meth:`load_model`,
    :meth:`select_candidate`, :meth:`commit`, :meth:`clear`, :meth:`undo`, :meth:`redo`,
    :meth:`export_labels`, :meth:`segment_everything`, :meth:`wait_idle`."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        # napari hands plugins a PublicOnlyProxy; we compare layers by identity (and touch
        # only public API), so keep the viewer itself.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.ui = build_panel(self)
        self.model: work.LoadedModel | None = None
        self._model_token = 0
        self._model_label = ""
        self._model_source: tuple[str, str] | None = None
        self._labels_pick: str | None = None  # labels layer chosen by the user (or last created)
        self.image: Image | None = None
        self._ids: WeakKeyDictionary = WeakKeyDictionary()  # image layer -> [serial, data version]
        self.embedding: tuple[work.EmbeddingKey, object] | None = None
        self._loader = TaskRunner(self._progress)
        self._embedder = TaskRunner(self._progress)
        self._decoder = LatestWins(work.decode, self._decoded, self._decode_failed)
        self.links = Links(self)
        self.listen, self.defer = self.links.listen, self.links.defer
        self.annotation = Annotation(self)
        self.planes = Planes(self)
        self.everything = Everything(self)
        self._wire()
        self._refresh_choices()
        if self.image is None:
            self.message("No image: open or choose a 2D image layer, then load a model.")

    # --- wiring ----------------------------------------------------------------------
    def _wire(self) -> None:
        ui, events = self.ui, self.viewer.layers.events
        self.listen(events.removed, self._layer_removed)
        self.listen(self.viewer.dims.events.current_step, self.planes.dims_changed)
        for event in (events.inserted, events.removed, events.moved):
            self.listen(event, lambda _: self.defer(self._refresh_choices))
        ui.image.currentIndexChanged.connect(self._image_chosen)
        ui.labels.currentTextChanged.connect(lambda text: setattr(self, "_labels_pick", text))
        ui.load.clicked.connect(self._load_clicked)
        ui.model.activated.connect(self._model_activated)
        ui.device.activated.connect(lambda _: self._model_source is not None and self._load_clicked())
        ui.cancel.clicked.connect(self.cancel)
        ui.commit.clicked.connect(self.commit)
        ui.clear.clicked.connect(self.clear)
        ui.undo.clicked.connect(self.undo)
        ui.redo.clicked.connect(self.redo)
        ui.propagate.clicked.connect(self.propagate)
        ui.export.clicked.connect(self._export_clicked)
        ui.polarity.toggled.connect(lambda on: self.annotation.set_polarity(not on))
        for k, button in enumerate(ui.choose):
            button.clicked.connect(lambda _=False, k=k: self.select_candidate(k))

    # --- messages --------------------------------------------------------------------
    @property
    def status_text(self) -> str:
        return self.ui.status.text()

    def message(self, text: str, warn: bool = False) -> None:
        """Show ``text`` in the status line (and as a napari notification when ``warn``)."""
        self.ui.status.setText(text)
        if warn:
            show_warning(f"Segment Anything: {text}")

    def _progress(self, task: Task, done: int, total: int) -> None:
        if task.label.startswith("downloading") and total:
            self.message(f"{task.label}: {100 * done // total}%")
        elif total:
            self.message(f"{task.label}… {done}/{total}")

    def _busy_changed(self) -> None:
        self.ui.cancel.setEnabled(any(r.current is not None for r in (
            self._loader, self._embedder, self.planes.propagator, self.everything.runner)))

    # --- choosers --------------------------------------------------------------------
    def _refresh_choices(self, event=None) -> None:
        ui = self.ui
        for layer in self.viewer.layers:  # follow renames
            if isinstance(layer, (Image, Labels)) and L.role(layer) in (None, "labels") \
                    and not self.links.listens_to(layer):
                self.listen(layer.events.name, lambda _: self.defer(self._refresh_choices))
        images = [lay for lay in self.viewer.layers if isinstance(lay, Image)]
        names = [lay.name for lay in images]
        current = self.image.name if self.image is not None and self.image in images else None
        ui.image.blockSignals(True)
        ui.image.clear()
        ui.image.addItems(names)
        if current is not None:
            ui.image.setCurrentIndex(names.index(current))
        ui.image.blockSignals(False)
        self.refresh_labels_choice()
        if current is None:
            self._image_chosen()

    def refresh_labels_choice(self) -> None:
        combo = self.ui.labels
        shape = self.labels_shape
        layers = [lay for lay in self.viewer.layers if isinstance(lay, Labels)
                  and L.role(lay) in (None, "labels") and shape is not None and lay.data.shape == shape]
        names = [lay.name for lay in layers]
        ours = [lay.name for lay in layers if L.role(lay) == "labels"]
        pick = self._labels_pick
        if pick not in names and pick != NEW_LABELS:  # default: our labels layer of this image
            pick = ours[-1] if ours else NEW_LABELS
        combo.blockSignals(True)
        combo.clear()
        combo.addItems([NEW_LABELS, *names])
        combo.setCurrentText(pick)
        combo.blockSignals(False)

    def _image_chosen(self, *_) -> None:
        name = self.ui.image.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        self.set_image(layer if isinstance(layer, Image) else None)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the chosen image's planes (None without an image or if multiscale)."""
        if self.image is None or self.image.multiscale:
            return None
        shape = self.image.data.shape
        return tuple(int(s) for s in (shape[-3:-1] if self.image.rgb else shape[-2:]))

    @property
    def labels_shape(self) -> tuple[int, ...] | None:
        """Shape of the committed labels: the image's, without the colour axis."""
        if self.image_shape is None:
            return None
        shape = self.image.data.shape
        return tuple(int(s) for s in (shape[:-1] if self.image.rgb else shape))

    def set_image(self, layer: Image | None) -> None:
        """Segment ``layer`` (a 2D gray or RGB Image layer) from now on."""
        if layer is self.image:
            return
        if self.image is not None:
            self.links.unlisten(self.image.events.data, self._image_data_changed)
        self._embedder.cancel()
        self.embedding = None
        self.annotation.reset_object(clear_prompts=True)
        self.image = layer
        if layer is not None:
            self.listen(layer.events.data, self._image_data_changed)
            if self.ui.image.currentText() != layer.name:
                self.ui.image.blockSignals(True)
                self.ui.image.setCurrentText(layer.name)
                self.ui.image.blockSignals(False)
        self.refresh_labels_choice()
        if layer is None:
            self.message("No image: open or choose a 2D image layer.")
        elif self.image_shape is None:
            self.message(f"'{layer.name}' is a multiscale image: choose a single-scale image "
                         "(large planes are tiled automatically).", warn=True)
        else:
            self.planes.dims_seen()
            self.annotation.ensure_prompt_layers()
            if self.model is None and self._loader.current is None:
                self.message(f"Image '{layer.name}': press 'Load model' to start "
                             "(official weights are downloaded once).")
            self.start_embedding()
        self._busy_changed()

    def _image_data_changed(self, event=None) -> None:
        if self.image is None:
            return
        self._identity(self.image)[1] += 1
        self.embedding = None
        self.annotation.drop_candidates()
        self.refresh_labels_choice()
        if self.image_shape is None:
            self.message(f"'{self.image.name}' is now multiscale: choose a single-scale image.", warn=True)
        self.start_embedding()

    def _layer_removed(self, event) -> None:
        layer = event.value
        if layer is self.image:
            self.set_image(None)
            self.message(f"Image '{layer.name}' was removed; work on it was stopped.")
            self.warn_soon(f"Image '{layer.name}' was removed; work on it was stopped.")
        self.annotation.layer_removed(layer)
        self.links.forget(layer)

    # --- model -----------------------------------------------------------------------
    def _model_activated(self, index: int) -> None:
        if self.ui.model.itemData(index) is None:  # "Checkpoint file (.pth)…"
            path, _ = QFileDialog.getOpenFileName(self, "SAM checkpoint", "", "PyTorch checkpoint (*.pth *.pt)")
            if not path:
                return
            self._show_choice(path, self.ui.device.currentText())
        self._load_clicked()

    def _load_clicked(self, *_) -> None:
        source = (self.ui.model.currentData() or self.ui.model.currentText(), self.ui.device.currentText())
        if self.model is not None and source == self._model_source and self.embedding is None:
            self.start_embedding()  # same model (e.g. after Cancel): just embed again
        else:
            self.load_model(*source)

    def load_model(self, name_or_path, device: str = "auto") -> None:
        """Load ``vit_b``/``vit_l``/``vit_h`` (downloaded if needed) or a ``.pth`` file, in the
        background. The chosen image is embedded when it is ready (see :meth:`wait_idle`)."""
        try:
            resolve_device(device)
        except ValueError as exc:
            self.message(str(exc), warn=True)
            return
        if self.links.pending:  # a layer was just added (scripts): adopt it now, not later
            self._refresh_choices()
        self._loader.cancel()
        self._embedder.cancel()
        self.model, self.embedding = None, None
        self.annotation.drop_candidates()
        self._model_token += 1
        text = str(name_or_path)
        self._model_source = (text, device)
        self._show_choice(text, device)
        self._model_label = Path(text).name if Path(text).suffix else text
        label = f"loading {self._model_label}" if Path(text).is_file() else f"downloading {text}"
        self.message(f"{label}…")
        self._loader.start(label, self._model_token, work.load(text, device), 0, self._loaded, self._task_failed)
        self._busy_changed()

    def _show_choice(self, model: str, device: str) -> None:
        """Make the model/device combos show what is being loaded."""
        combo = self.ui.model
        if combo.findData(model) < 0:
            combo.insertItem(combo.findText(MODEL_FILE), Path(model).name, model)
            combo.setItemData(combo.findData(model), model, Qt.ToolTipRole)
        combo.setCurrentIndex(combo.findData(model))
        if self.ui.device.findText(device) >= 0:
            self.ui.device.setCurrentIndex(self.ui.device.findText(device))

    def _loaded(self, task: Task, predictor) -> None:
        if task.key != self._model_token:
            return
        self.model = work.LoadedModel(predictor, self._model_token, self._model_label)
        self.message(f"Model {self._model_label} ready on {predictor.device}.")
        self.start_embedding()
        self._busy_changed()

    # --- embedding -------------------------------------------------------------------
    def current_key(self) -> work.EmbeddingKey | None:
        if self.image is None or self.model is None:
            return None
        serial, version = self._identity(self.image)
        return work.EmbeddingKey(serial, version, self.model.token, self.planes.current())

    def _identity(self, layer: Image) -> list[int]:
        """``[serial, data version]`` of an image layer (serials are never reused)."""
        if layer not in self._ids:
            self._ids[layer] = [next(_SERIALS), 0]
        return self._ids[layer]

    def start_embedding(self) -> None:
        """Embed the plane on screen in the background unless it is ready; tiled planes are
        ready at once (their tiles are embedded when a prompt needs them)."""
        key, shape = self.current_key(), self.image_shape
        if key is None or shape is None or (self.embedding is not None and self.embedding[0] == key):
            return
        layer = self.image
        try:
            vol = self.planes.volume_for(key)
        except (ValueError, OSError) as exc:
            self.message(f"Cannot segment '{layer.name}': {exc}", warn=True)
            return
        self._embedder.cancel()
        item = self.planes.item(key.plane)
        cached = vol.cached(item)
        if vol.layout is not None or cached is not None:
            self._embedded(Task("embedding", key), cached)
            return
        where = f" plane {key.plane}" if key.plane else ""
        self._embedder.start(f"embedding {layer.name}{where}", key, work.embed(self.model, vol, item),
                             self.model.encoder_steps(), self._embedded, self._task_failed)
        self.message(f"embedding {layer.name}{where}…")
        self._busy_changed()

    def _embedded(self, task: Task, embedding) -> None:
        if task.key != self.current_key():
            return  # computed for another image, data version or model: never applied
        self.embedding = (task.key, embedding)
        note = self.planes.note()  # tiles, channel, store and contrast limits in use
        self.message(f"Ready: click on '{self.image.name}' to segment (model {self.model.label}){note}.")
        self._busy_changed()
        self.annotation.request_decode()
        self.planes.prefetch()

    def _task_failed(self, task: Task, exc: BaseException) -> None:
        if isinstance(exc, (Cancelled, DownloadCancelled)):
            self.message(f"{task.label} cancelled.")
        else:
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.message(f"{task.label} failed: {text[:400]}", warn=True)
        self._busy_changed()

    def cancel(self) -> None:
        """Stop loading/embedding; the partial work is discarded."""
        self.planes.prefetcher.cancel()
        stopped = [t for t in (self._loader.cancel(), self._embedder.cancel(), self.planes.propagator.cancel(),
                               self.everything.runner.cancel()) if t is not None]
        if stopped:
            self.message(f"{stopped[-1].label} cancelled.")
        self._busy_changed()

    # --- decoding --------------------------------------------------------------------
    def submit_decode(self, request: work.DecodeRequest) -> None:
        self._decoder.submit(request)

    def drop_pending_decode(self) -> None:
        self._decoder.drop_pending()

    def _decoded(self, request: work.DecodeRequest, candidates) -> None:
        self.annotation.decoded(request, candidates)

    def _decode_failed(self, request: work.DecodeRequest, exc: BaseException) -> None:
        if request.generation == self.annotation.generation:
            self.message(f"decoding failed: {exc}", warn=True)

    # --- scripting API ---------------------------------------------------------------
    def select_candidate(self, i: int) -> bool:
        """Choose candidate ``i`` (0-based rank, = ``metadata["napari_sam"]["index"]``)."""
        return self.annotation.select(i)

    def commit(self) -> bool:
        """Write the chosen candidate into the labels layer with a new id."""
        return self.annotation.commit()

    def clear(self) -> None:
        """Drop the current object's prompts and candidates."""
        self.annotation.clear()

    def undo(self) -> bool:
        return self.annotation.undo()

    def open_embedding_store(self, path) -> None:
        """Reuse embeddings precomputed by ``napari-sam embed`` (a zarr store) for the image, with
        the store's contrast limits; one made for other pixels or model is refused with a message."""
        if self.planes.open_store(path):  # False (and a message): no image, or not a store
            self.embedding = None
            self.start_embedding()

    def propagate(self) -> bool:
        """Segment the current object on the next and previous planes of a stack (background);
        :meth:`commit` then writes it through all of them with one id."""
        return self.planes.propagate()

    def redo(self) -> bool:
        return self.annotation.redo()

    def segment_everything(self, **params) -> bool:
        """Find all objects on the plane on screen into a new ``SAM everything`` labels layer
        (background; ``generate_masks`` keywords override the panel's). False if impossible."""
        return self.everything.start(**params)

    def export_labels(self, path) -> Path | None:
        """Write the committed labels to a TIFF at ``path``; None (and a message) if nothing."""
        return self.annotation.export(path)

    def _export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.tif", "TIFF (*.tif *.tiff)")
        if path:
            self.export_labels(path)

    @property
    def busy(self) -> bool:
        return (bool(self.links.pending) or self._loader.busy or self._embedder.busy or self._decoder.busy
                or self.planes.busy or self.everything.runner.busy)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Process Qt events until no worker runs (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        app = QApplication.instance()
        while True:
            app.processEvents()
            if not self.busy:
                app.processEvents()
                if not self.busy:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self._loader.cancel()
        self._embedder.cancel()
        self.planes.cancel()
        self.everything.runner.cancel()
        super().closeEvent(event)

    def warn_soon(self, text: str) -> None:
        """A notification once napari is done with the current change, unless the viewer
        is closing (the widget is gone or all layers were removed)."""
        self.defer(lambda: len(self.viewer.layers) and show_warning(f"Segment Anything: {text}"))
