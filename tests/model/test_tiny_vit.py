"""MobileSAM's TinyViT (``vit_t``): state-dict layout, parity with ``mobile_sam`` on identical random
weights (features within 1e-4; predictor masks, scores and logits as for vit_b), cancellation."""

from __future__ import annotations

import pytest
import torch

from napari_sam.engine import Predictor
from napari_sam.model import build_sam, guess_model_type, random_state_dict
from napari_sam.model.tiny_vit import window_offset_index
from tests.model.parity import check, compare
from tests.oracles import mobile_sam


def vit_t_state(seed: int = 3) -> dict[str, torch.Tensor]:
    """Random vit_t weights whose attention biases are large enough to matter."""
    state = random_state_dict(build_sam("vit_t"), seed=seed)
    for key in state:
        if key.endswith("attention_biases"):
            state[key] = state[key] * 20
    return state


@pytest.fixture(scope="module")
def vit_t_weights():
    return vit_t_state()


def test_state_dict_is_mobile_sams():
    """Names, order and shapes of every parameter and buffer are MobileSAM's, so its files (and
    micro-sam's vit_t_* finetunes) load unchanged and strictly."""
    ms = mobile_sam.load()
    ours = build_sam("vit_t").state_dict()
    theirs = ms.sam_model_registry["vit_t"]().state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert {k: v.dtype for k, v in ours.items()} == {k: v.dtype for k, v in theirs.items()}


def test_size_and_type_guess():
    model = build_sam("vit_t")
    encoder = sum(p.numel() for n, p in model.image_encoder.named_parameters() if not n.startswith(("head", "norm_head")))
    assert 5.5e6 < encoder < 6.0e6  # "5M parameters" (MobileSAM)
    assert guess_model_type(model.state_dict()) == "vit_t"
    assert guess_model_type(build_sam("vit_t_tiny_test").state_dict()) == "vit_t_tiny_test"


def test_window_offsets():
    """The bias index of a window pair is the offset (|dy|, |dx|) between the two positions."""
    idx = window_offset_index(3)
    assert idx.shape == (9, 9)
    assert idx[0, 8] == 2 * 3 + 2 and idx[4, 4] == 0 and idx[1, 3] == 1 * 3 + 1
    assert torch.equal(idx, idx.T)


def test_predictor_parity(vit_t_weights, rgb_image):
    """The whole predictor on vit_t: features within 1e-4, masks differ in <= 0.1 % of pixels,
    scores within 1e-4, low-res logits within 1e-3."""
    ms = mobile_sam.load()
    model = build_sam("vit_t")
    model.load_state_dict(vit_t_weights)
    worst = compare(Predictor(model, "cpu"), ms.SamPredictor(mobile_sam.reference_sam(vit_t_weights)), rgb_image)
    print("vit_t parity:", worst)
    check(worst)
    assert worst["features"] < 1e-4
    assert float(model.image_encoder.layers[1].blocks[0].attn.attention_biases.abs().max()) > 1  # biases matter


def test_poll_runs_between_blocks_and_stops():
    encoder = build_sam("vit_t_tiny_test").eval().image_encoder
    x = torch.zeros(1, 3, 1024, 1024)
    calls = []
    with torch.no_grad():
        encoder(x, poll=lambda: calls.append(1))
    assert len(calls) == len(encoder.blocks) == 12

    def stop():
        if len(calls) >= 15:
            raise KeyboardInterrupt
        calls.append(1)

    with pytest.raises(KeyboardInterrupt), torch.no_grad():
        encoder(x, poll=stop)
    assert len(calls) == 15


def test_predictor_cancel_and_int8(rgb_image):
    """vit_t goes through the Predictor like the ViTs: cancellation, and int8 (which quantizes
    the Linear layers of ``encoder.blocks``)."""
    from napari_sam.engine import Cancelled

    state = random_state_dict(build_sam("vit_t_tiny_test"), seed=0)
    models = [build_sam("vit_t_tiny_test") for _ in range(2)]
    for m in models:
        m.load_state_dict(state)
    exact = Predictor(models[0], "cpu")
    with pytest.raises(Cancelled):
        exact.compute_embedding(rgb_image, cancel=lambda: True)
    ref = exact.compute_embedding(rgb_image).features
    features = Predictor(models[1], "cpu", precision="int8").compute_embedding(rgb_image).features
    rel = float((features - ref).norm() / ref.norm())
    assert 0 < rel < 0.1, rel  # about 5 % on these random weights
