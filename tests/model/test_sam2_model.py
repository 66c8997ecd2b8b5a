"""SAM 2 model: configurations equal Meta's, checkpoints load strictly, random weights are sensible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine import EmbeddingStore, Predictor, StoreDamageWarning
from napari_sam.model import CheckpointError, build_sam, guess_model_type, random_state_dict
from napari_sam.model.sam2 import SAM2_CONFIGS
from tests.engine.store_helpers import chunk_file
from tests.oracles import sam2 as oracle


@pytest.mark.parametrize("model_type", list(SAM2_CONFIGS))
def test_state_dict_names_and_shapes_match_meta(model_type):
    """Names and shapes equal Meta's SAM 2.1 configs (test configs: with their overrides), so
    Meta's ``{"model": state_dict}`` files load unchanged."""
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in build_sam(model_type).state_dict().items()}
    assert ours == oracle.reference_shapes(model_type)


def test_embed_and_decode_shapes(sam2_model):
    features, (s0, s1) = sam2_model.embed(torch.rand(1, 3, 300, 200) * 255)
    assert features.shape == (1, 256, 16, 16) and s0.shape == (1, 32, 64, 64) and s1.shape == (1, 64, 32, 32)
    points = (torch.tensor([[[10.0, 20.0]]]), torch.tensor([[1]]))
    for multimask, k in ((True, 3), (False, 1)):
        logits, iou = sam2_model.decode(features, points, multimask=multimask, high_res=(s0, s1))
        assert logits.shape == (1, k, 64, 64) and iou.shape == (1, k)
        assert ((iou > 0) & (iou < 1)).all()  # through a sigmoid
    with pytest.raises(ValueError, match="high_res"):
        sam2_model.decode(features, points)


def test_checkpoint_file_of_meta_layout_loads(tmp_path, sam2_state):
    path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": sam2_state}, path)
    model = build_sam("sam2_tiny_test", path)
    assert not model.training
    assert all(torch.equal(v, sam2_state[k]) for k, v in model.state_dict().items())
    assert guess_model_type(sam2_state) == "sam2_tiny_test"


def test_wrong_checkpoints_are_refused_clearly(tmp_path, sam2_state, tiny_checkpoint):
    path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": sam2_state}, path)
    with pytest.raises(CheckpointError) as err:
        build_sam("sam2.1_hiera_t", path)
    msg = str(err.value)
    assert "sam2_tiny.pt" in msg and "'sam2.1_hiera_t'" in msg and "wrong shape keys: image_encoder.trunk" in msg
    assert "'sam2_tiny_test'" in msg  # the suggestion
    with pytest.raises(CheckpointError, match="missing keys: maskmem_tpos_enc.*'vit_tiny_test'"):
        build_sam("sam2_tiny_test", tiny_checkpoint)  # a SAM 1 file
    with pytest.raises(CheckpointError, match="The shapes match model type 'sam2_tiny_test'"):
        build_sam("vit_tiny_test", path)


def test_guess_sam2_types():
    for name in ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "sam2_tiny_test"):
        with torch.device("meta"):
            assert guess_model_type(build_sam(name).state_dict()) == name


def test_random_weights_give_nontrivial_outputs(sam2_model, rgb_image):
    """Guard for the parity tests: masks with both values, objects present, seeded values."""
    p = Predictor(sam2_model, "cpu")
    p.set_image(rgb_image)
    pred = p.predict(np.array([[80.0, 100.0]]), np.array([1]))
    fractions = pred.masks.mean(axis=(1, 2))
    assert ((fractions > 0.01) & (fractions < 0.99)).all(), fractions
    emb = p.embedding
    out = sam2_model.decode_frame(sam2_model.no_memory(emb.features), emb.high_res,
                                  (torch.tensor([[[30.0, 20.0]]]), torch.tensor([[1]])), multimask=True)
    assert out.object_score.item() > 0
    a, b = random_state_dict(sam2_model, 5), random_state_dict(sam2_model, 5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["image_encoder.trunk.pos_embed"].abs().max() < 0.2


def test_predictor_api_with_sam2(sam2_model, rgb_image):
    p = Predictor(sam2_model, "cpu")
    p.set_image(rgb_image)
    assert p.image_shape == (300, 400) and p.embedding.high_res is not None
    pred = p.predict(np.array([[80.0, 100.0]]), np.array([1]))
    assert pred.masks.shape == (3, 300, 400) and pred.masks.dtype == bool
    assert pred.scores.shape == (3,) and pred.scores.dtype == np.float32
    assert pred.logits.shape == (3, 64, 64) and np.abs(pred.logits).max() <= 32.0
    refined = p.predict(np.array([[80.0, 100.0]]), np.array([1]), mask_input=pred.logits[:1], multimask=False)
    assert refined.masks.shape == (1, 300, 400)
    boxes = p.predict_boxes(np.array([[30.0, 50.0, 140.0, 170.0], [120.0, 220.0, 270.0, 380.0]]))
    assert boxes.masks.shape == (2, 1, 300, 400)
    batch = p.compute_embeddings([rgb_image, rgb_image[:200]])
    assert torch.allclose(batch[0].features, p.embedding.features, atol=1e-4)  # same values up to float order
    assert torch.allclose(batch[0].high_res[0], p.embedding.high_res[0], atol=1e-4)
    assert batch[1].original_size == (200, 400) and batch[1].input_size == (256, 256)


def test_generate_masks_and_store_accept_sam2_embeddings(sam2_model, rgb_image, tmp_path):
    from napari_sam.engine import VolumeEmbeddings, generate_masks

    p = Predictor(sam2_model, "cpu")
    p.set_image(rgb_image)
    found = generate_masks(p, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    assert found and found[0]["segmentation"].shape == (300, 400)
    again = generate_masks(p.embedding, model=sam2_model, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    assert len(again) == len(found)
    # its one grid point (the image centre) decodes to one of Predictor.predict's masks there
    one = generate_masks(p, points_per_side=1, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0)
    ref = p.predict(np.array([[150.0, 200.0]]))
    assert one and all(any(np.array_equal(r["segmentation"], m) for m in ref.masks) for r in one)
    vol = VolumeEmbeddings(rgb_image[None], p, rgb=True)
    vol.attach_store(tmp_path / "e.zarr")
    emb = vol.embedding((0, 0, 0))
    stored = vol.store.get((0, 0, 0))
    assert torch.equal(stored.features, emb.features)
    assert all(torch.equal(a, b) for a, b in zip(stored.high_res, emb.high_res))
    # a damaged high-resolution chunk (checksummed like the features) makes the entry missing
    chunk = chunk_file(tmp_path / "e.zarr", "high_res_1", (0, 0, 0))
    chunk.write_bytes(b"garbage" + chunk.read_bytes()[7:])
    with pytest.warns(StoreDamageWarning, match="damaged"):
        assert EmbeddingStore(tmp_path / "e.zarr").get((0, 0, 0)) is None


def test_image_encoder_forward_gives_metas_pyramid_and_polls(sam2_model, sam2_state):
    """``image_encoder(x, poll)`` (the encoder convention) equals Meta's ``backbone_fpn``; the
    fused high-resolution path of ``embed`` equals Meta's ``conv_s0``/``conv_s1`` of it."""
    ref = oracle.reference_model("sam2_tiny_test", sam2_state)
    x = torch.rand(1, 3, 256, 256) * 255
    calls = []
    with torch.no_grad():
        ours = sam2_model.image_encoder(sam2_model.preprocess(x), poll=lambda: calls.append(1))
        theirs = ref.image_encoder(sam2_model.preprocess(x))["backbone_fpn"]
        features, high = sam2_model.embed(x)
    assert len(calls) == len(sam2_model.image_encoder.blocks)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(features, theirs[2], atol=1e-4)
    assert torch.allclose(high[0], ref.sam_mask_decoder.conv_s0(theirs[0]), atol=1e-4)
    assert torch.allclose(high[1], ref.sam_mask_decoder.conv_s1(theirs[1]), atol=1e-4)


def test_fingerprint_covers_what_sam2_embeddings_depend_on(sam2_state):
    """The encoder and the decoder's high-resolution projections (part of the embedding), not the
    memory or the rest of the decoder."""
    from napari_sam.engine.fingerprint import model_fingerprint

    def fingerprint(**changes):
        model = build_sam("sam2_tiny_test")
        model.load_state_dict({k: changes.get(k, v) for k, v in sam2_state.items()})
        return model_fingerprint(model)

    base = fingerprint()
    assert fingerprint(**{"sam_mask_decoder.conv_s0.weight": sam2_state["sam_mask_decoder.conv_s0.weight"] + 1}) != base
    assert fingerprint(**{"image_encoder.trunk.pos_embed": sam2_state["image_encoder.trunk.pos_embed"] + 1}) != base
    assert fingerprint(**{"memory_attention.norm.weight": sam2_state["memory_attention.norm.weight"] + 1}) == base
