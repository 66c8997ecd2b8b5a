"""TinyViT image encoder of MobileSAM (``vit_t``, 5.7M parameters without its unused head).

Input: normalised, padded images ``(B, 3, 1024, 1024)``. Output: features ``(B, 256, 64, 64)``,
the same embedding shape as SAM's ViT encoders, so the prompt encoder and mask decoder are SAM's.

Four stages on a shrinking grid (``P = 1024/4 = 256`` after the stem):

- stem: two stride-2 3x3 convolutions (``3 -> d0/2 -> d0``), grid ``P x P``;
- stage 0: inverted-residual conv blocks (1x1 expand, depthwise 3x3, 1x1 project) at ``P``;
- stages 1-3: transformer blocks on token grids (``P/2``, ``P/4``, ``P/4``): self-attention inside
  non-overlapping ``w x w`` windows (the grid zero-padded to a multiple of ``w``) with a learned
  bias per head for every ``(|dy|, |dx|)`` offset, a depthwise 3x3 convolution, then an MLP;
- between stages a merging block (1x1, depthwise 3x3 with stride 2 - stride 1 before the last
  stage, so the grid stays 64 x 64 -, 1x1) changes the width.

Every convolution carries a BatchNorm (eval statistics). The classifier head of the ImageNet
backbone (``norm_head``, ``head``) is unused but kept, so MobileSAM and micro-sam ``vit_t``
state dicts load unchanged and strictly. Parameter names follow theirs.

``forward(x, poll=None)`` calls ``poll()`` before every block (the caller's cancellation check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import ChannelLayerNorm


@dataclass(frozen=True)
class TinyViTConfig:
    dims: tuple[int, int, int, int] = (64, 128, 160, 320)
    depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    heads: tuple[int, int, int] = (4, 5, 10)  # stages 1-3 (stage 0 is convolutional)
    windows: tuple[int, int, int] = (7, 14, 7)
    merge_strides: tuple[int, int, int] = (2, 2, 1)  # merging blocks after stages 0, 1, 2
    img_size: int = 1024
    out_chans: int = 256
    classes: int = 1000  # width of the unused ImageNet head (kept for strict loading)


TINY_CONFIGS: dict[str, TinyViTConfig] = {
    "vit_t": TinyViTConfig(),
    # The real layout at a quarter of the widths (same grids and windows): for tests.
    "vit_t_tiny_test": TinyViTConfig(dims=(16, 32, 40, 80), heads=(2, 2, 4), classes=10),
}


class ConvBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm (state-dict names ``c`` and ``bn``).

    Runs on grids ``(B, H, W, C)`` (channels last, the layout of the tokens) and returns one:
    the convolution gets a channels-last view (no copy) and the BatchNorm is folded into it."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.c, self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = (conv.weight * scale[:, None, None, None]).to(x.dtype)
        bias = (bn.bias - bn.running_mean * scale).to(x.dtype)
        y = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, conv.stride, conv.padding, groups=conv.groups)
        return y.permute(0, 2, 3, 1)


class Stem(nn.Module):
    """Two stride-2 3x3 ConvBN with a GELU between: ``(B, S, S, 3) -> (B, S/4, S/4, dim)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class InvertedResidual(nn.Module):
    """``x -> gelu(x + project(gelu(depthwise(gelu(expand(x))))))`` on grids ``(B, H, W, C)``."""

    def __init__(self, dim: int, expand: int = 4) -> None:
        super().__init__()
        hidden = dim * expand
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv2(self.act(self.conv1(x))))
        return self.act(self.conv3(y) + x)


class Merge(nn.Module):
    """Width change between stages: grid ``(B, H, W, C)`` -> ``(B, H/stride, W/stride, C')``."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


def window_offset_index(window: int) -> torch.Tensor:
    """``(w*w, w*w)`` index of the bias table for query/key pairs of a ``w x w`` window: the
    offset ``(|dy|, |dx|)`` between the two positions, numbered ``|dy| * w + |dx|``."""
    pos = torch.arange(window)
    dy = (pos[:, None, None, None] - pos[None, None, :, None]).abs()
    dx = (pos[None, :, None, None] - pos[None, None, None, :]).abs()
    return (dy * window + dx).reshape(window * window, window * window)


class WindowSelfAttention(nn.Module):
    """Pre-norm multi-head attention over windows ``(B', w*w, C)`` with an offset bias per head.

    ``qkv`` holds, per head, the query, key and value features one after the other."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("attention_bias_idxs", window_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3, d)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each (B', heads, n, d)
        # Explicit softmax attention: about twice as fast on CPUs as SDPA with a float mask.
        scores = torch.matmul(q * d ** -0.5, k.transpose(-1, -2))
        scores += self.attention_biases[:, self.attention_bias_idxs].to(scores.dtype)
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Windowed attention, depthwise 3x3 ConvBN, MLP, on a token grid ``(B, H, W, C)``.

    The grid is zero-padded to a multiple of the window before the attention's LayerNorm (the
    padding tokens take part as keys, as in MobileSAM), and cropped after it."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowSelfAttention(dim, heads, window)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_conv(x + self._attend(x))
        return x + self.mlp(x)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, g, _, c = x.shape
        w = self.window
        gp = -(-g // w) * w
        if gp != g:
            x = F.pad(x, (0, 0, 0, gp - g, 0, gp - g))
        nw = gp // w
        windows = x.view(b, nw, w, nw, w, c).transpose(2, 3).reshape(b * nw * nw, w * w, c)
        y = self.attn(windows).view(b, nw, nw, w, w, c).transpose(2, 3).reshape(b, gp, gp, c)
        return y[:, :g, :g]


class MLP(nn.Module):
    """LayerNorm, then two linear layers with GELU between (names ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Stage(nn.Module):
    """Blocks of one stage, then the optional merging block (names ``blocks``, ``downsample``)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class TinyViT(nn.Module):
    """MobileSAM's image encoder (see module docstring)."""

    def __init__(self, config: TinyViTConfig = TinyViTConfig()) -> None:
        super().__init__()
        cfg = config
        self.img_size = cfg.img_size
        d = cfg.dims
        self.patch_embed = Stem(d[0])
        stages = [Stage([InvertedResidual(d[0]) for _ in range(cfg.depths[0])], Merge(d[0], d[1], cfg.merge_strides[0]))]
        for i in range(1, 4):
            merge = Merge(d[i], d[i + 1], cfg.merge_strides[i]) if i < 3 else None
            blocks = [TransformerBlock(d[i], cfg.heads[i - 1], cfg.windows[i - 1]) for _ in range(cfg.depths[i])]
            stages.append(Stage(blocks, merge))
        self.layers = nn.ModuleList(stages)
        self.norm_head = nn.LayerNorm(d[3])
        self.head = nn.Linear(d[3], cfg.classes)
        self.neck = nn.Sequential(
            nn.Conv2d(d[3], cfg.out_chans, kernel_size=1, bias=False),
            ChannelLayerNorm(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            ChannelLayerNorm(cfg.out_chans),
        )

    @property
    def blocks(self) -> list[nn.Module]:
        """All blocks in running order (stage 0's convolutional ones first)."""
        return [block for stage in self.layers for block in stage.blocks]

    def forward(self, x: torch.Tensor, poll: Callable[[], None] | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        x = self.patch_embed(x)  # every stage works on grids (B, H, W, C)
        for stage in self.layers:
            for block in stage.blocks:
                if poll is not None:
                    poll()
                x = block(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return self.neck(x.permute(0, 3, 1, 2)).contiguous()
