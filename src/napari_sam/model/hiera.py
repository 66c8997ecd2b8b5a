"""Hiera image encoder of SAM 2: a hierarchical trunk and a feature-pyramid neck.

Input: normalised images ``(B, 3, S, S)`` (``S = 1024`` for the official models). The trunk
embeds ``7 x 7`` patches with stride 4 into a ``(S/4, S/4)`` grid and runs four stages of
transformer blocks; the first block of stages 2-4 halves the grid (2 x 2 max-pooling of its
queries and of its projected shortcut) and doubles width and heads. Blocks attend inside
non-overlapping windows (the grid zero-padded to a multiple of the window first; padding
tokens take part as keys), except the ``global_blocks``, which attend over the whole grid.
The first block of a stage still uses the previous stage's window (on its larger input
grid), halved after pooling. A learned background position embedding, resized bicubically to
the first grid, plus a learned window embedding tiled over it, is added after the patches.

Stage outputs are channels-last ``(B, h, w, C)`` at strides 4, 8, 16, 32. The neck projects
each with a ``1 x 1`` convolution to 256 channels and, on the ``top_down`` levels, adds the
2x nearest-upsampled result of the level below (coarser); the coarsest ``scalp`` levels are
dropped. Parameter names follow Meta's checkpoints (``image_encoder.trunk.*``,
``image_encoder.neck.convs.k.conv.*``) so they load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import StackedLinear
from .dense import attention, linear, matmul_nt
from .fastpath import linear_bias
from .image_encoder import from_windows, to_windows


def pool2(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 max-pooling (stride 2, floor) of a channels-last grid ``(B, H, W, C)``."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)


class PooledAttention(nn.Module):
    """Multi-head self-attention of a grid, optionally with 2 x 2 max-pooled queries (the
    output then has the pooled grid). ``qkv`` maps ``dim -> 3 * dim_out``."""

    def __init__(self, dim: int, dim_out: int, heads: int, pool: bool) -> None:
        super().__init__()
        self.heads = heads
        self.pool = pool
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Projected ``qkv (N, h, w, 3C)`` of ``N`` grids (windows) -> ``(N, h', w', C)`` before
        ``proj`` (``h' = h // 2`` when pooling)."""
        n, h, w, c3 = qkv.shape
        c = c3 // 3
        q, k, v = qkv.reshape(n, h * w, 3, self.heads, c // self.heads).unbind(2)
        if self.pool:
            q = pool2(q.reshape(n, h, w, c))
            h, w = q.shape[1:3]
            q = q.reshape(n, h * w, self.heads, c // self.heads)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if k.shape[-2] >= 1024:  # a global block: long sequences
            out = attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(n, h, w, c)


class HieraBlock(nn.Module):
    """Pre-norm block; ``window == 0`` attends globally. With ``pool`` the grid is halved.

    The windowed path projects ``qkv`` before padding (a zero padding token projects to the
    ``qkv`` bias, so padding with that vector gives the same values) and applies ``proj``
    after cropping: no padding token goes through either Linear layer; it goes by bands of
    window rows (:meth:`windowed`). The MLP runs on
    :attr:`mlp_rows` tokens at a time (its 4x wider hidden layer is the largest activation: 100
    MB for the first stage at 1024 input, 6 MB per chunk).
    """

    mlp_rows = 4096
    band_tokens = 8192

    def windowed(self, y: torch.Tensor) -> torch.Tensor:
        """Windowed attention of the normalised grid ``y (B, H, W, C)`` -> ``(B, H', W', C')``
        before ``proj``, one band of window rows (about :attr:`band_tokens` tokens) at a time:
        windows never straddle bands, so each band is projected, padded, attended and
        reassembled alone (the first stages' ``qkv`` would be 75-150 MB at 1024 input)."""
        b, h, w, _ = y.shape
        win, bias, step = self.window, linear_bias(self.attn.qkv), 2 if self.pool else 1
        rows = win * max(1, self.band_tokens // (win * w))
        bands = []
        for r0 in range(0, h, rows):
            qkv = linear(self.attn.qkv, y[:, r0:r0 + rows])
            size = qkv.shape[1:3]
            windows, (hp, wp) = to_windows(qkv, win, bias)
            out = self.attn.attend(windows)
            bands.append(from_windows(out, out.shape[1], (hp // step, wp // step), (size[0] // step, size[1] // step)))
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=1)

    def __init__(self, dim: int, dim_out: int, heads: int, window: int, pool: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.pool = pool
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PooledAttention(dim, dim_out, heads, pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = StackedLinear(dim_out, int(dim_out * mlp_ratio), dim_out, 2, act=F.gelu)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        shortcut = x
        if self.proj is not None:
            shortcut = linear(self.proj, y)
            if self.pool:
                shortcut = pool2(shortcut)
        if self.window:
            out = self.windowed(y)
        else:
            out = self.attn.attend(linear(self.attn.qkv, y))
        x = (shortcut + linear(self.attn.proj, out)).contiguous()
        flat = x.view(-1, x.shape[-1])
        if len(flat) <= self.mlp_rows:
            return x + self.mlp(self.norm2(x))
        for i in range(0, len(flat), self.mlp_rows):  # in place: x is this block's own tensor
            part = flat[i:i + self.mlp_rows]
            part += self.mlp(self.norm2(part))
        return x


class PatchEmbed(nn.Module):
    """``7 x 7`` convolution with stride 4 (padding 3); returns channels-last ``(B, h, w, C)``."""

    def __init__(self, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The trunk (see module docstring). ``forward`` returns the four stage outputs,
    channels-last, finest first."""

    def __init__(self, *, embed_dim: int, heads: int, stages: Sequence[int], global_blocks: Sequence[int],
                 window_spec: Sequence[int], pos_embed_size: tuple[int, int], q_pool: int = 3) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *pos_embed_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        pool_blocks = [e + 1 for e in ends[:-1]][:q_pool]
        self.stage_ends = tuple(ends)
        blocks, dim, stage = [], embed_dim, 0
        for i in range(sum(stages)):
            window = 0 if i in global_blocks else window_spec[stage]  # the previous stage's on a stage's first block
            dim_out = dim
            if i - 1 in ends:
                dim_out, heads, stage = 2 * dim, 2 * heads, stage + 1
            blocks.append(HieraBlock(dim, dim_out, heads, window, pool=i in pool_blocks))
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.channels = tuple(self.blocks[e].attn.proj.out_features for e in ends)  # finest first
        self._pos_cache: tuple = (None, None)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """``(1, h, w, C)``: the background embedding resized bicubically plus the tiled window
        embedding; computed once per grid size and weights."""
        bg, win = self.pos_embed, self.pos_embed_window
        key = (h, w, bg.device, bg.dtype, bg.data_ptr(), bg._version, win.data_ptr(), win._version)
        if self._pos_cache[0] != key:
            pe = F.interpolate(bg, size=(h, w), mode="bicubic")
            pe = pe + win.tile(1, 1, h // win.shape[-2], w // win.shape[-1])
            self._pos_cache = (key, pe.permute(0, 2, 3, 1).contiguous())
        return self._pos_cache[1]

    def forward(self, x: torch.Tensor, poll: Callable[[], None] | None = None) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = (x + self.position_embedding(*x.shape[1:3])).contiguous()
        outputs = []
        for i, block in enumerate(self.blocks):
            if poll is not None:
                poll()
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x)
        return outputs


class FpnNeck(nn.Module):
    """Feature pyramid over the trunk's stages (see module docstring). ``channels`` lists the
    trunk widths coarsest first, as in Meta's configs (``convs.0`` projects the coarsest)."""

    def __init__(self, channels: Sequence[int], dim: int = 256, top_down: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, dim, kernel_size=1))) for c in channels)
        self.top_down = tuple(top_down)

    def lateral_weights(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``1 x 1`` projection of trunk ``level`` (0 = finest) as ``(dim, C)`` weight and bias."""
        conv = self.convs[len(self.convs) - 1 - level].conv
        return conv.weight.flatten(1), conv.bias

    def lateral(self, level: int, x: torch.Tensor) -> torch.Tensor:
        return matmul_nt(x, *self.lateral_weights(level))

    def needed_by_top_down(self, level: int) -> bool:
        """Whether ``level``'s output feeds a finer level's top-down sum (else it is only an output)."""
        return level - 1 in self.top_down

    def forward(self, stages: list[torch.Tensor], levels: Sequence[int]) -> dict[int, torch.Tensor]:
        """Channels-last trunk outputs (finest first) -> the requested pyramid ``levels``,
        channels-last ``(B, h, w, dim)``; only what they depend on is computed."""
        lowest = min(levels)
        out, prev = {}, None
        for level in range(len(stages) - 1, lowest - 1, -1):
            if level not in levels and not self.needed_by_top_down(level):
                prev = None  # neither an output nor read by the next finer level
                continue
            lat = self.lateral(level, stages[level])
            if level in self.top_down and prev is not None:
                b, h, w, c = prev.shape
                up = prev[:, :, None, :, None].expand(b, h, 2, w, 2, c).reshape(b, 2 * h, 2 * w, c)  # nearest, x2
                lat = lat + up
            prev = lat
            if level in levels:
                out[level] = lat
        return out
