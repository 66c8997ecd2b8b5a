"""Predictor behaviour beyond parity: inputs, coordinates, validation, embeddings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_sam.engine import Cancelled, Embedding, Geometry, Predictor, resolve_device, to_rgb_uint8


@pytest.fixture()
def predictor(tiny_model, rgb_image):
    p = Predictor(tiny_model, device="cpu")
    p.set_image(rgb_image)
    return p


def test_state_and_shapes(tiny_model, rgb_image):
    p = Predictor(tiny_model, device="cpu")
    assert not p.is_image_set and p.image_shape is None
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(points=[[1, 1]])
    p.set_image(rgb_image)
    assert p.is_image_set and p.image_shape == (300, 400)
    pred = p.predict(points=np.array([[80.0, 100.0]]), labels=np.array([1]))
    assert pred.masks.shape == (3, 300, 400) and pred.masks.dtype == bool
    assert pred.scores.shape == (3,) and pred.scores.dtype == np.float32
    assert pred.logits.shape == (3, 256, 256) and pred.logits.dtype == np.float32
    single = p.predict(points=[[80.0, 100.0]], multimask=False, mask_input=pred.logits[1:2])
    assert single.masks.shape == (1, 300, 400) and single.scores.shape == (1,)
    p.reset_image()
    assert not p.is_image_set


def test_labels_default_to_foreground(predictor):
    a = predictor.predict(points=[[80.0, 100.0]])
    b = predictor.predict(points=[[80.0, 100.0]], labels=[1])
    c = predictor.predict(points=[[80.0, 100.0]], labels=[0])
    assert np.array_equal(a.logits, b.logits)
    assert not np.array_equal(a.logits, c.logits)


def test_row_col_convention():
    """napari (row, col) becomes model (x, y) = (col, row) scaled to the resized input."""
    g = Geometry.for_image(300, 400, 1024)
    assert g.input_size == (768, 1024)
    xy = g.points_to_model(np.array([[30.0, 100.0]]))
    np.testing.assert_allclose(xy, [[100.0 * 1024 / 400, 30.0 * 768 / 300]], rtol=1e-6)
    box = g.boxes_to_model(np.array([10.0, 20.0, 30.0, 40.0]))
    np.testing.assert_allclose(box, [[20 * 2.56, 10 * 2.56, 40 * 2.56, 30 * 2.56]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int32, np.float64])
def test_any_numeric_dtype_is_scaled(dtype):
    img = (np.arange(100 * 80).reshape(100, 80) * 3).astype(dtype)
    rgb = to_rgb_uint8(img)
    assert rgb.shape == (100, 80, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_contrast_limits_and_non_finite_values():
    img = np.array([[0.0, 50.0], [100.0, np.nan], [np.inf, -np.inf]], dtype=np.float32)
    rgb = to_rgb_uint8(img)
    assert rgb[0, 0, 0] == 0 and rgb[1, 0, 0] == 255 and rgb[0, 1, 0] == 128  # min-max of finite values
    assert rgb[1, 1, 0] == 0 and rgb[2, 0, 0] == 255 and rgb[2, 1, 0] == 0
    clipped = to_rgb_uint8(img, contrast_limits=(0, 50))
    assert clipped[0, 1, 0] == 255 and clipped[1, 0, 0] == 255
    flat = to_rgb_uint8(np.full((4, 4), 7.0))
    assert flat.max() == 0


def test_uint8_rgb_passes_unchanged_and_gray_is_repeated(rgb_image):
    assert np.array_equal(to_rgb_uint8(rgb_image), rgb_image)
    gray = rgb_image[..., 1]
    out = to_rgb_uint8(gray)
    assert all(np.array_equal(out[..., c], gray) for c in range(3))
    assert np.array_equal(to_rgb_uint8(gray[..., None]), out)
    assert to_rgb_uint8(np.eye(3, dtype=bool)).max() == 255


@pytest.mark.parametrize("shape", [(10, 10, 4), (10, 10, 2), (3, 10, 10, 3), (0, 5)])
def test_bad_images_are_refused_clearly(shape):
    with pytest.raises(ValueError, match="channel|2D|empty"):
        to_rgb_uint8(np.zeros(shape, np.uint8))


def test_bad_prompts_are_refused_clearly(predictor):
    with pytest.raises(ValueError, match="outside the image"):
        predictor.predict(points=[[10.0, 500.0]])
    with pytest.raises(ValueError, match="labels"):
        predictor.predict(points=[[10.0, 10.0]], labels=[2])
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        predictor.predict(points=[[10.0, 10.0], [20, 20]], labels=[1])
    with pytest.raises(ValueError, match="degenerate box"):
        predictor.predict(box=[10, 10, 10, 50])
    with pytest.raises(ValueError, match="nothing to segment"):
        predictor.predict()
    with pytest.raises(ValueError, match="labels given without points"):
        predictor.predict(labels=[0], box=[10, 10, 40, 50])


def test_embedding_can_be_computed_elsewhere_and_set(tiny_model, rgb_image):
    p = Predictor(tiny_model, device="cpu")
    emb = p.compute_embedding(rgb_image)
    assert isinstance(emb, Embedding) and not p.is_image_set
    assert emb.features.shape == (1, 256, 64, 64)
    assert emb.original_size == (300, 400) and emb.input_size == (768, 1024)
    assert emb.model_name == "vit_tiny_test"
    p.set_embedding(emb)
    a = p.predict(points=[[80.0, 100.0]])
    p.set_image(rgb_image)
    assert np.array_equal(a.logits, p.predict(points=[[80.0, 100.0]]).logits)
    other = Embedding(emb.features, emb.original_size, emb.input_size, "vit_b")
    with pytest.raises(ValueError, match="vit_b"):
        p.set_embedding(other)


def test_embedding_cancel(tiny_model, rgb_image):
    p = Predictor(tiny_model, device="cpu")
    with pytest.raises(Cancelled):
        p.compute_embedding(rgb_image, cancel=lambda: True)
    calls = []

    def cancel_in_second_block():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        p.compute_embedding(rgb_image, cancel=cancel_in_second_block)
    assert len(calls) == 3  # before start, before block 0, before block 1
    assert p.compute_embedding(rgb_image, cancel=lambda: False).features.shape == (1, 256, 64, 64)


def test_several_boxes_at_once(predictor):
    boxes = np.array([[30.0, 50.0, 140.0, 170.0], [150.0, 230.0, 280.0, 380.0]])
    pred = predictor.predict_boxes(boxes)
    assert pred.masks.shape == (2, 1, 300, 400) and pred.scores.shape == (2, 1)
    for i in range(2):
        one = predictor.predict(box=boxes[i], multimask=False)
        np.testing.assert_allclose(pred.logits[i], one.logits, atol=1e-4)
    none = predictor.predict_boxes(np.zeros((0, 4)), multimask=True)
    assert none.masks.shape == (0, 3, 300, 400) and none.scores.shape == (0, 3)
    assert none.logits.shape == (0, 3, 256, 256)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_engine_imports_without_qt_or_napari():
    code = (
        "import sys; from napari_sam.model import build_sam; from napari_sam.engine import Predictor; "
        "import napari_sam.weights; "
        "bad = [m for m in sys.modules if m.split('.')[0] in {'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', "
        "'PySide6', 'magicgui'}]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reversed_or_non_finite_contrast_limits_are_refused(tiny_model):
    img = np.array([[0.0, 50.0], [100.0, 75.0]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"reversed: \(100, 0\)"):
        to_rgb_uint8(img, contrast_limits=(100, 0))  # used to give a black image
    with pytest.raises(ValueError, match="reversed"):
        to_rgb_uint8(img.astype(np.uint8), contrast_limits=(200, 10))  # uint8 with limits too
    with pytest.raises(ValueError, match="finite"):
        to_rgb_uint8(img, contrast_limits=(0, np.nan))
    with pytest.raises(ValueError, match="reversed"):
        Predictor(tiny_model, device="cpu").set_image(img, contrast_limits=(100, 0))


def test_equal_contrast_limits_give_a_black_image():
    """low == high is not an error (a constant image has no range): everything maps to 0."""
    img = np.array([[0.0, 50.0], [100.0, 75.0]], dtype=np.float32)
    assert not to_rgb_uint8(img, contrast_limits=(50, 50)).any()
    assert not to_rgb_uint8(np.full((3, 3), 42, np.uint16)).any()  # default limits of a flat image
