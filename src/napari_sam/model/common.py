"""Small building blocks shared by the encoder and the decoder."""

from __future__ import annotations

import torch
from torch import nn

from .dense import linear


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (eps 1e-6, affine), computed in fp32
    (bf16 inputs from the fast path are upcast; fp32 inputs are untouched)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class FeedForward(nn.Module):
    """Two linear layers with an activation between (state-dict names ``lin1``/``lin2``)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.lin2, self.act(linear(self.lin1, x)))


class StackedLinear(nn.Module):
    """``depth`` linear layers with an activation between them (ReLU unless ``act`` is given;
    state-dict names ``layers.i``)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, depth: int, act=torch.relu) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (depth - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = linear(layer, x)
            if i < last:
                x = self.act(x)
        return x
