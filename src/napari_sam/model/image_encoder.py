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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import ChannelLayerNorm, FeedForward
from .dense import linear
from .fastpath import linear_bias


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


def bias_terms(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, h: int, w: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the decomposed bias for queries ``(B, n, h*w, d)`` on an ``h x w`` grid:
    ``rows (B, n, h, w, h)`` and ``cols (B, n, h, w, w)``; the bias of query ``(i, j)`` and key
    ``(k, l)`` is ``rows[..., i, j, k] + cols[..., i, j, l]``."""
    b, n, _, d = q.shape
    grid_q = q.reshape(b, n, h, w, d)
    rows = torch.einsum("bnhwd,hkd->bnhwk", grid_q, relative_table(rel_h, h).to(q.dtype))
    cols = torch.einsum("bnhwd,wkd->bnhwk", grid_q, relative_table(rel_w, w).to(q.dtype))
    return rows, cols


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor,
                     cols: torch.Tensor, out: torch.Tensor, max_bias: int) -> torch.Tensor:
    """Softmax attention ``(B, n, h*w, d)`` with the additive bias ``rows (+) cols`` (see
    :func:`bias_terms`), written into ``out (B, h*w, n, d)``.

    The full bias is ``n * (h*w)^2`` values per image (805 MB for vit_b's global blocks in
    fp32): it is built for a band of query rows at a time, at most ``max_bias`` values, so on
    a CPU it stays in cache and on a GPU its memory stays bounded.
    """
    b, n, h, w, _ = rows.shape
    band = max(1, min(h, max_bias // max(1, b * n * w * h * w)))
    step = 256 // w if w <= 256 and 256 % w == 0 else 1  # whole 256-query blocks of the CPU kernel
    if step > 1 and band > step:
        band -= band % step
    buf = None
    for i in range(0, h, band):
        r = min(band, h - i)
        if buf is None or buf.shape[2] != r:
            buf = torch.empty(b, n, r, w, h, w, dtype=q.dtype, device=q.device)
        torch.add(rows[:, :, i:i + r, :, :, None], cols[:, :, i:i + r, :, None, :], out=buf)
        sl = slice(i * w, (i + r) * w)
        res = F.scaled_dot_product_attention(q[:, :, sl], k, v, attn_mask=buf.view(b, n, r * w, h * w))
        out[:, sl] = res.transpose(1, 2)
    return out


class WindowAttention(nn.Module):
    """Multi-head self-attention over a ``(B, H, W, C)`` grid with decomposed rel-pos bias.

    ``max_bias`` bounds the bias values built per attention call (see :func:`biased_attention`):
    small on CPUs (cache-sized bands, about twice as fast as one 805 MB bias), large on GPUs.
    """

    max_bias = {"cpu": 1 << 25}
    max_bias_default = 1 << 28

    def __init__(self, dim: int, heads: int, grid: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // heads
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Projected ``qkv (B, H, W, 3C)`` -> attention output ``(B, H, W, C)`` before ``proj``."""
        b, h, w, c3 = qkv.shape
        c = c3 // 3
        q, k, v = qkv.reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        rows, cols = bias_terms(q, self.rel_pos_h, self.rel_pos_w, h, w)
        out = torch.empty(b, h * w, self.heads, c // self.heads, dtype=q.dtype, device=q.device)
        limit = self.max_bias.get(q.device.type, self.max_bias_default)
        return biased_attention(q, k, v, rows, cols, out, limit).view(b, h, w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.proj, self.attend(linear(self.qkv, x)))


def to_windows(x: torch.Tensor, window: int, fill: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``(B, H, W, C)`` to multiples of ``window`` and cut it into windows.

    The padding is zero, or the vector ``fill (C,)``. Returns ``(B * nh * nw, window, window, C)``
    and the padded size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    hp, wp = -(-h // window) * window, -(-w // window) * window
    if (hp, wp) != (h, w):
        padded = x.new_zeros(b, hp, wp, c) if fill is None else fill.to(x.dtype).expand(b, hp, wp, c).clone()
        padded[:, :h, :w] = x
        x = padded
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
    """Pre-norm transformer block; ``window == 0`` means global attention.

    Windowed blocks project ``qkv`` before padding and ``proj`` after cropping: a zero
    padding token's projection is exactly the ``qkv`` bias, so padding with that vector
    gives the reference's values without projecting the padding.
    """

    def __init__(self, dim: int, heads: int, window: int, grid: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = WindowAttention(dim, heads, window if window else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = linear(self.attn.qkv, self.norm1(x))
        if self.window:
            size = qkv.shape[1:3]
            qkv, padded = to_windows(qkv, self.window, linear_bias(self.attn.qkv))
            y = from_windows(self.attn.attend(qkv), self.window, padded, size)
        else:
            y = self.attn.attend(qkv)
        x = x + linear(self.attn.proj, y)
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

    def forward(self, x: torch.Tensor, poll: Callable[[], None] | None = None) -> torch.Tensor:
        """``poll()``, when given, is called before each block; it raises to stop the run (the
        caller's own check: nothing is registered on the shared modules)."""
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            if poll is not None:
                poll()
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
