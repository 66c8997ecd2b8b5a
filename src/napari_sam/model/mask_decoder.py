"""Mask decoder: a two-way transformer between prompt tokens and image features.

Inputs: image features ``(B, D, G, G)``, their positional encoding ``(1, D, G, G)``,
sparse prompt tokens ``(P, N, D)`` and dense prompt embeddings ``(P, D, G, G)``. Each of the
``P`` prompts is decoded against the (broadcast) image features.

Outputs: mask logits ``(P, M, 4G, 4G)`` and predicted IoU ``(P, M)``: ``M = 3`` (whole, part,
subpart) when ``multimask_output`` else ``M = 1`` (the single-mask token).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import ChannelLayerNorm, FeedForward, StackedLinear


def shared_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b``; when both are broadcast along the batch (stride 0), computed once and
    broadcast again (the image side is the same for every prompt until prompts touch it)."""
    if a.stride(0) == 0 and b.stride(0) == 0:
        return (a[:1] + b[:1]).expand_as(a)
    return a + b


class TokenAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections to ``dim // downsample``."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.q_proj(q)), self.split(self.k_proj(k)), self.split(self.v_proj(v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    def _head_weights(self, proj: nn.Linear) -> torch.Tensor:
        """``proj``'s weight ``(inner, D)`` as ``(heads, c, D)``."""
        inner, dim = proj.weight.shape
        return proj.weight.view(self.heads, inner // self.heads, dim)

    def tokens_to_image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward` for few queries ``q (B, Nq, D)`` over many keys
        ``k, v (B, Nk, D)`` (prompt tokens attending to image tokens), without projecting
        the ``Nk`` keys and values: the query is taken through ``k_proj``'s weight instead
        (``q Wk^T k^T``; the key bias only adds a per-query constant, which softmax ignores),
        and values are projected after the weighted sum (the weights sum to one). Batch
        entries of ``k``/``v`` that are broadcast (stride 0) are computed once."""
        b, nq, dim = q.shape
        qh = self.split(self.q_proj(q))                                   # (B, n, Nq, c)
        qk = torch.einsum("bnqc,ncd->bnqd", qh, self._head_weights(self.k_proj))
        qk = qk * qh.shape[-1] ** -0.5
        if k.stride(0) == 0 and v.stride(0) == 0:                         # one image for all prompts
            rows, k, v = qk.reshape(1, -1, dim), k[:1], v[:1]
        else:
            rows = qk.reshape(b, -1, dim)                                 # heads folded into rows
        attn = torch.softmax(rows @ k.transpose(1, 2), dim=-1)            # (B|1, n * Nq, Nk)
        ctx = (attn @ v).view(b, self.heads, nq, dim)                     # (B, n, Nq, D)
        out = torch.einsum("bnqd,ncd->bnqc", ctx, self._head_weights(self.v_proj))
        out = out + self.v_proj.bias.view(self.heads, 1, -1)
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, -1))

    def image_to_tokens(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward` for many queries ``q (B, Nq, D)`` (image tokens) over few
        keys ``k, v (B, Nk, D)``, without projecting the ``Nq`` queries in and out: the keys
        are taken through ``q_proj``'s weight (``q Wq^T k_h^T``) and the values through
        ``out_proj``'s weight before the weighted sum."""
        b, nq, dim = q.shape
        kh = self.split(self.k_proj(k))                                   # (B, n, Nk, c)
        vh = self.split(self.v_proj(v))
        c = kh.shape[-1]
        keys = torch.einsum("ncd,bnkc->bdnk", self._head_weights(self.q_proj), kh) * c ** -0.5
        key_bias = torch.einsum("nc,bnkc->bnk", self.q_proj.bias.view(self.heads, c), kh) * c ** -0.5
        nk = kh.shape[2]
        if q.stride(0) == 0:                                              # one image for all prompts
            scores = (q[0] @ keys.permute(1, 0, 2, 3).reshape(dim, -1)).view(nq, b, -1).transpose(0, 1)
        else:
            scores = q @ keys.reshape(b, dim, -1)                         # (B, Nq, n * Nk)
        scores = scores.view(b, nq, self.heads, nk) + key_bias[:, None]
        attn = torch.softmax(scores, dim=-1).view(b, nq, -1)
        wo = self.out_proj.weight.view(dim, self.heads, c)
        values = torch.einsum("bnkc,dnc->bnkd", vh, wo).reshape(b, -1, dim)  # (B, n * Nk, D)
        return attn @ values + self.out_proj.bias


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.self_attn = TokenAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, heads, downsample)

    def forward(self, tokens, image, token_pe, image_pe):
        if self.first:  # the first block sees the raw prompt tokens, no residual
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            t = tokens + token_pe
            tokens = tokens + self.self_attn(t, t, tokens)
        tokens = self.norm1(tokens)
        t, i = tokens + token_pe, shared_add(image, image_pe)
        tokens = self.norm2(tokens + self.cross_attn_token_to_image.tokens_to_image(t, i, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        t = tokens + token_pe
        image = self.norm4(image + self.cross_attn_image_to_token.image_to_tokens(i, t, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int = 256, depth: int = 2, heads: int = 8, mlp_dim: int = 2048, downsample: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, downsample, first=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(dim, heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """``image``/``image_pe`` ``(B, D, H, W)``, ``tokens`` ``(B, N, D)`` ->
        updated tokens ``(B, N, D)`` and image tokens ``(B, H*W, D)``."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        attn = self.final_attn_token_to_image.tokens_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + attn), image


class MaskDecoder(nn.Module):
    def __init__(self, dim: int = 256, num_multimask: int = 3, iou_hidden: int = 256) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask + 1
        self.transformer = TwoWayTransformer(dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            ChannelLayerNorm(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            StackedLinear(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = StackedLinear(dim, iou_hidden, self.num_mask_tokens, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    def predict_masks(self, image_embeddings, image_pe, sparse, dense):
        """All ``num_mask_tokens`` masks and IoU predictions (token 0 is the single-mask one)."""
        prompts = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([out_tokens.expand(prompts, -1, -1), sparse], dim=1)
        if image_embeddings.shape[0] != prompts:
            image_embeddings = image_embeddings.expand(prompts, -1, -1, -1)
        src = shared_add(image_embeddings, dense)
        pos = image_pe.expand(prompts, -1, -1, -1)
        b, c, h, w = src.shape
        tokens, src = self.transformer(src, pos, tokens)
        iou_out = tokens[:, 0]
        mask_out = tokens[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_out)
