"""ViT image encoder of SAM.

Input: normalised, padded images ``(B, 3, S, S)`` with ``S = img_size`` (1024 for the
official models). Output: features ``(B, out_chans, S/16, S/16)`` (``256 x 64 x 64``).

Most blocks attend inside non-overlapping ``window x window`` windows of the patch grid
(the grid is zero-padded to a multiple of the window first); the blocks listed in
``global_blocks`` attend over the whole grid. Every attention adds a decomposed relative
position bias: one learned table along rows and one along columns, each looked up by the
offset between query and key positions and projected on the query.

Parameter names follow the official checkpoints so they load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import ChannelLayerNorm, FeedForward


def relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Look up a relative-position table for a square extent of ``size`` positions.

    ``table`` is ``(L, C)``, learned for offsets ``-(size-1) .. size-1`` (``L = 2*size-1``);
    another length is resampled linearly. Returns ``(size, size, C)`` where entry
    ``[i, j]`` is the embedding of offset ``i - j``.
    """
    length = 2 * size - 1
    if table.shape[0] != length:
        table = F.interpolate(table.T[None], size=length, mode="linear")[0].T
    pos = torch.arange(size, device=table.device)
    return table[pos[:, None] - pos[None, :] + size - 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention over a ``(B, H, W, C)`` grid with decomposed rel-pos bias."""

    def __init__(self, dim: int, heads: int, grid: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // heads
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def position_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Additive bias ``(B, heads, h*w, h*w)`` from queries ``(B, heads, h*w, d)``."""
        b, n, _, d = q.shape
        grid_q = q.reshape(b, n, h, w, d)
        rows = torch.einsum("bnhwd,hkd->bnhwk", grid_q, relative_table(self.rel_pos_h, h))
        cols = torch.einsum("bnhwd,wkd->bnhwk", grid_q, relative_table(self.rel_pos_w, w))
        bias = rows[..., :, None] + cols[..., None, :]
        return bias.reshape(b, n, h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias(q, h, w).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(out)


def to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``(B, H, W, C)`` to multiples of ``window`` and cut it into windows.

    Returns ``(B * nh * nw, window, window, C)`` and the padded size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    hp, wp = -(-h // window) * window, -(-w // window) * window
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    x = x.reshape(b, hp // window, window, wp // window, window, c)
    return x.transpose(2, 3).reshape(-1, window, window, c), (hp, wp)


def from_windows(x: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_windows`: reassemble and crop to ``size`` ``(H, W)``."""
    hp, wp = padded
    c = x.shape[-1]
    x = x.reshape(-1, hp // window, wp // window, window, window, c).transpose(2, 3)
    x = x.reshape(-1, hp, wp, c)
    return x[:, : size[0], : size[1]]


class EncoderBlock(nn.Module):
    """Pre-norm transformer block; ``window == 0`` means global attention."""

    def __init__(self, dim: int, heads: int, window: int, grid: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = WindowAttention(dim, heads, window if window else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            size = y.shape[1:3]
            y, padded = to_windows(y, self.window)
            y = from_windows(self.attn(y), self.window, padded, size)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution; returns ``(B, H/p, W/p, C)``."""

    def __init__(self, patch: int, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoder(nn.Module):
    """SAM's ViT backbone with its convolutional neck (see module docstring)."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        global_blocks: Sequence[int],
        img_size: int = 1024,
        patch: int = 16,
        window: int = 14,
        out_chans: int = 256,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, 0 if i in global_blocks else window, grid, mlp_ratio)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out_chans, kernel_size=1, bias=False),
            ChannelLayerNorm(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            ChannelLayerNorm(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
