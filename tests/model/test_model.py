import pytest
import torch

from napari_sam.model import CONFIGS, CheckpointError, build_sam, guess_model_type, random_state_dict
from tests.oracles import sam1 as reference


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_state_dict_names_and_shapes_match_official(model_type):
    """Our parameter names/shapes are exactly those of the official checkpoints."""
    reference.load()
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        ours = build_sam(model_type).state_dict()
        theirs = sam_model_registry[model_type]().state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_build_outputs_shapes(tiny_model):
    x = torch.rand(1, 3, 1024, 683) * 255
    features = tiny_model.embed(x)
    assert features.shape == (1, 256, 64, 64)
    points = (torch.tensor([[[10.0, 20.0]]]), torch.tensor([[1]]))
    logits, iou = tiny_model.decode(features, points=points, multimask=True)
    assert logits.shape == (1, 3, 256, 256) and iou.shape == (1, 3)
    logits, iou = tiny_model.decode(features, points=points, multimask=False)
    assert logits.shape == (1, 1, 256, 256) and iou.shape == (1, 1)


def test_unknown_model_type():
    with pytest.raises(ValueError, match="vit_b"):
        build_sam("vit_x")


def test_checkpoint_roundtrip(tiny_checkpoint, tiny_state):
    model = build_sam("vit_tiny_test", tiny_checkpoint)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, tiny_state[key])


def test_wrong_model_type_names_keys_and_suggests(tiny_checkpoint):
    with pytest.raises(CheckpointError) as err:
        build_sam("vit_small_test", tiny_checkpoint)
    msg = str(err.value)
    assert "sam_tiny_test.pth" in msg and "vit_small_test" in msg
    assert "unexpected keys" not in msg  # tiny has fewer blocks: only missing / wrong-shape keys
    assert "missing keys: image_encoder.blocks.2" in msg
    assert "'vit_tiny_test'" in msg  # the suggestion


def test_foreign_files_are_refused_clearly(tmp_path, tiny_state):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        build_sam("vit_tiny_test", text)
    extra = dict(tiny_state, **{"something.else": torch.zeros(1)})
    path = tmp_path / "extra.pth"
    torch.save(extra, path)
    with pytest.raises(CheckpointError, match="unexpected keys: something.else"):
        build_sam("vit_tiny_test", path)
    with pytest.raises(FileNotFoundError):
        build_sam("vit_tiny_test", tmp_path / "missing.pth")


def test_guess_model_type_from_shapes():
    for name in CONFIGS:
        with torch.device("meta"):
            assert guess_model_type(build_sam(name).state_dict()) == name
    assert guess_model_type({"x": torch.zeros(1)}) is None


def test_random_state_dict_is_deterministic():
    model = build_sam("vit_tiny_test")
    a, b, c = random_state_dict(model, 3), random_state_dict(model, 3), random_state_dict(model, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["image_encoder.pos_embed"], c["image_encoder.pos_embed"])
