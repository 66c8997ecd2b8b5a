"""What a SAM 2 track of the session holds: its objects, their masks through the planes of one
line of the image, their prompts, corrections with undo/redo, and how a commit paints it. Pure
NumPy (the tracker itself is used by :mod:`.track_job`, in a worker).

A *line* is the planes along the through axis through one plane (``(Z, H, W)`` of a stack, the
z-planes of one time point of a ``(T, Z, H, W)`` series); a *frame* is an index along that axis.
Objects are keyed by their label id: committed objects keep theirs, the current (new) object
has key :data:`CURRENT` and gets a new id on commit. Masks are ``(H, W)`` bool per frame;
where objects overlap, the one with the higher predicted IoU on that frame owns the pixel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import count

import numpy as np

from .history import Change, plane_flat

CURRENT = 0  # key of the current (not yet committed) object of a track
DIRECTIONS = ("forward", "backward", "both")
_TOKENS = count(1)


@dataclass
class TrackSettings:
    """``absent_planes``: a track of an object ends after this many consecutive planes where its
    object-present score is at most ``min_object_score`` (a logit: 0 is even odds)."""

    absent_planes: int = 3
    min_object_score: float = 0.0


@dataclass
class TrackedObject:
    """One object of a track: ``label`` (0: the current object, a new id on commit), its masks
    and predicted IoUs per frame, the frames the user prompted (``keyframes``) and the prompts
    given there (``prompts[frame] = (points, positive, shapes, kinds)`` as the view sent them)."""

    label: int
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    keyframes: set[int] = field(default_factory=set)
    prompts: dict[int, tuple] = field(default_factory=dict)

    def put(self, frame: int, mask: np.ndarray | None, score: float = 1.0) -> None:
        """Set (or with None / an empty mask: drop) the object's mask on ``frame``."""
        if mask is None or not np.any(mask):
            self.masks.pop(frame, None)
            self.scores.pop(frame, None)
        else:
            self.masks[frame], self.scores[frame] = np.asarray(mask, bool), float(score)


@dataclass
class Correction:
    """One undo step of a track: object ``key``'s masks on ``frames`` before and after."""

    key: int
    frames: tuple[int, ...]
    before: dict[int, tuple[np.ndarray, float]]
    after: dict[int, tuple[np.ndarray, float]] | None = None
    prompts_before: dict | None = None


@dataclass(eq=False)
class Track:
    """A track through the line of ``plane`` along plane-tuple axis ``axis`` (see module
    docstring). ``identity`` is what it was made for (image, data version, model, axes): it is
    dropped when that changes. ``tracker`` (an :class:`~napari_sam.engine.Tracker`) is touched
    only by the job holding ``lock``; ``propagated`` is False while it is a draft (keyframes only)."""

    plane: tuple[int, ...]
    axis: int
    length: int
    identity: tuple
    direction: str = "both"
    objects: dict[int, TrackedObject] = field(default_factory=dict)
    tracker: object | None = None
    tracker_stale: bool = False  # undo/redo changed masks the tracker's memory does not know
    propagated: bool = False
    done: list[Correction] = field(default_factory=list)
    undone: list[Correction] = field(default_factory=list)
    token: int = field(default_factory=lambda: next(_TOKENS))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plane_at(self, frame: int) -> tuple[int, ...]:
        return self.plane[: self.axis] + (int(frame),) + self.plane[self.axis + 1:]

    def frame_of(self, plane: tuple[int, ...]) -> int | None:
        """The frame of ``plane``, or None when the plane is not on this track's line."""
        plane = tuple(plane)
        if len(plane) != len(self.plane) or plane[: self.axis] + plane[self.axis + 1:] != \
                self.plane[: self.axis] + self.plane[self.axis + 1:]:
            return None
        return int(plane[self.axis])

    def frames(self) -> list[int]:
        """Frames where any object has a mask, in order."""
        return sorted({f for obj in self.objects.values() for f in obj.masks})

    def prompts_on(self, frame: int) -> tuple[int | None, tuple | None]:
        """``(key, prompts)`` of the object prompted on ``frame`` (``(None, None)``: none)."""
        return next(((k, o.prompts[frame]) for k, o in self.objects.items() if frame in o.prompts), (None, None))

    def anchor(self) -> int:
        """The earliest keyframe: tracks start there (backward ones from the latest)."""
        keys = [f for obj in self.objects.values() for f in obj.keyframes]
        return min(keys) if keys else self.plane[self.axis]

    def composite(self, frame: int) -> np.ndarray | None:
        """``(H, W)`` image of object numbers (1 + position in :attr:`objects`) on ``frame``,
        overlaps given to the higher score; None if no object is there."""
        owners = self.owners(frame)
        if owners is None:
            return None
        order = {key: n for n, key in enumerate(self.objects, 1)}
        lut = np.array([0] + [order[k] for k in self.objects], np.uint16 if len(order) > 254 else np.uint8)
        return lut[owners]

    def owners(self, frame: int) -> np.ndarray | None:
        """``(H, W)`` index into ``[0] + keys`` (0: no object) of the pixel owners on ``frame``."""
        present = [(n, obj) for n, obj in enumerate(self.objects.values(), 1) if frame in obj.masks]
        if not present:
            return None
        shape = present[0][1].masks[frame].shape
        best = np.full(shape, -np.inf, np.float32)
        owner = np.zeros(shape, np.int32)
        for n, obj in present:
            better = obj.masks[frame] & (obj.scores[frame] > best)
            owner[better], best[better] = n, obj.scores[frame]
        return owner

    # --- corrections -------------------------------------------------------------------
    def begin_correction(self, key: int, frames) -> Correction:
        obj = self.objects[key]
        frames = tuple(int(f) for f in frames)
        step = Correction(key, frames, snapshot(obj, frames), prompts_before=dict(obj.prompts))
        self.done.append(step)
        self.undone.clear()
        return step

    def undo(self) -> Correction | None:
        """Undo the last correction (its object's masks and prompts as before); None if none."""
        return self._step(self.done, self.undone, undoing=True)

    def redo(self) -> Correction | None:
        return self._step(self.undone, self.done, undoing=False)

    def _step(self, source: list[Correction], dest: list[Correction], undoing: bool) -> Correction | None:
        if not source:
            return None
        step = source.pop()
        obj = self.objects[step.key]
        if undoing:
            step.after = snapshot(obj, step.frames)
        restore(obj, step.before if undoing else step.after or {}, step.frames)
        step.prompts_before, obj.prompts = dict(obj.prompts), dict(step.prompts_before or {})  # swapped each way
        dest.append(step)
        self.tracker_stale = True  # its memory holds the masks before the step
        return step

def snapshot(obj: TrackedObject, frames) -> dict[int, tuple[np.ndarray, float]]:
    return {f: (obj.masks[f], obj.scores[f]) for f in frames if f in obj.masks}


def restore(obj: TrackedObject, saved: dict[int, tuple[np.ndarray, float]], frames=None) -> None:
    for f in list(obj.masks if frames is None else frames):
        if f not in saved:
            obj.put(f, None)
    for f, (mask, score) in saved.items():
        obj.put(f, mask, score)


def beyond(frame: int, length: int, forward: bool) -> range:
    """Frames from ``frame`` (included) to the end of the line in one direction."""
    return range(frame, length) if forward else range(frame, -1, -1)


def plan_track_paint(data: np.ndarray, track: Track, labels_at, overwrite: bool = False) -> Change:
    """What committing ``track`` into ``data`` (the labels) changes: every object through its
    frames, committed objects with their own label id, the current object with the next free
    id; where objects overlap, the higher score wins. Existing labels (other than the object's
    own id) are kept unless ``overwrite``. ``labels_at(plane)`` is a plane's labels index.
    Raises ValueError when the dtype cannot hold the new id."""
    keys = list(track.objects)
    new_id = int(data.max()) + 1 if data.size else 1
    if CURRENT in track.objects and np.issubdtype(data.dtype, np.integer) and new_id > np.iinfo(data.dtype).max:
        raise ValueError(f"label id {new_id} does not fit into the labels' {data.dtype}")
    ids = {key: (new_id if key == CURRENT else key) for key in keys}
    parts: dict[int, list[np.ndarray]] = {key: [] for key in keys}
    for frame in track.frames():
        owners = track.owners(frame)
        at = labels_at(track.plane_at(frame))
        for n, key in enumerate(keys, 1):
            flat = plane_flat(data.shape, owners == n, at)
            if flat.size:
                parts[key].append(flat)
    flats, afters, written = [], [], []
    for key in keys:
        if not parts[key]:
            continue
        flat = np.unique(np.concatenate(parts[key]))
        old = data.flat[flat]
        flat = flat[(old != ids[key]) & ((old == 0) | overwrite)]
        if flat.size:
            flats.append(flat)
            afters.append(np.full(flat.size, ids[key], data.dtype))
            written.append(ids[key])
    if not flats:
        return Change(np.zeros(0, np.int64), np.zeros(0, data.dtype), np.zeros(0, data.dtype), ())
    flat = np.concatenate(flats)
    return Change(flat, data.flat[flat].copy(), np.concatenate(afters), tuple(written))
