"""The annotation session, without Qt: image and axes, model and embeddings, the current
object, committed labels with undo/redo, and pluggable background jobs (see :mod:`.session`).
The napari view (:mod:`napari_sam.widgets`) draws it and forwards the user's actions."""

from .executor import Executor, Progress, Slots, SyncExecutor, Task
from .history import ArrayLabels, Commit, History, LabelsTarget
from .instances import AutomaticInstances
from .jobs import Job, JobRefused, PlaneMask, Propagation, SegmentEverything
from .objects import Candidate, CurrentObject
from .session import Session, SessionEvents, SessionSettings
from .source import RGB, Axes, ImageSource, Planes, default_axes
from .tasks import EmbeddingKey, LoadedModel

__all__ = [
    "RGB", "ArrayLabels", "AutomaticInstances", "Axes", "Candidate", "Commit", "CurrentObject", "EmbeddingKey",
    "Executor", "History", "ImageSource", "Job", "JobRefused", "LabelsTarget", "LoadedModel", "PlaneMask", "Planes", "Progress",
    "Propagation", "SegmentEverything", "Session", "SessionEvents", "SessionSettings", "Slots", "SyncExecutor", "Task",
    "default_axes",
]
