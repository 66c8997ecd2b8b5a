"""Freed CPU memory is reused (no page faults on repeated large buffers), and can be opted out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from napari_sam.engine import allocator

PROBE = """
import resource, sys
import torch
from napari_sam.engine.allocator import keep_freed_memory, release_freed_memory
tuned = keep_freed_memory()
x = torch.ones(4096, 768)
for _ in range(3):  # warm-up: the heap grows once
    torch.nn.functional.linear(x, torch.ones(3072, 768)).relu_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # 50 MB results, freed every time
    torch.nn.functional.linear(x, torch.ones(3072, 768)).relu_()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
release_freed_memory()
print(int(tuned), faults)
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
    # each fresh 50 MB buffer costs ~12,000 faults by default; reused memory costs none
    assert faults_default > 50_000, faults_default
    assert faults < 5_000, faults


def test_release_is_harmless_without_tuning(monkeypatch):
    monkeypatch.setitem(allocator._state, "libc", None)
    allocator.release_freed_memory()
