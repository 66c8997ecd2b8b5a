"""Measuring helpers shared by the benchmarks: a test image, peak memory, timing with process CPU
time, mask IoU, the machine's description."""

from __future__ import annotations

import os
import platform
import threading
import time

import numpy as np
import torch


def test_image(size: int = 1024, seed: int = 0) -> np.ndarray:
    """A ``size x size`` uint8 RGB picture: textured background and bright discs."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:size, :size]
    img = rng.integers(0, 60, (size, size, 3)).astype(np.float32)
    for r, c, rad in [(0.3, 0.4, 0.15), (0.7, 0.6, 0.2), (0.2, 0.8, 0.08)]:
        img[(rr - r * size) ** 2 + (cc - c * size) ** 2 < (rad * size) ** 2] += 150
    return img.clip(0, 255).astype(np.uint8)


class PeakMemory:
    """Peak memory above the starting level inside a ``with`` block, in MiB: CUDA allocator
    peak on GPUs; resident set size sampled every 2 ms on the CPU (Linux), from a start with
    the allocator's kept free memory given back."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, float("nan")

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            from napari_sam.engine.allocator import release_freed_memory

            release_freed_memory()  # memory kept for reuse would hide the block's own peak
            self._base = self._peak = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._rss())
        self.peak_mib = (peak - self._base) / 2**20


CPU_TIMES: dict[str, list[float]] = {}  # process CPU seconds of the last timed() calls, by label


def timed(fn, device: torch.device, label: str | None = None):
    """``(seconds, result)`` of ``fn()``, synchronising CUDA around it. With a ``label``, the
    process CPU time is recorded too (a load-robust figure on a busy machine)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if label:
        CPU_TIMES.setdefault(label, []).append(time.process_time() - c)
    return time.perf_counter() - t, out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
