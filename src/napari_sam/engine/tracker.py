"""Track objects through z-stacks and time series with SAM 2's memory (NumPy in / NumPy out).

Frames ``(T, H, W)`` or ``(T, H, W, 3|4)`` from any array-like (NumPy, memmap, zarr, dask) are
read one at a time, when they are decoded, and embedded then (through the bounded LRU
:class:`EmbeddingCache`, and an :class:`EmbeddingStore` when given). Prompts are napari
``(row, col)`` pixels of a frame. The semantics are those of Meta's ``SAM2VideoPredictor``
(prompts on several frames, several objects, corrections, forward and reverse propagation,
the memory bank of prompted frames plus the 6 frames before, object pointers), with
``corrections_as_prompts`` for its ``add_all_frames_to_correct_as_cond``; what is kept of
each object is bounded (see :mod:`.memory_bank`). Objects whose memory banks have the same
layout (e.g. all prompted on the same frames) are decoded as one batch.

Not thread-safe: use one tracker from one thread (a worker) at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checks
from .cache import EmbeddingCache
from .memory_bank import FrameEntry, ObjectState, bank, pointer_span
from .postprocess import masks_from_logits
from .predictor import Cancelled, Embedding, Predictor, is_sam2
from .preprocess import Geometry
from .store import EmbeddingStore
from .volume import VolumeEmbeddings


@dataclass(frozen=True)
class TrackResult:
    """Objects on one ``frame``: ``masks`` ``{obj_id: (H, W) bool}``, ``scores`` (predicted IoU),
    ``object_scores`` (object-present logit, ``> 0`` present), ``logits`` ``{obj_id: (4g, 4g)}``
    low-res mask logits (``256 x 256`` at 1024 input)."""

    frame: int
    masks: dict[Hashable, np.ndarray]
    scores: dict[Hashable, float]
    object_scores: dict[Hashable, float]
    logits: dict[Hashable, np.ndarray]


class Tracker:
    """SAM 2 tracking of objects through ``frames`` with ``predictor`` (a SAM 2 model)."""

    def __init__(self, predictor: Predictor, frames, *, contrast_limits: tuple[float, float] | None = None,
                 store: EmbeddingStore | str | Path | None = None, cache: EmbeddingCache | None = None,
                 corrections_as_prompts: bool = True, volume=None) -> None:
        """``store``: an embedding store (or the path of one, created if missing) that frames'
        embeddings are read from and written to. ``corrections_as_prompts``: a prompt on an
        already tracked frame makes it a prompted frame (Meta's ``add_all_frames_to_correct_as_cond``;
        with False, as in Meta's default, a propagation through that frame re-tracks it and the
        correction is lost). ``volume``: where frames' embeddings come from instead of a volume of
        the tracker's own, e.g. a :class:`~napari_sam.engine.VolumeLine` of the annotator's
        :class:`VolumeEmbeddings` (anything with ``embedding((frame, 0, 0), cancel=)``), so no frame
        is embedded twice; ``contrast_limits``, ``store`` and ``cache`` are then the volume's."""
        if not is_sam2(predictor.model):
            raise ValueError(f"Tracker needs a SAM 2 model (e.g. 'sam2.1_hiera_t'), the predictor runs "
                             f"{predictor.model_name!r}")
        shape = tuple(getattr(frames, "shape", ()))
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (3, 4)) or min(shape[:3], default=0) < 1:
            raise ValueError(f"frames must be (T, H, W) or (T, H, W, 3|4) (RGB last), got shape {shape}")
        self.predictor, self.model = predictor, predictor.model
        self.num_frames, self.frame_shape = int(shape[0]), (int(shape[1]), int(shape[2]))
        if volume is not None:
            if contrast_limits is not None or store is not None or cache is not None:
                raise ValueError("volume= brings its own contrast limits, store and cache: do not pass them too")
            self.volume = volume
        else:
            self.volume = VolumeEmbeddings(frames, predictor, rgb=len(shape) == 4, contrast_limits=contrast_limits,
                                           tile=max(16, *self.frame_shape), cache=cache or EmbeddingCache(128))
        if isinstance(store, EmbeddingStore):
            store.check(self.volume.store_info())
            self.volume.store = store
        elif store is not None:
            self.volume.attach_store(store)
        self.corrections_as_prompts = corrections_as_prompts
        self._objects: dict[Hashable, ObjectState] = {}
        g = 4 * self.model.grid
        self._mask_geometry = (Geometry(self.frame_shape, (g, g)), g)
        self._model_geometry = Geometry(self.frame_shape, (self.model.img_size,) * 2)

    @property
    def object_ids(self) -> list[Hashable]:
        return list(self._objects)

    # --- prompts ----------------------------------------------------------------------
    def add_prompt(self, frame: int, obj_id: Hashable, points=None, labels=None, box=None, mask=None) -> TrackResult:
        """Prompt object ``obj_id`` on ``frame`` with points ``(N, 2)`` (row, col) and ``labels``
        (1 foreground, 0 background; default all 1), a ``box`` (min_row, min_col, max_row,
        max_col), both, or a ``mask (H, W)`` instead. Each call gives all of the object's
        prompts on that frame (replacing earlier ones; the earlier mask is fed back as in SAM).
        Returns every object decoded on ``frame``."""
        frame = self._check_frame(frame, "frame")
        prompts = self._prompt_tensors(points, labels, box, mask)
        obj = self._objects.get(obj_id) or ObjectState(self.num_frames)
        first = not obj.was_tracked(frame)
        reverse = False if first else bool(obj.direction[frame] == 1)
        emb = self._embedding(frame)
        if mask is not None:
            entry = self._entry(self.model.mask_as_output(emb.features, emb.high_res, prompts), 0)
        else:
            prev = obj.output(frame)
            prev_logits = None if prev is None else prev.logits.clamp(-self.model.logit_clamp, self.model.logit_clamp)
            features = self._conditioned(emb, [obj], frame, first, reverse)
            out = self.model.decode_frame(features, emb.high_res, prompts, prev_logits, multimask=prompts[0].shape[1] <= 1)
            entry = self._entry(out, 0)
        obj.pending[frame] = (entry, first or self.corrections_as_prompts)
        obj.decoded(frame)
        self._objects[obj_id] = obj
        return self._result(frame, {i: o.output(frame) for i, o in self._objects.items() if o.output(frame)})

    def remove_object(self, obj_id: Hashable) -> None:
        if obj_id not in self._objects:
            raise ValueError(f"no object {obj_id!r}; objects: {self.object_ids}")
        del self._objects[obj_id]

    def reset(self) -> None:
        """Forget every object and prompt (frame embeddings stay cached)."""
        self._objects.clear()

    # --- propagation ------------------------------------------------------------------
    def propagate(self, start: int | None = None, reverse: bool = False, max_frames: int | None = None,
                  cancel: Callable[[], bool] | None = None, objects=None) -> Iterator[TrackResult]:
        """Track every object from ``start`` (default: the earliest prompted frame) to the last
        frame (``reverse``: to frame 0), at most ``max_frames`` frames (``start`` included);
        yields one :class:`TrackResult` per frame. Prompted frames give their prompted output.
        ``cancel()`` is polled per frame and inside embeddings; True raises :class:`Cancelled`
        (frames done so far stay tracked). As in Meta's predictor, reverse from frame 0 yields
        nothing. ``objects``: track only these object ids (the others keep their outputs and are
        not in the results), e.g. the one corrected on ``start``."""
        self._start_propagation()
        if objects is not None:
            unknown = [i for i in objects if i not in self._objects]
            if unknown or not objects:
                raise ValueError(f"objects must be ids of tracked objects {self.object_ids}, got {list(objects)!r}")
        if start is None:
            start = min(t for o in self._objects.values() for t in o.prompted)
        start = self._check_frame(start, "start")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 (or None for all), got {max_frames}")
        count = self.num_frames if max_frames is None else max_frames - 1
        if reverse:
            order = range(start, max(start - count, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + count, self.num_frames - 1) + 1)
        chosen = self._objects if objects is None else {i: self._objects[i] for i in dict.fromkeys(objects)}
        return self._propagate(order, reverse, cancel, chosen)

    def _propagate(self, order: range, reverse: bool, cancel, chosen: dict) -> Iterator[TrackResult]:
        with self.predictor.memory_jobs.job():  # freed memory reused from frame to frame
            yield from self._frames(order, reverse, cancel, chosen)

    def _frames(self, order: range, reverse: bool, cancel, chosen: dict) -> Iterator[TrackResult]:
        for frame in order:
            if cancel is not None and cancel():
                raise Cancelled("propagation cancelled")
            emb = self._embedding(frame, cancel)
            todo = [o for o in chosen.values() if frame not in o.prompted]
            for group, features in self._groups(emb, todo, frame, reverse):
                out = self.model.decode_frame(features, emb.high_res, multimask=True)
                raw = emb.features.expand(len(group), -1, -1, -1)
                memory = self.model.encode_memory(raw, out.logits, out.object_score, binarize=False)
                for i, obj in enumerate(group):
                    obj.tracked[frame] = self._entry(out, i, memory[i:i + 1])
            outputs = {}
            for obj_id, obj in chosen.items():
                obj.direction[frame] = int(reverse)
                obj.decoded(frame)
                outputs[obj_id] = obj.prompted.get(frame) or obj.tracked[frame]
            yield self._result(frame, outputs)

    def _start_propagation(self) -> None:
        """Encode the memories of the frames prompted since the last propagation and file them."""
        if not self._objects:
            raise RuntimeError("no objects to track: call add_prompt() first")
        for obj_id, obj in self._objects.items():
            if obj.pending:
                emb_cache: dict[int, Embedding] = {}
                for frame, (entry, prompted) in obj.pending.items():
                    if entry.memory is None:
                        emb = emb_cache.setdefault(frame, self._embedding(frame))
                        entry.memory = self._bf16(self.model.encode_memory(emb.features, entry.logits, entry.object_score,
                                                                           binarize=True))
                    (obj.prompted if prompted else obj.tracked)[frame] = entry
                obj.pending.clear()
            if not obj.prompted:
                raise RuntimeError(f"object {obj_id!r} has no prompted frame")
            for frame in obj.prompted:
                obj.tracked.pop(frame, None)

    # --- helpers ----------------------------------------------------------------------
    def _embedding(self, frame: int, cancel=None) -> Embedding:
        return self.volume.embedding((frame, 0, 0), cancel=cancel)

    def _conditioned(self, emb: Embedding, objs: list[ObjectState], frame: int, first: bool, reverse: bool):
        """Features of ``frame`` for ``objs`` (one memory layout): without memory on a first
        prompt, else attended to their memory banks."""
        if first:
            return self.model.no_memory(emb.features).expand(len(objs), -1, -1, -1)
        banks = [bank(o, frame, reverse) for o in objs]
        memories = [(torch.cat([b[0][k][0].memory for b in banks]).float(), slot) for k, (_, slot) in enumerate(banks[0][0])]
        pointers = [(torch.cat([b[1][k][0].pointer for b in banks]), dist) for k, (_, dist) in enumerate(banks[0][1])]
        features = emb.features.expand(len(objs), -1, -1, -1)
        with torch.no_grad():
            return self.model.condition(features, memories, pointers, pointer_span(self.num_frames))

    def _groups(self, emb: Embedding, objs: list[ObjectState], frame: int, reverse: bool):
        """``(objects, conditioned features)`` per memory-bank layout (slots and distances)."""
        layouts: dict[tuple, list[ObjectState]] = {}
        for obj in objs:
            memories, pointers = bank(obj, frame, reverse)
            layouts.setdefault((tuple(s for _, s in memories), tuple(d for _, d in pointers)), []).append(obj)
        for group in layouts.values():
            yield group, self._conditioned(emb, group, frame, False, reverse)

    @staticmethod
    def _bf16(memory: torch.Tensor) -> torch.Tensor:
        return memory.to(torch.bfloat16)  # see memory_bank: the rounding Meta's predictor applies

    def _entry(self, out, i: int, memory: torch.Tensor | None = None) -> FrameEntry:
        return FrameEntry(out.logits[i:i + 1], out.pointer[i:i + 1], out.object_score[i:i + 1], float(out.iou[i]),
                          None if memory is None else self._bf16(memory))

    def _result(self, frame: int, outputs: dict[Hashable, FrameEntry]) -> TrackResult:
        ids = list(outputs)
        if not ids:
            return TrackResult(frame, {}, {}, {}, {})
        logits = torch.cat([outputs[i].logits for i in ids]).float()
        masks = masks_from_logits(logits, *self._mask_geometry, self.model.mask_threshold)[:, 0].cpu().numpy()
        low = logits[:, 0].cpu().numpy()
        return TrackResult(frame, dict(zip(ids, masks)), {i: outputs[i].iou for i in ids},
                           {i: float(outputs[i].object_score) for i in ids}, dict(zip(ids, low)))

    def _check_frame(self, frame, name: str) -> int:
        if not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.num_frames:
            raise ValueError(f"{name} must be a frame index in 0..{self.num_frames - 1}, got {frame!r}")
        return int(frame)

    def _prompt_tensors(self, points, labels, box, mask):
        """Points and box as model ``(x, y)`` points with labels (box corners first, labels 2
        and 3), or the mask as ``(1, 1, S, S)`` 0/1 at the model's resolution."""
        has_points = points is not None and np.size(points) > 0
        device, size = self.model.device, self.model.img_size
        if mask is not None:
            if has_points or box is not None:
                raise ValueError("give a mask alone, or points and/or a box: not both")
            mask = np.asarray(mask)
            if mask.shape != self.frame_shape:
                raise ValueError(f"mask must have the frame shape {self.frame_shape}, got {mask.shape}")
            m = torch.from_numpy(mask.astype(bool)).to(device)[None, None].float()
            if mask.shape != (size, size):
                m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                m = (m >= 0.5).float()
            return m
        if labels is not None and np.size(labels) and not has_points:
            raise ValueError("labels given without points: pass the points they label")
        if not has_points and box is None:
            raise ValueError("nothing to segment: give points, a box or a mask")
        xy, kinds = np.zeros((0, 2)), np.zeros(0, np.int64)
        if box is not None:
            if np.size(box) != 4:
                raise ValueError(f"box must be 4 numbers (min_row, min_col, max_row, max_col), got shape {np.shape(box)}")
            box = checks.coordinates(np.ravel(box), "box", 4, "(min_row, min_col, max_row, max_col)")[0]
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError("degenerate box: need min_row < max_row and min_col < max_col")
            xy, kinds = box.reshape(2, 2), np.array([2, 3])
        if has_points:
            pts = checks.coordinates(points, "points", 2, "(row, col)")
            lab = np.ones(len(pts), np.int64) if labels is None else np.asarray(labels).reshape(-1).astype(np.int64)
            Predictor._check_points(pts, lab, self.frame_shape)
            xy, kinds = np.concatenate([xy, pts]), np.concatenate([kinds, lab])
        coords = torch.from_numpy(self._model_geometry.points_to_model(xy))[None].to(device)
        return coords, torch.from_numpy(kinds)[None].to(device)
