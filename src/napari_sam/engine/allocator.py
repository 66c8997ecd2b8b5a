"""Keep freed CPU memory for reuse instead of returning it to the system at once (glibc).

SAM allocates and frees the same large buffers over and over: every encoder block makes
tens of MB of activations (a 50 MB MLP hidden layer for vit_b), every decode a few MB per
prompt. glibc serves blocks above its ``mmap`` threshold (at most 32 MiB by default) with
fresh ``mmap`` pages and trims the top of the heap when more than twice that is free, so the
same memory is handed back and zero-filled again page by page: ~750,000 page faults (3 GB)
per vit_b embedding, 12 % of its time, and a third of a decode's time.

:func:`keep_freed_memory` raises both thresholds (blocks up to 128 MiB come from the heap; up
to 1 GiB of free heap top is kept: a SAM 2 frame's working set is over 256 MiB), which
removes the faults; :func:`release_freed_memory`
(``malloc_trim``) gives the kept memory back after heavy work such as an embedding, or, for
a job of many (:class:`MemoryJobs`: a track through a stack), once at its end: returned
after every frame it would be faulted in again by the next (~1 s per GiB on some VMs). Both do
nothing outside glibc, and nothing when ``NAPARI_SAM_MALLOC_TUNING=0`` is set. The settings are
process-wide, like ``LD_PRELOAD``-ing jemalloc, which PyTorch's CPU tuning guide recommends.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 << 20
TRIM_THRESHOLD = 1 << 30

_lock = threading.Lock()
_state: dict[str, object] = {"libc": None, "tuned": False}


def _glibc():
    if not sys.platform.startswith("linux") or os.environ.get("NAPARI_SAM_MALLOC_TUNING", "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _ = libc.gnu_get_libc_version  # glibc only (musl has no mallopt thresholds)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they are set."""
    with _lock:
        if not _state["tuned"]:
            libc = _glibc()
            if libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) \
                    and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
                _state.update(libc=libc, tuned=True)
        return bool(_state["tuned"])


def release_freed_memory() -> None:
    """Return the free memory kept by :func:`keep_freed_memory` to the system."""
    libc = _state["libc"]
    if libc is not None:
        libc.malloc_trim(0)


class MemoryJobs:
    """The jobs (a track, a stack of embeddings) that want freed memory kept between their
    steps: each step ends with :meth:`step_done`, which returns the memory only when no job
    is running; the last job to end returns it once. One per :class:`Predictor`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0

    @contextlib.contextmanager
    def job(self):
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                release_freed_memory()

    def step_done(self) -> None:
        if not self._running:
            release_freed_memory()
