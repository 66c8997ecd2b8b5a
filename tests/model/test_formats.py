"""Checkpoint layouts: torch_em / micro-sam training checkpoints (``sam.`` prefix, pickled Python
objects that are never run), micro-sam exports with a decoder, decoder files, clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from napari_sam import weights
from napari_sam.model import CheckpointError, build_decoder, build_sam, random_state_dict, read_state_dict
from tests.model import tripwire


@pytest.fixture(scope="module")
def sam_state():
    return random_state_dict(build_sam("vit_t_tiny_test"), seed=4)


@pytest.fixture(scope="module")
def dec_state():
    return random_state_dict(build_decoder(upsampler="interpolate"), seed=6)


def test_training_checkpoint_loads_without_running_its_objects(tmp_path, sam_state, dec_state):
    path = tmp_path / "best.pt"
    torch.save({"iteration": 1000, "model_state": {"sam." + k: v for k, v in sam_state.items()},
                "optimizer_state": {"param_groups": [{"lr": 1e-5}]}, "init": {"config": tripwire.TrainerConfig(),
                "optimizer": tripwire.Optimizer()}, "decoder_state": dec_state}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the plain safe load refuses the file
    state = read_state_dict(path)
    assert set(state) == set(sam_state) and all(torch.equal(state[k], v) for k, v in sam_state.items())
    assert tripwire.TRIPPED == []  # nothing in the file was called
    predictor = weights.load_model(path, device="cpu")
    assert predictor.model_name == "vit_t_tiny_test"
    decoder = weights.load_decoder(path)
    assert decoder.model_name is None and weights.has_decoder(path)
    assert tripwire.TRIPPED == []


def test_micro_sam_export_with_decoder(tmp_path, sam_state, dec_state):
    path = tmp_path / "exported.pt"
    torch.save({"model_state": sam_state, "decoder_state": dec_state}, path)
    assert set(read_state_dict(path)) == set(sam_state)
    decoder = weights.load_decoder(path)
    assert all(torch.equal(decoder.state_dict()[k], v) for k, v in dec_state.items())
    plain = tmp_path / "plain.pt"
    torch.save(sam_state, plain)
    assert not weights.has_decoder(plain)
    with pytest.raises(CheckpointError, match="plain.pt holds no instance-segmentation decoder"):
        weights.load_decoder(plain)


def test_decoder_file_is_not_a_model(tmp_path, dec_state):
    path = tmp_path / "vit_b_decoder.pt"
    torch.save(dec_state, path)
    with pytest.raises(CheckpointError, match="is an instance-segmentation decoder, not a SAM model"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="vit_b_decoder.pt"):
        weights.load_model(path)


def test_foreign_files(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        read_state_dict(path)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(text)
    mixed = tmp_path / "mixed.pt"
    torch.save({"model_state": {"sam.x": torch.zeros(1), "note": "text"}}, mixed)
    with pytest.raises(CheckpointError, match="does not hold a SAM model"):
        read_state_dict(mixed)
