"""What :class:`~napari_sam.engine.Tracker` remembers of each object, and which of it the next
frame attends to (the rules of Meta's ``SAM2VideoPredictor``).

Per object: the outputs of *prompted* frames (kept while the object lives), the outputs of
*tracked* frames near the last decoded one, and which frames were tracked in which direction
(one byte per frame). A frame's output holds its low-res logits, object pointer, object score,
predicted IoU and its memory.

Memories are stored in bf16, as Meta's predictor stores them (it casts them to bf16 when it
keeps them, to halve their size); they are used in fp32 again, and the bf16 rounding is part
of the results, so it is reproduced here exactly.

The bank a frame ``t`` attends to (forward; mirrored when tracking in reverse):
- the memories of all prompted frames (slot 0), then those of the tracked frames
  ``t-6 .. t-1`` (slots 1 .. 6) that exist;
- the object pointers of prompted frames at or before ``t`` (signed distance ``t - p``), then
  those of tracked frames ``t-1, t-2, ...`` within ``min(T, 16) - 1`` frames (distance).

Bounded memory: after each decoded frame, tracked-frame outputs more than
:data:`KEEP_WITHIN` frames away from it are dropped (prompted frames' are kept). The bank of
any frame decoded next to it (propagation, or a correction followed by propagation from it)
only reads frames within that distance, so it is the same as Meta's, which keeps every
output; a propagation started far (more than ``KEEP_WITHIN`` frames) from the object's last
decoded frame finds no earlier tracked outputs there, where Meta's would use old ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.sam2 import Sam2

MAX_POINTERS = Sam2.max_pointers  # 16
NUM_MASKMEM = Sam2.num_maskmem  # 7
KEEP_WITHIN = MAX_POINTERS - 1  # frames; covers the memory slots (6) and the pointers (15)


@dataclass
class FrameEntry:
    """One decoded frame of one object: ``logits (1, 1, 4g, 4g)``, ``pointer (1, 256)``,
    ``object_score (1, 1)``, ``iou``, ``memory (1, 64, g, g)`` bf16 (None until encoded)."""

    logits: torch.Tensor
    pointer: torch.Tensor
    object_score: torch.Tensor
    iou: float
    memory: torch.Tensor | None = None


@dataclass
class ObjectState:
    """Outputs of one object (see the module docstring). ``pending``: frames decoded from
    prompts since the last propagation, ``frame -> (entry, prompted)``; their memories are
    encoded, and they join ``prompted``/``tracked``, when a propagation starts."""

    num_frames: int
    prompted: dict[int, FrameEntry] = field(default_factory=dict)
    tracked: dict[int, FrameEntry] = field(default_factory=dict)
    pending: dict[int, tuple[FrameEntry, bool]] = field(default_factory=dict)
    direction: np.ndarray = field(init=False)  # per frame: -1 never tracked, 0 forward, 1 reverse
    last: int | None = None

    def __post_init__(self) -> None:
        self.direction = np.full(self.num_frames, -1, np.int8)

    def was_tracked(self, frame: int) -> bool:
        return bool(self.direction[frame] >= 0)

    def output(self, frame: int) -> FrameEntry | None:
        """The newest output on ``frame``: pending, else prompted, else tracked."""
        if frame in self.pending:
            return self.pending[frame][0]
        return self.prompted.get(frame, self.tracked.get(frame))

    def decoded(self, frame: int) -> None:
        """Note that ``frame`` was just decoded and drop tracked outputs too far from it."""
        self.last = frame
        for t in [t for t in self.tracked if abs(t - frame) > KEEP_WITHIN]:
            del self.tracked[t]


def bank(obj: ObjectState, frame: int, reverse: bool) -> tuple[list[tuple[FrameEntry, int]], list[tuple[FrameEntry, int]]]:
    """The memories ``(entry, slot)`` and object pointers ``(entry, distance)`` that ``frame``
    attends to (see the module docstring)."""
    step = 1 if reverse else -1  # towards the frames already tracked
    memories = [(e, 0) for e in obj.prompted.values()]
    for slot in range(1, NUM_MASKMEM):
        e = obj.tracked.get(frame + step * (NUM_MASKMEM - slot))
        if e is not None:
            memories.append((e, slot))
    sign = -1 if reverse else 1
    pointers = [(e, (frame - t) * sign) for t, e in obj.prompted.items() if (t >= frame if reverse else t <= frame)]
    for d in range(1, min(obj.num_frames, MAX_POINTERS)):
        t = frame + step * d
        if not 0 <= t < obj.num_frames:
            break
        e = obj.tracked.get(t)
        if e is not None:
            pointers.append((e, d))
    return memories, pointers


def pointer_span(num_frames: int) -> int:
    """The distance that normalises pointers' temporal encodings (at least 1)."""
    return max(1, min(num_frames, MAX_POINTERS) - 1)
