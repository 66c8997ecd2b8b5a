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
a job of many (:class:`MemoryJobs`: a track through a stack), between its steps only when the
memory kept passes :data:`KEEP_BETWEEN_STEPS`, and once at its end: returned after every
frame it would be faulted in again by the next (~1 s per GiB on some VMs); kept without a bound
it fragments and grows (a SAM 2 track at 1024²: peak RSS 1.22 -> 1.43 GiB over 14 frames,
still rising). Both do
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
KEEP_BETWEEN_STEPS = 256 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

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


def unused_resident_bytes() -> int | None:
    """Resident bytes not in malloc blocks in use: RSS (``/proc/self/statm``) minus
    ``mallinfo2()``'s in-use heap (``uordblks``) and mmapped blocks (``hblkhd``). The free
    memory glibc keeps resident is in it, beside code and other memory malloc does not hand
    out; how much it grew since the last release is what was kept. None where unknown (not
    glibc >= 2.33, the thresholds not set, no ``/proc``)."""
    libc = _state["libc"]
    mallinfo2 = getattr(libc, "mallinfo2", None) if libc is not None else None
    if mallinfo2 is None:
        return None
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return resident - int(info.uordblks) - int(info.hblkhd)


class MemoryJobs:
    """The jobs (a track, a stack of embeddings) that want freed memory kept between their
    steps: each step ends with :meth:`step_done`, which returns the memory when no job is
    running, or when the resident memory outside blocks in use grew by more than
    ``keep_bytes`` since the last release (or that is unknown); the last job to end returns
    it once. One per :class:`Predictor`."""

    def __init__(self, keep_bytes: int = KEEP_BETWEEN_STEPS) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self.keep_bytes = keep_bytes
        self._unused_after_release: int | None = None

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
                self._unused_after_release = None

    def step_done(self) -> None:
        if not self._running:
            release_freed_memory()
            return
        unused, after = unused_resident_bytes(), self._unused_after_release
        if unused is None or after is None or unused - after > self.keep_bytes:
            release_freed_memory()
            self._unused_after_release = unused_resident_bytes()
