"""Tracking a long stack keeps memory bounded: a stack read lazily is tracked through every plane
while only a few planes' embeddings (the session's bounded cache) and the tracker's bounded history
are held; each plane's pixels are read once (small frames, SAM 2 test model).

CI tracks 60 planes (what is held stays at 4 embeddings and 16 outputs whatever the length);
``NAPARI_SAM_TRACK_PLANES=500`` runs the 500-plane case of issue 14 (about 5 minutes on a busy
2-core CPU; see docs/performance.md)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_sam.annotator import ImageSource, Session, SyncExecutor
from napari_sam.engine.memory_bank import KEEP_WITHIN

from .helpers import Prompts

PLANES = int(os.environ.get("NAPARI_SAM_TRACK_PLANES", 60))


class CountingStack:
    """A read-only array-like stack that records which planes are read and never holds them."""

    def __init__(self, planes: int, shape=(32, 32)) -> None:
        self.shape, self.dtype, self.ndim = (planes, *shape), np.dtype(np.uint16), 3
        self.reads: list[int] = []

    def __getitem__(self, index):
        z = index[0] if isinstance(index, tuple) else index
        self.reads.append(int(z))
        rr, cc = np.mgrid[: self.shape[1], : self.shape[2]]
        plane = np.random.default_rng(int(z)).integers(0, 300, self.shape[1:]).astype(np.uint16)
        plane[(rr - 12 - (z % 8)) ** 2 + (cc - 14) ** 2 < 36] += 3000
        return plane[index[1:]] if isinstance(index, tuple) else plane


@pytest.mark.slow
def test_a_long_stack_tracks_with_bounded_embeddings_and_history(sam2_checkpoint):
    stack = CountingStack(PLANES)
    s = Session(SyncExecutor())
    s.settings.prefetch_radius = 0
    s.embeddings.cache_mib = 1  # four 128-input SAM 2 embeddings (256 KiB each)
    s.set_image(ImageSource(stack, name="long", contrast_limits=(0.0, 3300.0)), position=(0,))
    s.load_model(str(sam2_checkpoint), device="cpu")
    assert s.embedding is not None, s.status_text
    kept, history = [], []
    s.events.object_planes.connect(lambda ats: kept.append(s.volume.cache.nbytes))
    s.events.object_planes.connect(lambda ats: s.current_track and s.current_track.tracker and history.append(
        max(len(o.tracked) for o in s.current_track.tracker._objects.values())))
    Prompts(s).add(14.0, 14.0)
    assert s.track(direction="forward"), s.status_text
    assert s.tracked_planes() == list(range(PLANES)), s.status_text
    assert sorted(set(stack.reads)) == list(range(PLANES))
    assert len(stack.reads) <= PLANES + 2  # every plane read once (the first also for the click)
    assert max(kept) <= 2**20 and len(s.volume.cache) <= 4  # never all embeddings
    assert max(history) <= KEEP_WITHIN + 1  # the tracker's outputs are bounded too
