"""Freed CPU memory is reused (no page faults on repeated large buffers), and can be opted out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from napari_sam.engine import allocator

PROBE = """
import resource
import torch
from napari_sam.engine import Predictor
from napari_sam.engine.allocator import _state
from napari_sam.model import build_sam

predictor = Predictor(build_sam("vit_tiny_test"), "cpu")  # tunes the allocator unless opted out
features = torch.randn(1, 256, 64, 64)
points = (torch.tensor([[[400.0, 300.0]]]), torch.tensor([[1]]))
for _ in range(3):  # warm-up: the heap grows once
    predictor.model.decode(features, points)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    predictor.model.decode(features, points)
print(int(_state["tuned"]), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(env_value: str) -> tuple[bool, int]:
    env = {**os.environ, "NAPARI_SAM_MALLOC_TUNING": env_value, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "1", int(faults)


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_tuning_removes_page_faults_and_can_be_turned_off():
    tuned, faults = probe("1")
    untuned, faults_default = probe("0")
    assert tuned and not untuned
    # a decode allocates and frees ~35 MB: thousands of fresh pages each time by default
    assert faults_default > 20_000, faults_default
    assert faults < faults_default / 10, (faults, faults_default)


def test_release_is_harmless_without_tuning(monkeypatch):
    monkeypatch.setitem(allocator._state, "libc", None)
    allocator.release_freed_memory()


def test_jobs_keep_freed_memory_between_steps_within_a_bound(monkeypatch):
    released, unused = [], {"bytes": 10}

    def release():
        released.append(unused["bytes"])
        unused["bytes"] = 10  # what a trim leaves: code, the interpreter's own memory

    monkeypatch.setattr(allocator, "release_freed_memory", release)
    monkeypatch.setattr(allocator, "unused_resident_bytes", lambda: unused["bytes"])
    jobs = allocator.MemoryJobs(keep_bytes=100)
    unused["bytes"] = 30
    jobs.step_done()  # no job: returned at once
    assert released == [30]
    with jobs.job():
        with jobs.job():  # a second job at the same time
            unused["bytes"] = 50
            jobs.step_done()  # the first step of a job: returned, the level after it noted
            unused["bytes"] = 90
            jobs.step_done()  # grew by 80: kept
            assert released == [30, 50]
            unused["bytes"] = 140
            jobs.step_done()  # grew by 130: returned
            assert released == [30, 50, 140]
            unused["bytes"] = 40
            jobs.step_done()
        assert released == [30, 50, 140]  # one job still runs
    assert released == [30, 50, 140, 40]  # the last one ended
    monkeypatch.setattr(allocator, "unused_resident_bytes", lambda: None)
    with jobs.job():
        unused["bytes"] = 7
        jobs.step_done()  # how much is kept is unknown: returned
    assert released == [30, 50, 140, 40, 7, 10]


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_unused_resident_bytes_counts_a_freed_buffer_until_released():
    import numpy as np

    assert allocator.keep_freed_memory()
    if allocator.unused_resident_bytes() is None:
        pytest.skip("glibc without mallinfo2")
    allocator.release_freed_memory()
    before = allocator.unused_resident_bytes()
    buffer = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched: under the 128 MiB mmap threshold, from the heap
    assert abs(allocator.unused_resident_bytes() - before) < 16 << 20  # in use: not counted
    del buffer
    assert allocator.unused_resident_bytes() - before >= 60 << 20  # freed and kept resident
    allocator.release_freed_memory()
    assert allocator.unused_resident_bytes() - before < 16 << 20  # given back
