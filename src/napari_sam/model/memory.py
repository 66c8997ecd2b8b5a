"""SAM 2's memory: the memory encoder, memory attention with 2D rotary encodings, and the
sine position encodings they use.

Memory encoder: a predicted mask at the model's input resolution ``(B, 1, S, S)`` (already
turned into probabilities and scaled by the caller) is downsampled 16x by four stride-2
convolutions (each followed by a channel LayerNorm and GELU) and a ``1 x 1`` projection, added
to the projected frame features ``(B, 256, g, g)``, fused by two ConvNeXt blocks and projected
to a memory ``(B, 64, g, g)``.

Memory attention: the current frame's features as ``g*g`` tokens ``(B, g*g, 256)`` attend to
themselves and then to the memory tokens ``(B, M, 64)`` (``M = frames * g*g`` spatial memory
tokens followed by the object-pointer tokens), in 4 pre-norm layers, then a final LayerNorm.
Queries and keys get 2D rotary encodings of their grid positions (keys of every memory frame
the same ones; the object-pointer tokens none). Grid positions are ``x = n % g``,
``y = n // g`` for token ``n``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import ChannelLayerNorm
from .dense import attention, linear, matmul_nt

_SINE_CACHE: dict = {}


def sine_positions(channels: int, h: int, w: int, device=None, temperature: float = 10000.0) -> torch.Tensor:
    """Normalised 2D sine encoding ``(1, channels, h, w)``: the first half encodes the row
    (``(r + 1) / h`` of a turn), the second half the column, each as interleaved
    ``sin``/``cos`` pairs of geometrically spaced frequencies (cached per size and device)."""
    key = (channels, h, w, str(device), temperature)
    if key not in _SINE_CACHE:
        half = channels // 2
        eps, scale = 1e-6, 2 * math.pi
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * scale
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * scale
        dim_t = torch.arange(half, dtype=torch.float32, device=device)
        dim_t = temperature ** (2 * (dim_t // 2) / half)

        def encode(v: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, half)
            p = v[:, None] / dim_t
            return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

        py, px = encode(ys), encode(xs)
        pos = torch.cat([py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)], dim=-1)
        _SINE_CACHE[key] = pos.permute(2, 0, 1)[None].contiguous()
    return _SINE_CACHE[key]


def rotary_tables(dim: int, w: int, h: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """Unit complex rotations ``(h*w, dim/2)`` of the 2D rotary encoding of a ``h x w`` grid:
    pairs ``0 .. dim/4-1`` rotate with the column, the rest with the row, at frequencies
    ``theta ** (-4k / dim)``."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4, device=device)[: dim // 4].float() / dim))
    t = torch.arange(w * h, dtype=torch.float32, device=device)
    tx, ty = t % w, torch.div(t, w, rounding_mode="floor")
    angles = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def rotate_(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate the consecutive pairs of ``x (..., n, d)`` in place by ``table (n', d/2)``; ``n``
    is a multiple of ``n'`` (the same positions repeated). ``x``'s last axis must be contiguous."""
    *lead, n, d = x.shape
    pairs = torch.view_as_complex(x.unflatten(-1, (d // 2, 2)))
    pairs.unflatten(-2, (n // table.shape[0], table.shape[0])).mul_(table)
    return x


class RotaryAttention(nn.Module):
    """Attention with 2D rotary encodings of queries and (the first ``n_rotary``) keys; keys
    and values of width ``kv_dim`` (names as Meta's ``q_proj``/``k_proj``/``v_proj``/``out_proj``)."""

    def __init__(self, dim: int = 256, heads: int = 1, kv_dim: int | None = None, theta: float = 10000.0) -> None:
        super().__init__()
        kv_dim = kv_dim or dim
        self.heads, self.theta = heads, theta
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self._tables: tuple = (None, None)

    def table(self, n: int, device) -> torch.Tensor:
        """Rotary table for ``n`` query tokens on a square grid (cached per size)."""
        if self._tables[0] != (n, str(device)):
            side = math.isqrt(n)
            self._tables = ((n, str(device)), rotary_tables(self.q_proj.out_features // self.heads, side, side,
                                                            self.theta, device))
        return self._tables[1]

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_rotary: int | None = None) -> torch.Tensor:
        """``q (B, Nq, D)``, ``k, v (B, Nk, kv_dim)`` -> ``(B, Nq, D)``; keys past ``n_rotary``
        (default all) are not rotated."""
        q, k = self.split(linear(self.q_proj, q)), self.split(linear(self.k_proj, k))
        table = self.table(q.shape[-2], q.device)
        rotate_(q, table)
        n_rotary = k.shape[-2] if n_rotary is None else n_rotary
        if n_rotary > 0:
            rotate_(k[..., :n_rotary, :], table)
        b, h, n, d = q.shape
        if q.device.type == "cpu" and 2 * self.v_proj.in_features <= d:
            # Narrow values (the memory's 64 channels): attend over them, project afterwards.
            # The softmax rows sum to one, so the bias passes through; a quarter of the
            # value-side work, and no (Nk, 256) values at all.
            mixed = attention(q, k, v[:, None])  # (B, h, Nq, kv_dim)
            weight = self.v_proj.weight.view(h, d, -1)
            out = torch.stack([matmul_nt(mixed[:, j], weight[j], self.v_proj.bias[j * d:(j + 1) * d])
                               for j in range(h)], 1)
        else:
            out = attention(q, k, self.split(linear(self.v_proj, v)))
        return linear(self.out_proj, out.transpose(1, 2).reshape(b, n, h * d))


class MemoryLayer(nn.Module):
    """Self-attention, cross-attention to the memory, MLP; each pre-norm with a residual."""

    def __init__(self, dim: int = 256, mem_dim: int = 64, hidden: int = 2048) -> None:
        super().__init__()
        self.self_attn = RotaryAttention(dim)
        self.cross_attn_image = RotaryAttention(dim, kv_dim=mem_dim)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_keys: torch.Tensor, n_rotary: int) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        x = x + self.cross_attn_image(self.norm2(x), memory_keys, memory, n_rotary)
        return x + linear(self.linear2, F.relu(linear(self.linear1, self.norm3(x))))


class MemoryAttention(nn.Module):
    """Condition frame features on the memory (see module docstring)."""

    def __init__(self, dim: int = 256, mem_dim: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryLayer(dim, mem_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                n_pointer_tokens: int = 0) -> torch.Tensor:
        """``tokens (B, N, D)`` with their position encoding ``pos (1|B, N, D)``; ``memory`` and
        ``memory_pos (B, M, mem_dim)``, of which the last ``n_pointer_tokens`` are object-pointer
        tokens -> conditioned tokens ``(B, N, D)``."""
        x = tokens + 0.1 * pos
        keys = memory + memory_pos
        n_rotary = memory.shape[1] - n_pointer_tokens
        for layer in self.layers:
            x = layer(x, memory, keys, n_rotary)
        return self.norm(x)


class MaskDownSampler(nn.Module):
    """Four stride-2 ``3 x 3`` convolutions (channels x4 each, LayerNorm, GELU), then ``1 x 1`` to ``dim``."""

    def __init__(self, dim: int = 256, stages: int = 4) -> None:
        super().__init__()
        layers, chans = [], 1
        for _ in range(stages):
            layers += [nn.Conv2d(chans, chans * 4, kernel_size=3, stride=2, padding=1), ChannelLayerNorm(chans * 4),
                       nn.GELU()]
            chans *= 4
        layers.append(nn.Conv2d(chans, dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class ConvNeXtBlock(nn.Module):
    """Depth-wise ``7 x 7`` convolution, LayerNorm, MLP x4 with GELU, layer scale, residual
    (names as Meta's ``CXBlock``: ``dwconv``, ``norm``, ``pwconv1``, ``pwconv2``, ``gamma``)."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = ChannelLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = F.layer_norm(y, (y.shape[-1],), self.norm.weight, self.norm.bias, self.norm.eps)
        y = linear(self.pwconv2, F.gelu(linear(self.pwconv1, y))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, depth: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConvNeXtBlock(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Frame features + a mask -> a memory (see module docstring)."""

    def __init__(self, dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(dim)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim)
        self.out_proj = nn.Conv2d(dim, out_dim, kernel_size=1)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``features (B, dim, g, g)``, ``masks (B, 1, 16g, 16g)`` -> ``(B, out_dim, g, g)``."""
        x = self.pix_feat_proj(features) + self.mask_downsampler(masks)
        return self.out_proj(self.fuser(x))
