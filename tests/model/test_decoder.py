"""The decoder's rewritten pieces equal the plain formulas they replace (float tolerance)."""

from __future__ import annotations

import pytest
import torch

from napari_sam.model.mask_decoder import TokenAttention, to_tokens


@pytest.fixture()
def decoder(tiny_model):
    return tiny_model.mask_decoder


def plain_upscale(decoder, image, hyper, h, w):
    """The textbook path: tokens back to NCHW, the transposed convolutions, then the products."""
    b = image.shape[0]
    up = decoder.output_upscaling(image.transpose(1, 2).reshape(b, -1, h, w))
    return (hyper @ up.flatten(2)).reshape(b, hyper.shape[1], *up.shape[-2:])


@torch.no_grad()
@pytest.mark.parametrize("per_prompt", [True, False])  # the CPU loop, and the batched form other devices use
def test_upscale_masks_equals_transposed_convolutions(decoder, per_prompt, monkeypatch):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 64 * 64, 256, generator=g)
    hyper = torch.randn(2, 3, 32, generator=g)
    if not per_prompt:  # what a CUDA tensor takes; the arithmetic is the same on the CPU
        image = FakeDevice(image)
    ours = decoder.upscale_masks(image, hyper, 64, 64)
    assert ours.shape == (2, 3, 256, 256)
    torch.testing.assert_close(ours, plain_upscale(decoder, image, hyper, 64, 64), rtol=1e-4, atol=1e-4)


class FakeDevice(torch.Tensor):
    """A CPU tensor that says it lives elsewhere (to reach the non-CPU code path)."""

    def __new__(cls, data):
        return torch.Tensor._make_subclass(cls, data)

    @property
    def device(self):
        return torch.device("meta")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        return out.as_subclass(torch.Tensor) if isinstance(out, FakeDevice) else out


@torch.no_grad()
@pytest.mark.parametrize("broadcast", [False, True])
def test_reassociated_attentions_equal_plain_attention(broadcast):
    torch.manual_seed(0)
    attn = TokenAttention(256, 8, downsample=2)
    image = torch.randn(1 if broadcast else 3, 4096, 256)
    image = image.expand(3, -1, -1) if broadcast else image
    tokens = torch.randn(3, 7, 256)
    torch.testing.assert_close(attn.image_to_tokens(image, tokens, tokens), attn(image, tokens, tokens),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(attn.tokens_to_image(tokens, image, image), attn(tokens, image, image),
                               rtol=1e-4, atol=1e-5)


def test_to_tokens_converts_broadcast_batches_once():
    x = torch.randn(1, 8, 4, 5)
    tokens = to_tokens(x.expand(6, -1, -1, -1))
    assert tokens.shape == (6, 20, 8) and tokens.stride(0) == 0
    assert torch.equal(tokens[3], x[0].flatten(1).T)
    assert to_tokens(torch.randn(2, 8, 4, 5)).is_contiguous()


def test_dense_positional_encoding_is_cached_until_the_weights_change(tiny_model):
    pe = tiny_model.prompt_encoder
    first = pe.get_dense_pe()
    assert pe.get_dense_pe() is first and first.shape == (1, 256, 64, 64)
    with torch.no_grad():
        pe.pe_layer.positional_encoding_gaussian_matrix.mul_(2)
    second = pe.get_dense_pe()
    assert second is not first
    assert torch.equal(second, pe.pe_layer.grid(64, 64)[None])


@torch.no_grad()
def test_cpu_chunks_equal_one_batch(decoder, tiny_model, monkeypatch):
    """Prompts decoded in CPU chunks give the batch's results; a single dense prompt (batch 1)
    is shared by every chunk."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(1, 256, 64, 64, generator=g)
    sparse = torch.randn(11, 2, 256, generator=g)
    dense = torch.randn(1, 256, 64, 64, generator=g)
    pe = tiny_model.prompt_encoder.get_dense_pe()
    chunked = decoder(features, pe, sparse, dense, True)
    monkeypatch.setattr(type(decoder), "cpu_chunk", 64)
    whole = decoder(features, pe, sparse, dense, True)
    assert chunked[0].shape == (11, 3, 256, 256) and chunked[1].shape == (11, 3)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
