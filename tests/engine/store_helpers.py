"""Helpers for store tests: a complete store of a stack, and the file of one chunk."""

from __future__ import annotations

from pathlib import Path

from napari_sam.engine import VolumeEmbeddings


def stored_stack(stack, predictor, tmp_path: Path, name: str = "emb.zarr") -> Path:
    """A complete store of every plane of ``stack``."""
    path = tmp_path / name
    vol = VolumeEmbeddings(stack, predictor)
    vol.attach_store(path)
    vol.precompute()
    return path


def chunk_file(store: Path, array: str, index: tuple[int, ...]) -> Path:
    """The file of ``array``'s chunk for item ``index`` (zarr v3 default chunk keys; the
    per-item arrays have one chunk along their trailing axes)."""
    trailing = {"features": 3, "high_res_0": 3, "high_res_1": 3, "sizes": 1, "done": 0}[array]
    key = "/".join(str(i) for i in (*index, *(0,) * trailing))
    path = store / array / "c" / key
    assert path.is_file(), path
    return path
