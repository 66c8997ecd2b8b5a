"""Prompt encoder: points, boxes and low-res mask logits to embeddings.

Coordinates here are in the model's convention: ``(x, y)`` pixels of the resized,
padded ``S x S`` input image (``S = 1024``). Point labels: 1 foreground, 0 background,
-1 padding ("not a point").

Outputs: sparse embeddings ``(B, N, D)`` (one token per point or box corner) and dense
embeddings ``(B, D, G, G)`` with ``G = S / 16`` (from the mask prompt, or a learned
"no mask" vector everywhere).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import ChannelLayerNorm


class FourierPositions(nn.Module):
    """Random-Fourier-feature encoding of normalised ``(x, y)`` positions in ``[0, 1]``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, features))

    def encode(self, xy: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` in ``[0, 1]`` -> ``(..., 2 * features)``."""
        proj = (2 * xy - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of every cell centre of an ``h x w`` grid, ``(2 * features, h, w)``."""
        m = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) / h
        xs = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(xy).permute(2, 0, 1)

    def pixels(self, xy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates ``(..., 2)`` of an image of ``size`` ``(h, w)``."""
        scale = torch.tensor([size[1], size[0]], dtype=torch.float32, device=xy.device)
        return self.encode(xy.float() / scale)


class PromptEncoder(nn.Module):
    def __init__(self, dim: int = 256, grid: int = 64, img_size: int = 1024, mask_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = dim
        self.image_embedding_size = (grid, grid)
        self.input_image_size = (img_size, img_size)
        self.pe_layer = FourierPositions(dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, kernel_size=2, stride=2),
            ChannelLayerNorm(mask_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, kernel_size=2, stride=2),
            ChannelLayerNorm(mask_chans),
            nn.GELU(),
            nn.Conv2d(mask_chans, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """Size of the low-res mask prompt, ``(4G, 4G)``."""
        return 4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1]

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, ``(1, D, G, G)``, in channels-last
        memory (the decoder reads it as ``G*G`` tokens of ``D`` values). Computed once, again
        only when the Fourier matrix changes (new weights, another device)."""
        m = self.pe_layer.positional_encoding_gaussian_matrix
        key = (m.data_ptr(), m._version, m.device, m.dtype)
        if getattr(self, "_dense_pe", (None,))[0] != key:
            pe = self.pe_layer.grid(*self.image_embedding_size)[None]
            self._dense_pe = (key, pe.contiguous(memory_format=torch.channels_last))
        return self._dense_pe[1]

    def embed_points(self, xy: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """``xy (B, N, 2)``, ``labels (B, N)`` -> ``(B, N (+1 if pad), D)``. Labels 2 and 3 (box
        corners given as points, as SAM 2 takes boxes) get the corner embeddings."""
        if pad:
            xy = torch.cat([xy, xy.new_zeros(xy.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        emb = self.pe_layer.pixels(xy + 0.5, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
        for kind, table in enumerate(self.point_embeddings):
            emb = emb + torch.where(labels == kind, table.weight, 0.0)
        return emb

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``boxes (B, 4)`` as ``x0, y0, x1, y1`` -> two corner tokens ``(B, 2, D)``."""
        corners = boxes.reshape(-1, 2, 2) + 0.5
        emb = self.pe_layer.pixels(corners, self.input_image_size)
        corner_kind = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return emb + corner_kind

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(sparse (B, N, D), dense (B, D, G, G))``; masks are ``(B, 1, 4G, 4G)``."""
        given = [t for t in (points[0] if points else None, boxes, masks) if t is not None]
        batch = given[0].shape[0] if given else 1
        device = self.no_mask_embed.weight.device
        tokens = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            tokens.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            tokens.append(self.embed_boxes(boxes))
        sparse = torch.cat(tokens, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse, dense
