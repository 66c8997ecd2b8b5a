"""Prompts, images and parameters that used to pass silently are refused clearly, before work."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from napari_sam.engine import Embedding, Predictor, VolumeEmbeddings, generate_masks, to_rgb_uint8
from tests.recording import record_calls


@pytest.fixture(scope="module")
def embedding(tiny_state, rgb_image):
    from napari_sam.model import build_sam

    model = build_sam("vit_tiny_test")
    model.load_state_dict(tiny_state)
    return Predictor(model, device="cpu").compute_embedding(rgb_image)  # 300 x 400


@pytest.fixture()
def predictor(tiny_model, embedding):
    p = Predictor(tiny_model, device="cpu")
    p.set_embedding(embedding)
    return p


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("point", [[NAN, 10.0], [10.0, INF], [-INF, 5.0]])
def test_nan_or_infinite_points_are_refused(predictor, point):
    with pytest.raises(ValueError, match="points must be finite"):
        predictor.predict(points=[[50.0, 60.0], point])


@pytest.mark.parametrize("box", [[NAN, 10, 50, 60], [10, 10, INF, 60]])
def test_nan_or_infinite_boxes_are_refused(predictor, box):
    with pytest.raises(ValueError, match="box must be finite"):
        predictor.predict(box=box)
    with pytest.raises(ValueError, match="boxes must be finite"):
        predictor.predict_boxes([[10, 10, 50, 60], box])


def test_a_box_entirely_outside_the_image_is_refused(predictor):
    for box in ([400, 10, 450, 60], [10, -90, 50, -20], [-80, -80, -10, -10]):
        with pytest.raises(ValueError, match="entirely outside the image of shape"):
            predictor.predict(box=box)
    with pytest.raises(ValueError, match="entirely outside"):
        predictor.predict_boxes([[10, 10, 50, 60], [10, 500, 50, 600]])
    assert predictor.predict(box=[250, 350, 330, 450]).masks.any(axis=(1, 2)).all()  # partly inside: fine


def test_a_box_of_the_wrong_size_is_refused(predictor):
    with pytest.raises(ValueError, match="box must be 4 numbers"):
        predictor.predict(box=[1, 2, 3])
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        predictor.predict_boxes(np.zeros((2, 3)))


@pytest.mark.parametrize("shape", [(128, 512), (1, 64, 64), (2, 256, 256), (65536,)])
def test_mask_input_of_the_wrong_shape_is_refused(predictor, shape):
    with pytest.raises(ValueError, match=r"mask_input must be low-res logits of shape \(1, 256, 256\)"):
        predictor.predict(points=[[80.0, 100.0]], mask_input=np.zeros(shape, np.float32))


def test_non_finite_mask_input_is_refused_and_right_shapes_pass(predictor):
    logits = predictor.predict(points=[[80.0, 100.0]]).logits[:1]
    bad = logits.copy()
    bad[0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="mask_input must be finite"):
        predictor.predict(points=[[80.0, 100.0]], mask_input=bad)
    a = predictor.predict(points=[[80.0, 100.0]], mask_input=logits)
    b = predictor.predict(points=[[80.0, 100.0]], mask_input=logits[0])  # (256, 256) too
    assert np.array_equal(a.logits, b.logits) and np.isfinite(a.scores).all()


def test_set_embedding_of_another_models_weights_is_refused(predictor, tiny_state, rgb_image):
    from napari_sam.model import build_sam, random_state_dict

    other = build_sam("vit_tiny_test")
    other.load_state_dict(random_state_dict(other, seed=42))  # same type, other weights
    emb = Predictor(other, "cpu").compute_embedding(rgb_image)
    with pytest.raises(ValueError, match="other weights"):
        predictor.set_embedding(emb)
    with pytest.raises(ValueError, match="other weights"):
        predictor.predict(points=[[80.0, 100.0]], embedding=emb)
    with pytest.raises(ValueError, match="other weights"):
        generate_masks(emb, model=predictor.model, points_per_side=2)
    unknown = Embedding(emb.features, emb.original_size, emb.input_size, emb.model_name)  # made by hand
    predictor.set_embedding(unknown)  # no fingerprint: accepted as before


def test_embedding_of_the_wrong_shape_or_with_nan_is_refused(predictor):
    emb = predictor.embedding
    with pytest.raises(ValueError, match="shape"):
        predictor.set_embedding(Embedding(emb.features[:, :128], emb.original_size, emb.input_size, emb.model_name))
    nan = emb.features.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        predictor.set_embedding(Embedding(nan, emb.original_size, emb.input_size, emb.model_name))


@pytest.mark.parametrize("limits", [(0, 10, 20), (5,), (), "ab"])
def test_contrast_limits_must_be_exactly_two_numbers(tiny_model, limits):
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    with pytest.raises((ValueError, TypeError), match="contrast_limits must be two"):
        to_rgb_uint8(img, contrast_limits=limits)
    with pytest.raises((ValueError, TypeError), match="contrast_limits must be two"):
        VolumeEmbeddings(img, Predictor(tiny_model, "cpu"), contrast_limits=limits)


def test_float64_near_1e300_keeps_its_contrast():
    img = np.linspace(-1e300, 1e300, 64).reshape(8, 8)
    out = to_rgb_uint8(img)[..., 0]
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 50
    near_max = np.linspace(1.7e308, 1.79e308, 64).reshape(8, 8)  # hi - lo would overflow without care
    assert len(np.unique(to_rgb_uint8(near_max)[..., 0])) > 50


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_near_2_62_with_a_small_range_keep_their_contrast(dtype):
    img = (np.arange(64).reshape(8, 8) * 7).astype(dtype) + dtype(2**62)  # range 441 at 2**62
    out = to_rgb_uint8(img)[..., 0]
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) == 64
    same = to_rgb_uint8(np.arange(64).reshape(8, 8) * 7)[..., 0]
    assert np.array_equal(out, same)


def test_32_bit_integers_near_their_top_keep_their_contrast():
    img = (np.arange(64).reshape(8, 8) + 2**32 - 100).astype(np.uint32)
    assert len(np.unique(to_rgb_uint8(img)[..., 0])) == 64


def test_complex_images_are_refused(tiny_model):
    img = np.ones((10, 10), np.complex64)
    with pytest.raises(TypeError, match="complex"):
        to_rgb_uint8(img)
    with pytest.raises(TypeError, match="complex"):
        Predictor(tiny_model, "cpu").compute_embedding(img)
    with pytest.raises(TypeError, match="complex"):
        VolumeEmbeddings(np.ones((2, 10, 10), np.complex128), Predictor(tiny_model, "cpu"))


# --- generate_masks --------------------------------------------------------------------


@pytest.fixture()
def counted(predictor, monkeypatch):
    """``predictor`` whose decoder and encoder calls are counted (no work may happen)."""
    decodes = record_calls(monkeypatch, predictor.model, "decode")
    embeds = record_calls(monkeypatch, predictor, "compute_embedding")
    return predictor, (decodes, embeds)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(points_per_side=2.5), TypeError, "points_per_side must be an integer"),
    (dict(points_per_side=True), TypeError, "points_per_side must be an integer"),
    (dict(points_per_side=0), ValueError, "points_per_side must be an integer >= 1"),
    (dict(points_per_batch=0), ValueError, "points_per_batch"),
    (dict(pred_iou_thresh=NAN), ValueError, "pred_iou_thresh must be a finite number"),
    (dict(stability_score_thresh=NAN), ValueError, "stability_score_thresh must be a finite number"),
    (dict(stability_score_thresh=1.5), ValueError, "stability_score_thresh"),
    (dict(box_nms_thresh=NAN), ValueError, "box_nms_thresh"),
    (dict(box_nms_thresh=-0.1), ValueError, "box_nms_thresh"),
    (dict(stability_score_offset=INF), ValueError, "stability_score_offset"),
    (dict(crop_overlap_ratio=-1), ValueError, r"crop_overlap_ratio must be a finite number in \[0, 1\)"),
    (dict(crop_overlap_ratio=NAN), ValueError, "crop_overlap_ratio"),
    (dict(crop_overlap_ratio=1.0), ValueError, "crop_overlap_ratio"),
    (dict(crop_n_layers=6), ValueError, "crop_n_layers must be an integer from 0 to 4"),
    (dict(crop_n_layers=1.0), TypeError, "crop_n_layers must be an integer"),
    (dict(min_mask_region_area=-5), ValueError, "min_mask_region_area"),
])
def test_generate_masks_settings_are_checked_before_any_work(counted, kwargs, error, match):
    predictor, calls = counted
    with pytest.raises(error, match=match):
        generate_masks(predictor, **kwargs)
    assert calls == ([], [])


def test_crop_layers_on_a_too_small_image_fail_before_computing(tiny_model, monkeypatch):
    predictor = Predictor(tiny_model, "cpu")
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (3, 150, 3), dtype=np.uint8))
    calls = []
    monkeypatch.setattr(predictor.model, "decode", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"crop_n_layers=2 cuts an image of shape \(3, 150\) into empty crops.*"
                                         r"at most 1 crop layer"):
        generate_masks(predictor, points_per_side=2, crop_n_layers=2)
    assert calls == []


def test_generate_masks_signature_is_unchanged():
    params = inspect.signature(generate_masks).parameters
    assert list(params) == ["predictor_or_embedding", "points_per_side", "points_per_batch", "pred_iou_thresh",
                            "stability_score_thresh", "stability_score_offset", "box_nms_thresh", "crop_n_layers",
                            "crop_overlap_ratio", "min_mask_region_area", "progress", "cancel", "model"]
    assert params["points_per_side"].default == 32 and params["points_per_side"].kind == inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("device", ["banana", "cuda:x", "meta", 3.5])
def test_an_unknown_device_is_a_value_error_naming_the_accepted_ones(device):
    from napari_sam.engine import resolve_device

    with pytest.raises(ValueError, match=r"device .* use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        resolve_device(device)
