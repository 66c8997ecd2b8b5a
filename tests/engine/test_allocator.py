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
