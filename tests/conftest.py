"""Shared fixtures: small random-weight models and checkpoints (no downloads, ever)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # `tests.oracles`, `tests.synthetic` (also for benchmarks)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty weights cache: nothing leaks into the user's."""
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(tmp_path_factory.mktemp("cache")))


def _random_state(config: str, seed: int) -> dict:
    from napari_sam.model import build_sam, random_state_dict

    return random_state_dict(build_sam(config), seed=seed)


def _model(config: str, state: dict):
    """A fresh model of ``config`` with ``state`` (tests may change it: never shared)."""
    from napari_sam.model import build_sam

    model = build_sam(config)
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_state():
    return _random_state("vit_tiny_test", seed=1)


@pytest.fixture()
def tiny_model(tiny_state):
    return _model("vit_tiny_test", tiny_state)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny_test.pth"
    torch.save(tiny_state, path)
    return path


@pytest.fixture(scope="session")
def sam2_state():
    """Random weights of the small SAM 2 test configuration (``sam2_tiny_test``, 256 x 256 input)."""
    return _random_state("sam2_tiny_test", seed=2)


@pytest.fixture()
def sam2_model(sam2_state):
    return _model("sam2_tiny_test", sam2_state)


@pytest.fixture(scope="session")
def decoder_checkpoint(tmp_path_factory) -> Path:
    """A micro-sam style export with an instance decoder (small random weights, 256 px input):
    ``{"model_state", "decoder_state"}``; the decoder's bias makes foreground everywhere and
    puts both distances near their thresholds, so it finds many (small) objects."""
    from napari_sam.model import build_decoder, random_state_dict

    path = tmp_path_factory.mktemp("ais") / "my_finetune.pt"
    decoder = random_state_dict(build_decoder(upsampler="transpose"), seed=4)
    decoder["out_conv.bias"] = torch.tensor([3.0, -0.4, -0.3])
    torch.save({"model_state": _random_state("vit_tiny_test_256", seed=3), "decoder_state": decoder}, path)
    return path


@pytest.fixture(scope="session")
def rgb_image() -> np.ndarray:
    """A 300 x 400 uint8 RGB picture with a few bright discs on a textured background."""
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[:300, :400]
    img = rng.integers(0, 60, (300, 400, 3)).astype(np.float32)
    for r, c, rad in [(80, 100, 40), (200, 300, 60), (220, 90, 25)]:
        img[(rr - r) ** 2 + (cc - c) ** 2 < rad**2] += 150
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture()
def file_server():
    """An HTTP server on 127.0.0.1 serving the bytes of ``files[path]`` (404 elsewhere); yields
    ``(base_url, files, hits)``: fill ``files`` before requesting."""
    import http.server
    import threading

    files: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            if self.path not in files:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[self.path])))
            self.end_headers()
            self.wfile.write(files[self.path])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files, hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def stack():
    """(5, 96, 128) uint16: a bright disc drifting through z on a noisy background."""
    from tests.synthetic import drifting_disc

    return drifting_disc((5,))


@pytest.fixture()
def count_embeddings(monkeypatch):
    """Every embedding computed from now on (in any thread) is counted."""
    from napari_sam.engine import Predictor

    calls = []
    original = Predictor.compute_embedding

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "compute_embedding", counting)
    return calls


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory) -> Path:
    """Random weights of the smallest SAM 2 test model (``sam2_tiny128_test``, 128 x 128 input, fast
    enough to track through stacks in the annotator tests) as a local file in Meta's layout
    (``{"model": state_dict}``, ``.pt``)."""
    path = tmp_path_factory.mktemp("ckpt2") / "sam2_tiny128_test.pt"
    torch.save({"model": _random_state("sam2_tiny128_test", seed=1)}, path)
    return path
