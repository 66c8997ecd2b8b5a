"""The annotation session: everything the annotator knows and does, without Qt or layers.

It owns the image source and its axes choice, the plane on screen, the model and the
embeddings, the current object (prompts, candidates, chosen candidate, masks on other planes),
the committed labels with undo/redo, and the jobs. It takes commands (:meth:`set_image`,
:meth:`set_position`, :meth:`set_axes`, :meth:`load_model`, :meth:`set_prompts`, :meth:`select`,
:meth:`commit`, :meth:`clear`, :meth:`undo`, :meth:`redo`, :meth:`propagate`,
:meth:`segment_everything`, :meth:`segment_instances`, :meth:`run_job`, ...), runs heavy work through the executor it is
given (:mod:`.executor`), and announces changes through :attr:`Session.events` (psygnal). Call
it from one thread (napari's GUI thread); results come back there.

Coordinates are the image's pixel ``(row, col)`` on a plane (see :mod:`.source` for planes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from psygnal import Signal, SignalGroup

from ..engine import Cancelled, GeneratorSettings
from . import tasks
from .commits import CommittedLabels, Outcome
from .embedding_commands import EmbeddingCommands
from .embeddings import Embeddings, first_line
from .executor import Executor, Slots, SyncExecutor, Task
from .instances import AutomaticInstances, check_scope, instance_params
from .jobs import AUTO_POINTS, Job, JobRefused, Propagation, SegmentEverything
from .object_commands import ObjectCommands
from .objects import CurrentObject
from .source import Axes, ImageSource, Planes, checked_axes, default_axes
from .tracking import TrackSettings
from .tracking_commands import TrackingCommands

_UNCHANGED = object()
NO_IMAGE = "No image: open or choose a 2D image layer, then load a model."
FOREGROUND = ("load", "embed", "job")  # slots whose tasks the user waits for (and can cancel)


class SessionEvents(SignalGroup):
    status = Signal(str, bool)  # text, warn (also worth a notification)
    busy = Signal(bool)  # a job the user can cancel runs (loading, embedding, propagating, ...)
    progress = Signal(str, int, int)  # label, done, total
    image = Signal()  # the image, its data or its axes choice changed
    model = Signal()  # a model started loading or is ready
    candidates = Signal()  # the candidates were replaced or dropped
    chosen = Signal(int)  # the chosen candidate
    object_planes = Signal(object)  # labels indices whose masks changed (() : all were dropped)
    prompts_cleared = Signal()  # the current object's prompts are gone (the view empties its layers)
    prompts_restored = Signal(object)  # (points, positive, shapes, kinds) kept for the plane arrived at (tracking)
    polarity = Signal(bool)  # True: plain clicks add positive points
    labels = Signal(object, object)  # target, flat indices written (commit, undo, redo)
    new_labels = Signal(str, object)  # name, label image of a job (for a new layer)
    instances = Signal(str, object, object)  # name, label image, info of automatic instances (see .instances)


@dataclass
class SessionSettings:
    prefetch_radius: int = 2
    propagation: dict = field(default_factory=lambda: {"min_score": 0.5, "min_overlap": 0.1, "min_area": 10})
    everything: GeneratorSettings = field(default_factory=lambda: GeneratorSettings(points_per_side=0))  # 0: auto
    tracking: TrackSettings = field(default_factory=TrackSettings)
    instances: dict = field(default_factory=dict)  # segment_instances keywords (missing or None: the model's)


class Session(TrackingCommands, EmbeddingCommands, ObjectCommands):
    """See the module docstring; commands are also in :mod:`.embedding_commands`,
    :mod:`.object_commands` and :mod:`.tracking_commands`."""

    def __init__(self, executor: Executor | None = None) -> None:
        self.events = SessionEvents()
        self.settings = SessionSettings()
        self.slots = Slots(executor or SyncExecutor(), self._slots_changed)
        self.urgent = tasks.UrgentWork()
        self.embeddings = Embeddings()
        self.labels = CommittedLabels(lambda target, flat: self.events.labels.emit(target, flat))
        self.image: ImageSource | None = None
        self.axes = Axes()
        self.position: tuple[int, ...] = ()  # full leading index on screen
        self.plane: tuple[int, ...] = ()
        self.model: tasks.LoadedModel | None = None
        self.model_source: tuple[str, str] | None = None
        self._model_token = 0
        self.embedding: tuple[tasks.EmbeddingKey, object] | None = None
        self.object = CurrentObject()
        self.positive = True
        self._prompts = (np.zeros((0, 2)), np.ones(0, bool), [], [])
        self._notes = ""
        self._busy = False
        self.status_text = NO_IMAGE
        self._init_tracking()

    # --- state -----------------------------------------------------------------------
    @property
    def planes(self) -> Planes | None:
        return Planes(self.image, self.axes) if self.image is not None else None

    @property
    def volume(self):
        return self.embeddings.volume

    @property
    def history(self):
        return self.labels.history

    @property
    def busy(self) -> bool:
        """Any task submitted and not finished (prefetch and decoding included)."""
        return self.slots.busy

    @property
    def propagated(self) -> dict | None:
        """The object through planes ``{labels index: mask}`` (its own plane included), if any."""
        cand, planes = self.object.chosen_candidate, self.planes
        if not self.object.planes or cand is None or planes is None:
            return None
        return {planes.labels_at(self.object.plane): cand.mask > 0, **{at: m > 0 for at, m in self.object.planes.items()}}

    def message(self, text: str, warn: bool = False) -> None:
        self.status_text = text
        self.events.status.emit(text, warn)

    def _say(self, outcome: Outcome) -> bool:
        self.message(outcome.text, outcome.warn)
        return outcome.ok

    def current_key(self) -> tasks.EmbeddingKey | None:
        src = self.image
        if src is None or self.model is None or src.plane_shape is None:
            return None
        return tasks.EmbeddingKey(src.serial, src.version, self.model.token, self.plane)

    def job_key(self):
        return self.current_key(), self.object.generation

    def _slots_changed(self) -> None:
        busy = self.slots.running(*FOREGROUND)
        if busy != self._busy:
            self._busy = busy
            self.events.busy.emit(busy)

    # --- image, plane, axes ----------------------------------------------------------
    def set_image(self, source: ImageSource | None, position: tuple[int, ...] | None = None) -> None:
        """Segment ``source`` from now on (None: no image), shown at leading index ``position``."""
        if source is self.image:
            return
        self.slots.cancel("embed")
        self.slots.cancel("prefetch")
        self.embedding = None
        self.reset_object(clear_prompts=True)
        self.image = source
        self.axes = default_axes(source) if source is not None else Axes()
        lead = source.lead_shape if source is not None else ()
        self.position = tuple(position) if position is not None and len(position) == len(lead) else (0,) * len(lead)
        self.plane = self.planes.plane_of(self.position) if source is not None else ()
        if source is None:
            self.message(NO_IMAGE)
        elif source.plane_shape is None:
            self.message(f"'{source.name}' is a multiscale image: choose a single-scale image "
                         "(large planes are tiled automatically).", warn=True)
        else:
            if self.model is None and not self.slots.running("load"):
                self.message(f"Image '{source.name}': press 'Load model' to start (official weights are "
                             "downloaded once).")
            self.start_embedding()
        self.events.image.emit()

    def image_changed(self) -> None:
        """The source's data (or what SAM sees of it) changed: embed again."""
        if self.image is None:
            return
        self.image.version += 1
        self.embedding = None
        self.drop_candidates()
        try:
            self.axes = checked_axes(self.image, self.axes)
        except ValueError:  # the data changed shape under the choice
            self.axes = default_axes(self.image)
        if len(self.position) != len(self.image.lead_shape):
            self.position = (0,) * len(self.image.lead_shape)
        self.plane = self.planes.plane_of(np.minimum(self.position, np.maximum(self.image.lead_shape, 1) - 1))
        if self.image.plane_shape is None:
            self.message(f"'{self.image.name}' is now multiscale: choose a single-scale image.", warn=True)
        self.start_embedding()
        self.events.image.emit()

    def set_position(self, index: tuple[int, ...]) -> None:
        """The viewer shows leading index ``index`` of the image; the object belongs to its plane."""
        if self.image is None:
            return
        self.position = tuple(int(i) for i in index)
        plane = self.planes.plane_of(self.position)
        if plane == self.plane:
            return
        self.leaving_plane()
        self.plane = plane
        self.slots.cancel("prefetch")
        self.reset_object(clear_prompts=True)
        self.arrived_on_plane()
        self.embedding = None
        self.start_embedding()

    def set_axes(self, channel_axis=_UNCHANGED, channel=_UNCHANGED, through=_UNCHANGED) -> None:
        """Segment ``channel`` (an index or ``"rgb"``) of leading axis ``channel_axis`` (None: no
        channel axis); prefetch and propagate along leading axis ``through`` (None: default)."""
        if self.image is None:
            raise ValueError("no image: choose an image before its axes")
        old = self.axes
        k = old.channel_axis if channel_axis is _UNCHANGED else channel_axis
        c = (old.channel if k == old.channel_axis else 0) if channel is _UNCHANGED else channel
        t = old.through if through is _UNCHANGED else through
        new = checked_axes(self.image, Axes(k, c, None if t == k else t))
        if new == old:
            return
        self.axes = new
        if (new.channel_axis, new.channel) != (old.channel_axis, old.channel):
            self.slots.cancel("prefetch")
            self.slots.cancel("job")
            self.image_changed()  # what SAM sees changed: a new version
        else:
            self.slots.cancel("prefetch")
            self.prefetch()
            self.events.image.emit()

    def set_channel(self, axis: int | None, channel: int | str = 0) -> None:
        self.set_axes(channel_axis=axis, channel=channel)

    def set_through(self, axis: int | None) -> None:
        self.set_axes(through=axis)

    # --- work ------------------------------------------------------------------------
    def _progress(self, task: Task, done: int, total: int) -> None:
        if task.label.startswith("downloading") and total:
            self.message(f"{task.label}: {100 * done // total}%")
        elif total:
            self.message(f"{task.label}… {done}/{total}")
        self.events.progress.emit(task.label, done, total)

    def _task_failed(self, task: Task, exc: BaseException) -> None:
        self._report_store_problems()
        if isinstance(exc, Cancelled):
            self.message(f"{task.label} cancelled.")
        else:
            self.message(f"{task.label} failed: {first_line(exc)}", warn=True)

    def cancel(self) -> None:
        """Stop loading, embedding and the running job; their partial work is discarded."""
        self.slots.cancel("prefetch")
        stopped = [t for t in (self.slots.cancel(s) for s in FOREGROUND) if t is not None]
        if stopped:
            self.message(f"{stopped[-1].label} cancelled.")

    def run_job(self, job: Job, starting: str | None = None) -> bool:
        """Run ``job`` in the background (see :mod:`.jobs`), saying ``starting`` first; False (and
        a message) if it cannot run."""
        try:
            fn, total = job.prepare(self)
        except JobRefused as exc:
            self.message(str(exc), warn=True)
            return False
        if starting:
            self.message(starting)

        def failed(task, exc):
            job.on_error(self, task, exc)
            self._task_failed(task, exc)

        self.slots.start(job.slot, Task(job.label, job.task_key(self), fn, total),
                         lambda t, r: job.on_result(self, t, r), failed,
                         on_yield=lambda t, item: job.on_yield(self, t, item), on_progress=self._progress)
        return True

    def propagate(self) -> bool:
        """The current object on the next and previous planes of a stack (background); a commit
        then writes it through all of them with one id."""
        return self.run_job(Propagation(), "propagating…")

    def everything_params(self, **overrides) -> dict:
        """Segment-everything keywords: the settings with ``overrides`` (``generate_masks``
        names; unknown ones raise TypeError), points per side 0 (auto) resolved for the device."""
        params = self.settings.everything.with_values(**overrides).keywords()
        if not params["points_per_side"]:
            device = self.model.device.type if self.model is not None else "cpu"
            params["points_per_side"] = AUTO_POINTS.get(device, 32)
        return params

    def segment_everything(self, **overrides) -> bool:
        """All objects on the plane on screen into a new label image (``new_labels`` event)."""
        return self.run_job(SegmentEverything(self.everything_params(**overrides)))

    def instance_params(self, **overrides) -> dict:
        """Automatic-instances keywords: the model's defaults, then the settings, then
        ``overrides`` (``segment_instances`` names; unknown ones raise TypeError)."""
        return instance_params(self.model.decoder if self.model else None, self.settings.instances, overrides)

    def segment_instances(self, scope: str = "plane", **overrides) -> bool:
        """The model's instance decoder on the plane on screen (``scope="plane"``) or every plane
        of the stack through it (``"stack"``, merged across planes) into a new label image
        (``instances`` event; committed labels untouched). False (and a message) if it cannot run."""
        return self.run_job(AutomaticInstances(check_scope(scope), self.instance_params(**overrides)))
