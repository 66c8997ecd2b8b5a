"""micro-sam's instance-segmentation decoder: key layout of its files, parity with torch_em's UNETR
(as micro-sam builds it) on identical random weights, both upsampler variants."""

from __future__ import annotations

import pytest
import torch

from napari_sam.model import CheckpointError, build_decoder, build_sam, random_state_dict
from napari_sam.model.unetr import upsampler_of
from tests.oracles import micro_sam

UPSAMPLERS = ["interpolate", "transpose"]


def decoder_state(upsampler: str, seed: int = 5) -> dict[str, torch.Tensor]:
    return random_state_dict(build_decoder(upsampler=upsampler), seed=seed)


def reference_unetr_keys(upsampler: str) -> dict[str, tuple[int, ...]]:
    unetr = micro_sam.load().unetr.UNETR(
        backbone="sam", encoder=build_sam("vit_tiny_test").image_encoder, out_channels=3, use_sam_stats=True,
        final_activation="Sigmoid", use_skip_connection=False, resize_input=True,
        use_conv_transpose=upsampler == "transpose")
    return {k: tuple(v.shape) for k, v in unetr.state_dict().items() if not k.startswith("encoder.")}


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_keys_are_micro_sams(upsampler):
    """A decoder file (micro-sam saves the UNETR's non-encoder state) loads unchanged, and the
    upsampler variant is read off its keys as micro-sam does."""
    ours = build_decoder(upsampler=upsampler).state_dict()
    theirs = reference_unetr_keys(upsampler)
    assert {k: tuple(v.shape) for k, v in ours.items()} == theirs
    assert upsampler_of(ours) == upsampler


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_parity_small_grid(upsampler):
    """A 16 x 16 embedding (a 256-pixel model): maps within 1e-4 of micro-sam's decoder, cropped and
    resized alike (to the model frame, larger and smaller images)."""
    state = decoder_state(upsampler)
    ours = build_decoder(state)
    theirs = micro_sam.reference_decoder(build_sam("vit_tiny_test_256").image_encoder, state)
    x = torch.randn(1, 256, 16, 16, generator=torch.Generator().manual_seed(1))
    out = ours(x)
    with torch.no_grad():
        ref = theirs._forward_impl(x)
        assert float(ref.std()) > 0.01  # maps with structure, not saturated
        for sizes in [((256, 256), (256, 256)), ((256, 171), (600, 400)), ((192, 256), (150, 200))]:
            a, b = ours.to_image(out, *sizes), theirs.postprocess_masks(ref, *sizes)
            assert a.shape == b.shape == (1, 3, *sizes[1])
            assert float((a - b).abs().max()) < 1e-4, sizes


@pytest.mark.slow
def test_parity_full_size():
    """The real shape once: a 64 x 64 embedding decoded to 1024 x 1024 (tens of seconds on 2 cores)."""
    state = decoder_state("interpolate", seed=9)
    ours = build_decoder(state)
    theirs = micro_sam.reference_decoder(build_sam("vit_tiny_test").image_encoder, state)
    x = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(2))
    sizes = (1024, 768), (900, 675)
    a = ours.maps(x, *sizes)
    with torch.no_grad():
        b = theirs(x, *sizes)
    print("decoder parity, max-abs:", float((a - b).abs().max()))
    assert float((a - b).abs().max()) < 1e-4


def test_batch_equals_single_images():
    decoder = build_decoder(decoder_state("transpose"))
    x = torch.randn(2, 256, 8, 8, generator=torch.Generator().manual_seed(3))
    both = decoder(x)
    assert both.shape == (2, 3, 128, 128)
    for i in range(2):
        assert torch.allclose(both[i:i + 1], decoder(x[i:i + 1]), atol=1e-6)


def test_poll_between_stages():
    decoder = build_decoder(decoder_state("interpolate"))
    x = torch.zeros(1, 256, 8, 8)
    calls = []
    decoder(x, poll=lambda: calls.append(1))
    assert len(calls) == 10  # 3 side inputs, base, 3 levels, 3 full-resolution steps

    def stop():
        calls.append(1)
        if len(calls) > 14:  # the fifth poll of the second run
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decoder(x, poll=stop)


def test_wrong_state_is_a_clear_error():
    state = decoder_state("interpolate")
    del state["out_conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing keys: out_conv.weight.*unexpected keys: extra.weight"):
        build_decoder(state, name="mine.pt")
    sam = random_state_dict(build_sam("vit_tiny_test"))
    with pytest.raises(CheckpointError, match="not a micro-sam instance-segmentation decoder"):
        build_decoder(sam, name="sam.pth")
