"""The session's SAM 2 tracking (a part of :class:`~napari_sam.annotator.session.Session`):
:meth:`TrackingCommands.track`, corrections, commits, undo/redo and what the view draws.

With a SAM 2 model on a stack, the current object keeps its prompts per plane: moving the
slider along the through axis keeps its mask there as a *keyframe* of a draft
:class:`~.tracking.Track`. :meth:`~TrackingCommands.track` sends the keyframes (and the masks
of chosen committed objects on the plane) to the tracker and propagates them. Afterwards a
click on a plane of the track corrects the object there (the one under the first click, else
the current object) and re-tracks it from there, replacing only its masks beyond (one undo
step: Ctrl+Z undoes the last correction before the track is committed). A commit writes every
object through all planes, one label id each (committed objects keep theirs), as one step.
"""

from __future__ import annotations

import numpy as np

from . import prompts as P
from .history import plane_index
from .jobs import JobRefused
from .track_job import Run, TrackJob
from .tracking import CURRENT, DIRECTIONS, Track, TrackedObject, beyond, plan_track_paint


def _same_prompts(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and len(a[2]) == len(b[2]) and \
        all(np.array_equal(x, y) for x, y in zip(a[2], b[2])) and list(a[3]) == list(b[3])


def _has_prompts(prompts) -> bool:
    return prompts is not None and (len(prompts[0]) > 0 or len(prompts[2]) > 0)


class TrackingCommands:
    """Mixed into :class:`~napari_sam.annotator.session.Session` (its state and events)."""

    current_track: Track | None = None

    def _init_tracking(self) -> None:
        self.current_track = None
        self.events.image.connect(self._check_track)
        self.events.model.connect(self._check_track)

    # --- state -------------------------------------------------------------------------
    def _track_identity(self) -> tuple:
        src = self.image
        return (None if src is None else (src.serial, src.version), self.model.token if self.model else None, self.axes)

    def _check_track(self) -> None:
        if self.current_track is not None and self.current_track.identity != self._track_identity():
            self.drop_track()

    def drop_track(self) -> None:
        """Forget the track (its job is cancelled); committed labels are not touched."""
        if self.current_track is None:
            return
        self._cancel_track_job()
        self.current_track = None
        self.events.object_planes.emit(())

    def _cancel_track_job(self) -> None:
        task = self.slots.current.get("job")
        if task is not None and self.current_track is not None and task.key == ("track", self.current_track.token):
            self.slots.cancel("job")

    def why_no_tracking(self) -> str | None:
        """Why :meth:`track` cannot run now (None: it can)."""
        if self.model is None or self.image is None:
            return "Track needs an image and a SAM 2 model: load one (e.g. sam2.1_hiera_t) first."
        if self.model.kind != "sam2":
            return (f"Track needs a SAM 2 model ({self.model.label} is SAM 1): load sam2.1_hiera_t or use "
                    "Propagate.")
        planes = self.planes
        if planes.through_axis() is None:
            return "Track needs a stack or time series (an image with more than one plane)."
        try:
            vol = self.volume_for(self.current_key())
        except (ValueError, OSError) as exc:
            return f"Cannot track in '{self.image.name}': {exc}"
        if vol.layout is not None:
            return "Tracking works on untiled planes (planes up to 2048 px)."
        return None

    def tracked_planes(self) -> list[int]:
        """Indices along the through axis of the planes where the track has a mask ([] without one)."""
        return self.current_track.frames() if self.current_track is not None else []

    def shown_mask(self, at: tuple) -> np.ndarray | None:
        """The id mask the view shows on the plane with labels index ``at``: a propagation's, or
        the track's object numbers (1 + position in :attr:`Track.objects`)."""
        if at in self.object.planes:
            return self.object.planes[at]
        track = self.current_track
        frame = None if track is None else track.frame_of(tuple(i for i in at if i is not None))
        return None if frame is None else track.composite(frame)

    def shown_planes(self) -> list[tuple]:
        """Labels indices of every plane with a shown mask."""
        track, planes = self.current_track, self.planes
        ats = [planes.labels_at(track.plane_at(f)) for f in track.frames()] if track is not None else []
        return [*self.object.planes, *[at for at in ats if at not in self.object.planes]]

    def track_changed(self, frames) -> None:
        """The track's masks on ``frames`` changed: tell the view."""
        if self.current_track is not None and frames:
            self.events.object_planes.emit(tuple(self.planes.labels_at(self.current_track.plane_at(f)) for f in frames))

    # --- starting a track ----------------------------------------------------------------
    def track(self, direction: str = "both", objects=None) -> bool:
        """Track the current object (and committed ``objects``: label ids on the plane on screen)
        through the stack with the SAM 2 tracker, ``direction`` ``"forward"``, ``"backward"`` or
        ``"both"``, in the background (each plane shown as it comes). False (and a message) when
        it cannot run; ValueError for bad arguments."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, got {direction!r}")
        ids = self._checked_ids(objects)
        why = self.why_no_tracking()
        if why is None and self.slots.running("embed", "load"):
            why = "Track: wait until the plane on screen is embedded."
        if why is not None:
            self.message(why, warn=True)
            return False
        masks = self._committed_masks(ids)
        try:
            track, frame = self._track_here(), None
            frame = track.frame_of(self.plane)
            self._keep_candidate(track, frame)
        except JobRefused as exc:
            self.message(str(exc), warn=True)
            return False
        for label, mask in masks.items():
            obj = track.objects.setdefault(label, TrackedObject(label))
            obj.put(frame, mask)
            obj.keyframes.add(frame)
        if not any(obj.keyframes & set(obj.masks) for obj in track.objects.values()):
            self.message("Track needs an object: click it (and choose its mask) or pick committed objects "
                         "on this plane.", warn=True)
            return False
        for obj in track.objects.values():
            for f in [f for f in obj.masks if f not in obj.keyframes]:
                obj.put(f, None)
        track.direction, track.done, track.undone = direction, [], []
        prompts = [(f, key, {"mask": obj.masks[f]}) for key, obj in track.objects.items()
                   for f in sorted(obj.keyframes) if f in obj.masks]
        keys = [f for obj in track.objects.values() for f in obj.keyframes]
        first, last = min(keys), max(keys)
        runs = {"forward": [Run(first, False)], "backward": [Run(last, True)],
                "both": [Run(first, False), Run(first, True)]}[direction]
        self.current_track = track
        redrawn = bool(self.object.candidates or self.object.planes)  # then reset_object redraws
        self.reset_object(clear_prompts=False)  # its candidate is now the track's keyframe
        if not redrawn:
            self.events.object_planes.emit(())  # the view draws the track
        n = len(track.objects)
        return self.run_job(TrackJob(track, prompts, runs, fresh=True),
                            f"tracking {n} object{'s' if n > 1 else ''} {direction}…")

    def _checked_ids(self, objects) -> list[int]:
        if objects is None:
            return []
        ids = [objects] if isinstance(objects, (int, np.integer)) else list(objects)
        bad = [i for i in ids if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or i < 1]
        if bad:
            raise ValueError(f"objects must be label ids (integers >= 1) of committed objects, got {bad!r}")
        return [int(i) for i in dict.fromkeys(ids)]

    def _committed_masks(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The masks of label ids ``ids`` on the plane on screen (ValueError naming what is there)."""
        if not ids:
            return {}
        target, data = self.labels.data_for(self.image)
        if target is None:
            raise ValueError(f"objects {ids}: there are no committed labels yet (commit objects first)")
        plane = np.asarray(data[plane_index(self.planes.labels_at(self.plane))])
        plane = plane.max(axis=0) if plane.ndim == 3 else plane  # channel copies
        there = set(np.unique(plane).tolist()) - {0}
        missing = [i for i in ids if i not in there]
        if missing:
            where = self.planes.plane_label(self.plane) or "this plane"
            raise ValueError(f"objects {missing} are not on {where} of '{target.name}' "
                             f"(labels there: {sorted(there) or 'none'})")
        return {i: plane == i for i in ids}

    def committed_on_plane(self) -> list[int]:
        """Label ids of the committed objects on the plane on screen."""
        target, data = self.labels.data_for(self.image) if self.image is not None else (None, None)
        if target is None or not isinstance(data, np.ndarray):
            return []
        return sorted(set(np.unique(data[plane_index(self.planes.labels_at(self.plane))]).tolist()) - {0})

    def _track_here(self) -> Track:
        """The track through the plane on screen (the current one, or a new draft)."""
        track = self.current_track
        if track is not None and track.frame_of(self.plane) is not None and track.identity == self._track_identity():
            return track
        axis = self.planes.through_axis()
        self.drop_track()
        return Track(self.plane, axis, self.planes.lead[self.planes.plane_axes()[axis]], self._track_identity())

    def _keep_candidate(self, track: Track, frame: int) -> None:
        """The current object's chosen mask becomes its keyframe on ``frame``."""
        cand = self.object.chosen_candidate
        if cand is None:
            return
        if cand.ious:
            raise JobRefused("Track follows one object per prompt: with several boxes, commit them and track "
                             "the committed objects instead.")
        obj = track.objects.setdefault(CURRENT, TrackedObject(CURRENT))
        obj.put(frame, cand.mask > 0, cand.iou)
        obj.keyframes.add(frame)
        obj.prompts[frame] = self._prompts

    # --- planes, prompts and corrections -------------------------------------------------
    def leaving_plane(self) -> None:
        """Called before the plane on screen changes: with SAM 2 on a stack, the current
        object's chosen mask stays as a keyframe of the draft track through this plane (unless
        a track through other planes exists, or this one was tracked already)."""
        cand = self.object.chosen_candidate
        if cand is None or cand.ious or self.model is None or self.model.kind != "sam2" or self.planes is None \
                or self.planes.through_axis() is None or self.object.plane != self.plane:
            return
        if self.current_track is not None and (self.current_track.propagated or self.current_track.frame_of(self.plane) is None):
            return
        track = self._track_here()
        frame = track.frame_of(self.plane)
        self._keep_candidate(track, frame)
        self.current_track = track
        self.track_changed((frame,))

    def arrived_on_plane(self) -> None:
        """Called after the plane on screen changed: its prompts of the track come back (shown,
        not decoded again: the track's mask is there)."""
        track = self.current_track
        frame = None if track is None else track.frame_of(self.plane)
        stored = track.prompts_on(frame)[1] if frame is not None else None
        if _has_prompts(stored):
            self._prompts = stored
            self.events.prompts_restored.emit(stored)

    def request_decode(self) -> None:
        track = self.current_track
        frame = None if track is None else track.frame_of(self.plane)
        if frame is not None and (track.propagated or _same_prompts(track.prompts_on(frame)[1], self._prompts)):
            self.object.generation += 1
            self.slots.drop_waiting("decode")
            if track.propagated:
                self._correct(track, frame)
            return
        super().request_decode()

    def _correct(self, track: Track, frame: int) -> None:
        owner, stored = track.prompts_on(frame)
        pts, pos, shapes, kinds = self._prompts
        if _same_prompts(stored, self._prompts) or (not _has_prompts(self._prompts) and not _has_prompts(stored)):
            return  # e.g. the prompts restored on arrival
        if not _has_prompts(self._prompts):
            del track.objects[owner].prompts[frame]  # the points were deleted: the masks stay
            return
        found = P.collect(pts, pos, shapes, kinds, self.image.plane_shape)
        if len(found.boxes) > 1 or found.empty or (not len(found.boxes) and not found.labels.any()):
            self.message("A correction is positive/negative points and at most one box, with a positive "
                         f"point or the box{': ' + '; '.join(found.problems) if found.problems else ''}.", warn=True)
            return
        key = owner if owner is not None else self._object_at(track, frame, found)
        obj = track.objects[key]
        forwards = {"forward": [True], "backward": [False]}.get(track.direction) or \
            ([True] if frame > track.anchor() else [False] if frame < track.anchor() else [True, False])
        frames = sorted({f for fwd in forwards for f in beyond(frame, track.length, fwd)})
        track.begin_correction(key, frames)
        obj.prompts[frame] = self._prompts
        seed = obj.masks.get(frame)
        for f in frames:
            obj.put(f, None)
        fresh = track.tracker is None or track.tracker_stale
        prompts = [(f, k, {"mask": o.masks[f]}) for k, o in track.objects.items() for f in sorted(o.keyframes)
                   if f in o.masks] if fresh else []
        obj.keyframes.add(frame)
        if seed is not None:
            prompts.append((frame, key, {"mask": seed}))
        box = found.boxes[0] if len(found.boxes) else None
        points = found.points if len(found.points) else None
        prompts.append((frame, key, {"points": points, "labels": None if points is None else found.labels, "box": box}))
        runs = [Run(frame, not fwd, (key,)) for fwd in forwards]
        self.track_changed(frames)
        who = f"object {key}" if key != CURRENT else "the new object"
        self.run_job(TrackJob(track, prompts, runs, fresh, "re-tracking"),
                     f"correcting {who} at {self.planes.plane_label(self.plane)} and re-tracking…")

    def _object_at(self, track: Track, frame: int, found) -> int:
        """The object under the first positive point (else the current object, else the first)."""
        owners = track.owners(frame)
        keys = list(track.objects)
        positive = found.points[found.labels > 0] if len(found.points) else np.zeros((0, 2))
        if owners is not None and len(positive):
            r, c = np.clip(np.round(positive[0]).astype(int), 0, np.array(owners.shape) - 1)
            if owners[r, c]:
                return keys[owners[r, c] - 1]
        return CURRENT if CURRENT in track.objects else keys[0]

    # --- commit, clear, undo -------------------------------------------------------------
    def commit(self) -> bool:
        track = self.current_track
        if track is None or track.frame_of(self.plane) is None:
            return super().commit()
        if self.object.chosen_candidate is not None and not track.propagated:
            try:
                self._keep_candidate(track, track.frame_of(self.plane))
            except JobRefused as exc:
                self.message(str(exc), warn=True)
                return False
        self._cancel_track_job()  # what is tracked so far is committed
        planes = self.planes
        ats = tuple(planes.labels_at(track.plane_at(f)) for f in track.frames())
        if not ats:
            return self._say_nothing()
        outcome = self.labels.commit_planned(
            lambda data: plan_track_paint(data, track, planes.labels_at, self.labels.overwrite), planes, self.image,
            ats, planes.plane_label(self.plane))
        if not self._say(outcome):
            return False
        self.current_track = None
        self.reset_object(clear_prompts=True)
        self.events.object_planes.emit(())
        return True

    def _say_nothing(self) -> bool:
        self.message("Nothing to commit: the track has no masks.", warn=True)
        return False

    def clear(self) -> None:
        self.drop_track()
        super().clear()

    def undo(self, exists=lambda target: True) -> bool:
        if self.current_track is not None and self.current_track.done:
            return self._correction_step(self.current_track.undo, "Undid")
        return super().undo(exists)

    def redo(self, exists=lambda target: True) -> bool:
        if self.current_track is not None and self.current_track.undone:
            return self._correction_step(self.current_track.redo, "Redid")
        return super().redo(exists)

    def _correction_step(self, step, verb: str) -> bool:
        self._cancel_track_job()
        done = step()
        self.track_changed(done.frames)
        who = f"object {done.key}" if done.key != CURRENT else "the new object"
        self.message(f"{verb} the correction of {who} ({len(done.frames)} planes).")
        return True
