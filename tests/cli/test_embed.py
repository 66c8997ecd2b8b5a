"""`napari-sam embed`: stacks and large planes to a resumable zarr store."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_sam.cli.embed import main
from napari_sam.engine import ChannelComposite, EmbeddingStore, Predictor, VolumeEmbeddings
from napari_sam.engine.store import Normalisation
from napari_sam.io.images import guess_rgb


@pytest.fixture()
def stack_tif(tmp_path):
    rng = np.random.default_rng(4)
    data = rng.integers(0, 4000, (3, 64, 80), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data)
    return path, data


def test_embed_stack_resumes_and_is_reused(stack_tif, tiny_checkpoint, tmp_path, capsys, tiny_model):
    path, data = stack_tif
    out = tmp_path / "emb.zarr"
    args = [str(path), "--model", str(tiny_checkpoint), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    store = EmbeddingStore(out)
    assert store.done_mask().shape == (3, 1, 1) and store.done_mask().all()
    limits = (float(data.min()), float(data.max()))  # default normalisation, recorded for readers
    assert store.info.normalisation == Normalisation(False, limits)
    saved = store.get((1, 0, 0)).features.clone()

    # Simulate an interruption: plane 1 was never finished.
    store.group["done"][1, 0, 0] = False
    capsys.readouterr()
    assert main(args) == 0
    assert "1 embedding(s)" in capsys.readouterr().out
    assert torch.equal(EmbeddingStore(out).get((1, 0, 0)).features, saved)
    assert main(args) == 0
    assert "nothing to compute" in capsys.readouterr().out

    # The engine (and so the widget) reuses it without computing anything.
    predictor = Predictor(tiny_model, "cpu")
    vol = VolumeEmbeddings(data, predictor)
    vol.attach_store(out, create=False)
    assert vol.missing() == []
    direct = predictor.compute_embedding(data[1], vol.contrast_limits)
    assert torch.allclose(vol.embedding((1, 0, 0)).features, direct.features)


def test_embed_large_plane_by_tiles(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(5)
    path = tmp_path / "big.npy"
    np.save(path, rng.integers(0, 255, (200, 300), dtype=np.uint8))
    out = tmp_path / "big.zarr"
    assert main([str(path), "--model", str(tiny_checkpoint), "--out", str(out), "--tile", "128",
                 "--halo", "16", "--device", "cpu"]) == 0
    store = EmbeddingStore(out)
    assert store.info.tile == 128 and store.info.halo == 16 and store.info.index_shape == (2, 3)
    assert store.done_mask().all()
    assert store.get((1, 2)).original_size == (200 - 112, 300 - 240)


def test_embed_refuses_mismatched_store_and_bad_input(stack_tif, tiny_checkpoint, tmp_path, capsys):
    path, data = stack_tif
    out = tmp_path / "emb.zarr"
    assert main([str(path), "--model", str(tiny_checkpoint), "--out", str(out), "--device", "cpu"]) == 0
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, data[::-1].copy())
    assert main([str(other), "--model", str(tiny_checkpoint), "--out", str(out), "--device", "cpu"]) == 2
    assert "other pixels" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.tif"), "--model", str(tiny_checkpoint), "--out", str(out)]) == 2
    assert "no such image" in capsys.readouterr().err


def test_embed_one_channel_or_channels_as_rgb(tmp_path, tiny_checkpoint, tiny_model, capsys):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 4000, (2, 3, 40, 50), dtype=np.uint16)  # (Z, C, Y, X)
    path = tmp_path / "cells.npy"
    np.save(path, data)
    base = [str(path), "--model", str(tiny_checkpoint), "--device", "cpu", "--channel-axis", "1"]
    assert main(base + ["--out", str(tmp_path / "c2.zarr"), "--channel", "2"]) == 0
    store = EmbeddingStore(tmp_path / "c2.zarr")
    assert store.info.index_shape == (2, 1, 1)
    assert store.info.normalisation == Normalisation(False, (float(data[:, 2].min()), float(data[:, 2].max())))
    predictor = Predictor(tiny_model, "cpu")
    direct = predictor.compute_embedding(data[1, 2], store.info.normalisation.contrast_limits)
    assert torch.allclose(store.get((1, 0, 0)).features, direct.features)

    assert main(base + ["--out", str(tmp_path / "rgb.zarr"), "--channel", "rgb"]) == 0
    store = EmbeddingStore(tmp_path / "rgb.zarr")
    assert store.info.normalisation == Normalisation(True, None)
    direct = predictor.compute_embedding(ChannelComposite(data, 1)[0])
    assert torch.allclose(store.get((0, 0, 0)).features, direct.features)

    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "bad.zarr"), "--channel", "red"]) == 2
    assert "channel number or 'rgb'" in capsys.readouterr().err
    assert main(base[:-1] + ["2", "--out", str(tmp_path / "bad.zarr")]) == 2
    assert "not a leading axis" in capsys.readouterr().err


def test_embed_refuses_channel_options_it_would_ignore_or_misapply(stack_tif, tiny_checkpoint, tmp_path, capsys):
    path, _ = stack_tif
    base = [str(path), "--model", str(tiny_checkpoint), "--device", "cpu", "--out", str(tmp_path / "e.zarr")]
    with pytest.raises(SystemExit) as exit_:
        main(base + ["--channel", "2"])  # without --channel-axis: every channel would be a plane
    assert exit_.value.code == 2 and "--channel needs --channel-axis" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(base + ["--channel-axis", "0", "--channel", "rgb", "--contrast-limits", "0", "100"])
    assert exit_.value.code == 2 and "--contrast-limits cannot be used with --channel rgb" in capsys.readouterr().err
    assert not (tmp_path / "e.zarr").exists()


def test_embed_fails_when_the_store_cannot_be_written(stack_tif, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    path, _ = stack_tif
    out = tmp_path / "emb.zarr"

    def refuse(self, index, embedding):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(EmbeddingStore, "put", refuse)
    assert main([str(path), "--model", str(tiny_checkpoint), "--out", str(out), "--device", "cpu"]) == 1
    assert "cannot write to" in capsys.readouterr().err


def test_guess_rgb():
    assert guess_rgb((10, 10, 3)) and guess_rgb((5, 10, 10, 4))
    assert not guess_rgb((10, 3)) and not guess_rgb((3, 10, 10))


def test_napari_sam_embed_subcommand(stack_tif, tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    path, _ = stack_tif
    out = tmp_path / "sub.zarr"
    result = subprocess.run([sys.executable, "-m", "napari_sam.cli", "embed", str(path), "--model",
                             str(tiny_checkpoint), "--out", str(out), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert EmbeddingStore(out).done_mask().all()


def test_embed_with_a_registered_finetune(tmp_path, monkeypatch, capsys):
    """Any registered model works by name: here vit_t (MobileSAM's TinyViT), its file placed in the
    cache with random weights."""
    from napari_sam.model import build_sam, random_state_dict
    from napari_sam.weights import REGISTRY
    from tests.weights_helpers import placed

    source = tmp_path / "w.pt"
    torch.save(random_state_dict(build_sam("vit_t"), seed=0), source)
    monkeypatch.setitem(REGISTRY, "vit_t", placed("vit_t", source.read_bytes()))
    image = tmp_path / "img.npy"
    np.save(image, np.random.default_rng(0).integers(0, 255, (2, 48, 64), dtype=np.uint8))
    out = tmp_path / "emb.zarr"
    assert main([str(image), "--out", str(out), "--model", "vit_t", "--device", "cpu"]) == 0
    store = EmbeddingStore(out)
    assert store.info.model == "vit_t" and store.done_mask().all()
