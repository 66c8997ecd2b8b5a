"""Instance-segmentation decoder of micro-sam: a convolutional UNETR head on SAM's embedding.

Input: the image embedding ``(B, 256, G, G)`` of a SAM encoder (the encoder itself is not part
of this module: it runs once, in the predictor). Output: three sigmoid maps ``(B, 3, S, S)`` in
the model's padded input frame (``S = 16 G``: 1024 for the 64 x 64 embedding of every released
model): foreground probability, distance to the object centre and distance to the object
boundary (both normalised to 0-1, low inside an object's core). :meth:`InstanceDecoder.maps`
crops the padding and resizes them to the image.

Layout (``F = (512, 256, 128, 64)``, no skip connections from the encoder):

- a chain of four up-blocks (x2 upsampling, 3x3 conv, BatchNorm, ReLU) turns the embedding into
  side inputs at 128, 256, 512 and 1024 pixels with ``F[0..3]`` channels (``deconv1..4``);
- the main path starts with a double conv block on the embedding (``base``: 256 -> 512 at 64 px),
  then three levels (``decoder``): x2 upsampling to the next width, concatenated with the middle
  channels of the matching side input, a double conv block; then x2 to 1024 px (``deconv_out``),
  concatenation with the last side input and a double conv block (``decoder_head``), a 1x1 conv
  to the three maps (``out_conv``) and a sigmoid. A double conv block is ``InstanceNorm, 3x3 conv,
  ReLU`` twice (instance norms without learned parameters).

x2 upsampling comes in the two variants micro-sam's files use: a 2x2 transposed convolution
(``"transpose"``), or bilinear interpolation with a 1x1 convolution (``"interpolate"``). Parameter
names follow micro-sam's decoder files (``*_decoder.pt``), which load unchanged.

Inference only: BatchNorm runs with its running statistics, folded into the preceding
convolution; all activations are channels-last (the fast layout of the CPU convolutions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .bands import (
    band_stats,
    bands,
    conv3x3_banded,
    conv3x3_over,
    conv3x3_rows,
    put_rows,
    rows_of,
    transposed2x_rows,
    upsample2x_rows,
)

FEATURES = (512, 256, 128, 64)
UPSAMPLERS = ("interpolate", "transpose")
_NORM_EPS = 1e-5


class InterpolatedUp(nn.Module):
    """x2 bilinear upsampling and a 1x1 convolution (``conv``). Both are linear and commute
    (interpolation weights sum to one, also at the clamped borders), so the convolution runs
    at the lower resolution: a quarter of the multiplications and no full-resolution input copy."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample2x(self.conv(x))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What :meth:`rows` reads: the convolved input, at the input's resolution."""
        return self.conv(x)

    def rows(self, prepared: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """Rows ``[r0, r1)`` of the output."""
        return upsample2x_rows(prepared, r0, r1)


class TransposedUp(nn.Module):
    """x2 upsampling by a 2x2 transposed convolution with stride 2 (``block``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def rows(self, prepared: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """Rows ``[r0, r1)`` of the output."""
        return transposed2x_rows(prepared, self.block.weight, self.block.bias, r0, r1)


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def make_upsampler(kind: str, cin: int, cout: int) -> nn.Module:
    if kind not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler {kind!r}; choose one of {', '.join(UPSAMPLERS)}")
    return InterpolatedUp(cin, cout) if kind == "interpolate" else TransposedUp(cin, cout)


class Conv3x3(nn.Module):
    """A padded 3x3 convolution (``block``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Conv2d(channels, channels, 3, padding=1)


class UpBlock(nn.Module):
    """x2 upsampling, 3x3 conv, BatchNorm, ReLU (``block.0``, ``block.1``, ``block.2``)."""

    def __init__(self, kind: str, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(make_upsampler(kind, cin, cout), Conv3x3(cout), nn.BatchNorm2d(cout), nn.ReLU())

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 convolution's weight and bias with the BatchNorm folded in."""
        conv, norm = self.block[1].block, self.block[2]
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        return conv.weight * scale[:, None, None, None], (conv.bias - norm.running_mean) * scale + norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In row bands (:mod:`.bands`): the upsampled input is never formed whole."""
        up = self.block[0]
        return conv3x3_banded(partial(up.rows, up.prepare(x)), 2 * x.shape[2], *self.folded()).relu_()


class DoubleConv(nn.Module):
    """``InstanceNorm, 3x3 conv, ReLU`` twice (convolutions at ``block.1`` and ``block.4``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.InstanceNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                                   nn.InstanceNorm2d(cout), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())

    def forward(self, *parts: torch.Tensor, owned: Sequence[bool] = ()) -> torch.Tensor:
        """The block on the channel concatenation of ``parts`` (each ``(B, C_i, H, W)``), which
        is never formed: instance norms are per channel, so each part is normalised alone, and
        the first convolution is the sum of each part's convolution with its slice of the
        weights. ``owned[i]``: part ``i`` is the caller's temporary and may be normalised in
        place (parts not listed are copied first)."""
        flags = list(owned) + [False] * (len(parts) - len(owned))
        x = conv_of_concat(self.block[1], [instance_norm(p, inplace=f) for p, f in zip(parts, flags)]).relu_()
        conv = self.block[4]
        x = instance_norm(x, inplace=True)
        return conv3x3_banded(rows_of(x), x.shape[2], conv.weight, conv.bias).relu_()


def conv_of_concat(conv: nn.Conv2d, parts: list[torch.Tensor]) -> torch.Tensor:
    """``conv(torch.cat(parts, dim=1))`` of a padded ``3 x 3`` convolution as a sum over the
    parts, accumulated in row bands (at 1024 x 1024 the 128-channel concatenation alone is 512 MB)."""
    out, start = None, 0
    while parts:
        part = parts.pop(0)  # dropped once used
        n, height = part.shape[1], part.shape[2]
        out = conv3x3_banded(rows_of(part), height, conv.weight[:, start:start + n],
                             conv.bias if out is None else None, out)
        start += n
    return out


_STAT_ROWS = 1 << 16  # pixels per chunk of the variance pass (a few MB of temporaries)


def instance_norm(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Per-image, per-channel normalisation of channels-last ``(B, C, H, W)`` to zero mean and
    unit variance (eps 1e-5, biased variance), keeping the layout. The statistics are reduced
    over the pixels of a ``(H*W, C)`` view with pairwise summation, in two passes (mean, then the
    variance of the centred values, in chunks of :data:`_STAT_ROWS` pixels): as accurate as
    ``instance_norm`` on contiguous data, while one-pass batch-norm statistics lose 1e-4 at
    1024 x 1024. ``inplace`` normalises ``x`` itself (no full-size temporary: at 1024 x 1024 x
    128 each is 512 MB of fresh pages) when it is channels-last, else works on a copy."""
    b, c, h, w = x.shape
    if not (inplace and x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous(memory_format=torch.channels_last).clone(memory_format=torch.channels_last)
    for i in range(b):
        rows = x[i].permute(1, 2, 0).view(h * w, c)
        rows.sub_(rows.mean(dim=0))
        total = torch.zeros(c, dtype=x.dtype, device=x.device)
        for part in rows.split(_STAT_ROWS):
            total += part.square().sum(dim=0)
        rows.mul_(torch.rsqrt(total / (h * w) + _NORM_EPS))
    return x


class Levels(nn.Module):
    """The main path's upsampling levels (``samplers``, ``blocks``)."""

    def __init__(self, kind: str, features: Sequence[int]) -> None:
        super().__init__()
        pairs = list(zip(features[:-1], features[1:]))
        self.samplers = nn.ModuleList(make_upsampler(kind, a, b) for a, b in pairs)
        self.blocks = nn.ModuleList(DoubleConv(a, b) for a, b in pairs)


def middle_channels(x: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` central channels of ``(B, C, H, W)`` (how the side inputs are narrowed)."""
    start = (x.shape[1] - count) // 2
    return x[:, start:start + count]


class InstanceDecoder(nn.Module):
    """micro-sam's instance-segmentation decoder (see module docstring).

    ``upsampler``: ``"interpolate"`` or ``"transpose"``. ``model_name`` is set by
    :func:`napari_sam.weights.load_decoder` to the registry name it was loaded for (None for
    other files); per-model post-processing defaults are looked up by it.
    """

    def __init__(self, embed_dim: int = 256, features: Sequence[int] = FEATURES, out_channels: int = 3,
                 upsampler: str = "interpolate") -> None:
        super().__init__()
        f = tuple(features)
        self.upsampler = upsampler
        self.model_name: str | None = None
        self.decoder = Levels(upsampler, f)
        self.deconv1 = UpBlock(upsampler, embed_dim, f[0])
        self.deconv2 = UpBlock(upsampler, f[0], f[1])
        self.deconv3 = UpBlock(upsampler, f[1], f[2])
        self.deconv4 = UpBlock(upsampler, f[2], f[3])
        self.base = DoubleConv(embed_dim, f[0])
        self.out_conv = nn.Conv2d(f[-1], out_channels, 1)
        self.deconv_out = make_upsampler(upsampler, f[-1], f[-1])
        self.decoder_head = DoubleConv(2 * f[-1], f[-1])

    @property
    def device(self) -> torch.device:
        return self.out_conv.weight.device

    @torch.no_grad()
    def forward(self, features: torch.Tensor, poll: Callable[[], None] | None = None) -> torch.Tensor:
        """Embedding ``(B, C, G, G)`` -> sigmoid maps ``(B, 3, 16G, 16G)`` (channels-last).
        ``poll()``, when given, is called between stages and raises to stop."""
        check = poll if poll is not None else (lambda: None)
        x = features.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        sides = []
        side = x
        for up in (self.deconv1, self.deconv2, self.deconv3):
            check()
            side = up(side)
            sides.append(side)
        check()
        x = self.base(x)
        for sampler, block, skip in zip(self.decoder.samplers, self.decoder.blocks, sides):
            check()
            up = sampler(x)
            x = block(up, middle_channels(skip, up.shape[1]), owned=(True,))  # not skip: the last is read again
        check()
        del sides, up
        inputs = [x, side]
        del x, side  # full_resolution drops them as soon as they are used
        return self.full_resolution(inputs, check)

    def full_resolution(self, inputs: list[torch.Tensor], check: Callable[[], None]) -> torch.Tensor:
        """``inputs = [x, side]``: ``deconv4`` of the last side input, ``deconv_out`` of the main
        path ``x``, the ``decoder_head`` on their concatenation ``[deconv_out(x), deconv4(side)]``,
        ``out_conv`` and the sigmoid, at ``16 G`` pixels. Everything runs in row bands
        (:mod:`.bands`): of the 64-channel full-resolution maps only one is ever formed whole
        (256 MB at 1024 x 1024): the head's side input, which then takes the head's first
        output in its place. The upsampled main path is made band by band three times (its
        instance-norm statistics in two passes, then the convolution): cheap beside 256 MB of
        fresh memory."""
        conv1, conv2 = self.decoder_head.block[1], self.decoder_head.block[4]
        side = instance_norm(self.deconv4(inputs.pop()), inplace=True)
        n, height = conv1.in_channels - side.shape[1], side.shape[2]
        y = conv3x3_over(side, conv1.weight[:, n:], None)  # the head's first output, in place of its input
        check()
        main = partial(self.deconv_out.rows, self.deconv_out.prepare(inputs.pop()))  # rows of deconv_out(x)
        mean, rstd = band_stats(main, height, _NORM_EPS)
        y = conv3x3_banded(lambda a, b: main(a, b).sub_(mean).mul_(rstd), height, conv1.weight[:, :n], conv1.bias, y)
        main = None
        y = instance_norm(y.relu_(), inplace=True)
        check()
        out = None
        for r0, r1 in bands(height):
            band = conv3x3_rows(rows_of(y), height, conv2.weight, conv2.bias, r0, r1).relu_()
            out = put_rows(out, F.conv2d(band, self.out_conv.weight, self.out_conv.bias).sigmoid_(), r0, height)
        return out

    @torch.no_grad()
    def maps(self, features: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int],
             poll: Callable[[], None] | None = None) -> torch.Tensor:
        """The three maps ``(B, 3, H, W)`` at the image's ``original_size`` ``(H, W)``: the
        decoder output cropped to the resized image ``input_size`` ``(h, w)`` and resized
        bilinearly (the padding in the model frame is dropped)."""
        return self.to_image(self.forward(features, poll), input_size, original_size)

    def to_image(self, out: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]) -> torch.Tensor:
        """Decoder output ``(B, 3, S, S)`` (the model frame) -> maps at ``original_size`` (see :meth:`maps`)."""
        out = out[..., : input_size[0], : input_size[1]]
        if tuple(out.shape[-2:]) != tuple(original_size):
            out = F.interpolate(out, tuple(original_size), mode="bilinear", align_corners=False)
        return out.contiguous()


def upsampler_of(state: dict[str, torch.Tensor]) -> str:
    """Which x2 upsampler a decoder state dict was trained with (read off its parameter names)."""
    return "transpose" if any(k.startswith("decoder.samplers.") and ".block." in k for k in state) else "interpolate"


def build_decoder(state: dict[str, torch.Tensor] | None = None, upsampler: str | None = None,
                  name: str = "the decoder") -> InstanceDecoder:
    """An :class:`InstanceDecoder` in eval mode, loaded strictly from ``state`` when given (its
    upsampler variant is detected; encoder keys ``encoder.*`` are ignored), else random init
    with ``upsampler`` (default ``"interpolate"``)."""
    from .formats import CheckpointError, mismatch

    if state is None:
        return InstanceDecoder(upsampler=upsampler or "interpolate").eval()
    state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    decoder = InstanceDecoder(upsampler=upsampler or upsampler_of(state))
    problems = mismatch(decoder.state_dict(), state)
    if problems:
        raise CheckpointError(" ".join([f"{name} is not a micro-sam instance-segmentation decoder.", *problems]))
    decoder.load_state_dict(state, strict=True)
    return decoder.eval()
