"""The SAM 2 tracking job: a :class:`~.tracking.Track`'s prompts go to a
:class:`~napari_sam.engine.Tracker` and its objects are propagated plane by plane in a worker,
each plane delivered as it comes (so the plane on screen updates live), with per-call cancel.

The worker touches only the track's tracker (holding the track's lock, so a newer job waits
for a cancelled one to stop); the masks are stored on the session's thread
(:meth:`TrackJob.on_yield`). A track of an object ends in one direction where its
object-present score says it left for :attr:`~.tracking.TrackSettings.absent_planes`
consecutive planes, or at the end of the line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..engine import Cancelled, Tracker, VolumeLine
from .executor import Progress
from .jobs import Job
from .tracking import Track, TrackSettings

LOCK_POLL_S = 0.05


@dataclass(frozen=True)
class Run:
    """One propagation: from frame ``start`` forward (or ``reverse``), objects ``keys`` (None: all)."""

    start: int
    reverse: bool
    keys: tuple | None = None

    def length(self, frames: int) -> int:
        return self.start + 1 if self.reverse else frames - self.start


@dataclass(frozen=True)
class TrackedPlane:
    """Objects on one frame: ``masks[key]`` (None: absent there), predicted IoU ``scores``."""

    frame: int
    masks: dict
    scores: dict


@dataclass(frozen=True)
class TrackSummary:
    planes: int
    ended: tuple[tuple[int, int, bool], ...]  # (key, frame, reverse) where an object's track ended


class TrackJob(Job):
    """Prompts (``(frame, key, keywords of Tracker.add_prompt)``, in order) then ``runs``; a new
    tracker first when ``fresh``. ``what`` names the job in messages. A mask given as a prompt
    stays the object's mask on its frame (the tracker's output there is its low-res copy)."""

    label = "tracking"

    def __init__(self, track: Track, prompts: list, runs: list[Run], fresh: bool, what: str = "tracking") -> None:
        self.track, self.prompts, self.runs, self.fresh = track, prompts, runs, fresh
        self.label = what
        masks = {(k, f) for f, k, kw in prompts if "mask" in kw}
        self.exact = masks - {(k, f) for f, k, kw in prompts if "mask" not in kw}  # masks kept as given

    def task_key(self, session):
        return "track", self.track.token

    def stale(self, session, task) -> bool:
        return session.current_track is not self.track

    def prepare(self, session):
        line = VolumeLine(session.volume_for(session.current_key()), self.track.plane, self.track.axis)
        settings = session.settings.tracking
        total = sum(run.length(self.track.length) for run in self.runs) + len(self.prompts)
        self.track.propagated = True
        prompted = {(k, f) for k, obj in self.track.objects.items() for f in obj.keyframes}
        return _tracking(self.track, session.model, line, self.prompts, self.runs, self.fresh, settings, prompted), total

    def on_yield(self, session, task, item: TrackedPlane) -> None:
        if self.stale(session, task):
            return
        for key, mask in item.masks.items():
            obj = self.track.objects.get(key)
            if obj is not None and (key, item.frame) not in self.exact:  # not the tracker's copy of a mask prompt
                obj.put(item.frame, mask, item.scores.get(key, 0.0))
        session.track_changed((item.frame,))

    def on_result(self, session, task, result: TrackSummary) -> None:
        if self.stale(session, task):
            return
        planes, track = session.planes, self.track
        ends = [f"{_who(k)} left at {planes.plane_label(track.plane_at(f))}" for k, f, _ in result.ended]
        n, count = len(track.objects), len(track.frames())
        what = f"{n} object{'s' if n > 1 else ''}" if self.label == "tracking" else _who(self.runs[0].keys[0])
        verb = "Tracked" if self.label == "tracking" else "Re-tracked"
        session.message(f"{verb} {what} ({count} plane{'s' if count != 1 else ''} with masks; "
                        f"{'; '.join(ends) or 'to the end of the stack'}). Click a plane to correct it; C commits.")

    def on_error(self, session, task, exc: BaseException) -> None:
        if not isinstance(exc, Cancelled):
            self.track.tracker_stale = True  # its state is unknown after a failure


def _who(key) -> str:
    return f"object {key}" if key else "the new object"


def _acquire(lock, cancelled: Callable[[], bool]) -> None:
    while not lock.acquire(timeout=LOCK_POLL_S):
        if cancelled():
            raise Cancelled("tracking cancelled")


def _tracking(track: Track, model, line: VolumeLine, prompts: list, runs: list[Run], fresh: bool,
              settings: TrackSettings, prompted: set):
    """Task function (a generator of :class:`TrackedPlane` and progress); returns a :class:`TrackSummary`.
    Objects are present on their ``prompted`` ``(key, frame)`` whatever their score says."""
    def run(report, cancelled):
        _acquire(track.lock, cancelled)
        try:
            if fresh or track.tracker is None:
                track.tracker, track.tracker_stale = Tracker(model.predictor, line, volume=line), False
            tracker, done, ended = track.tracker, 0, []
            total = sum(r.length(line.shape[0]) for r in runs) + len(prompts)
            for frame, key, keywords in prompts:
                line.embedding((frame, 0, 0), cancel=cancelled)  # outside the model's lock
                with model.lock:
                    result = tracker.add_prompt(frame, key, **keywords)
                done += 1
                yield TrackedPlane(frame, {key: result.masks[key]}, {key: result.scores[key]})
                yield Progress(done, total)
            for spec in runs:
                alive = set(spec.keys if spec.keys is not None else tracker.object_ids)
                absent = dict.fromkeys(alive, 0)
                for result in tracker.propagate(start=spec.start, reverse=spec.reverse, cancel=cancelled,
                                                objects=spec.keys):
                    masks, scores = {}, {}
                    for key in sorted(alive, key=str):
                        present = (key, result.frame) in prompted or result.object_scores[key] > settings.min_object_score
                        absent[key] = 0 if present else absent[key] + 1
                        masks[key] = result.masks[key] if present and np.any(result.masks[key]) else None
                        scores[key] = result.scores[key]
                        if absent[key] >= max(1, settings.absent_planes):  # it left where it was first absent
                            alive.discard(key)
                            left = result.frame + (absent[key] - 1) * (1 if spec.reverse else -1)
                            ended.append((key, left, spec.reverse))
                    done += 1
                    yield TrackedPlane(result.frame, masks, scores)
                    yield Progress(done, total)
                    if not alive:
                        break
            return TrackSummary(done, tuple(ended))
        finally:
            track.lock.release()

    return run
