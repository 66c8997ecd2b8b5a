"""Registry helpers for tests: registered models whose files are placed in the (per-test) cache by
hand, so that nothing is ever downloaded."""

from __future__ import annotations

import socket
from dataclasses import replace

from napari_sam import weights
from napari_sam.weights import REGISTRY, WeightsInfo, hash_of


def closed_port() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def placed(name: str, data: bytes) -> WeightsInfo:
    """Put ``data`` in the cache as registry model ``name``'s file; returns an info whose hash fits
    and whose URL cannot be reached (so nothing is downloaded)."""
    info = REGISTRY[name]
    weights.cache_dir().mkdir(parents=True, exist_ok=True)
    path = weights.cache_dir() / info.filename
    path.write_bytes(data)
    return replace(info, url=closed_port() + "/x", xxh128=hash_of(path, "xxh128"))
