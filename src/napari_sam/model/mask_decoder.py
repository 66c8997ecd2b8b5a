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


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, D, H, W)`` -> contiguous tokens ``(B, H*W, D)``; a batch broadcast along its first
    axis (stride 0) is converted once and broadcast again."""
    if x.stride(0) == 0:
        return x[:1].flatten(2).transpose(1, 2).contiguous().expand(x.shape[0], -1, -1)
    return x.flatten(2).transpose(1, 2).contiguous()


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
        ``out_proj``'s weight before the weighted sum. Scores are laid out ``(B, n, Nk, Nq)``
        so that the softmax over the few keys runs along a long contiguous axis."""
        b, nq, dim = q.shape
        kh = self.split(self.k_proj(k))                                   # (B, n, Nk, c)
        vh = self.split(self.v_proj(v))
        n, nk, c = kh.shape[1:]
        scale = c ** -0.5
        keys = torch.einsum("ncd,bnkc->bnkd", self._head_weights(self.q_proj), kh).reshape(b, n * nk, dim)
        key_bias = torch.einsum("nc,bnkc->bnk", self.q_proj.bias.view(n, c), kh) * scale
        if q.stride(0) == 0:                                              # one image for all prompts
            scores = (keys.reshape(-1, dim) @ q[0].T).view(b, n, nk, nq)
        else:
            scores = (keys @ q.transpose(1, 2)).view(b, n, nk, nq)
        scores = torch.add(key_bias[..., None], scores, alpha=scale)
        attn = torch.softmax(scores, dim=2).view(b, n * nk, nq)
        values = torch.einsum("bnkc,dnc->bnkd", vh, self.out_proj.weight.view(dim, n, c)).reshape(b, n * nk, dim)
        return torch.baddbmm(self.out_proj.bias, attn.transpose(1, 2), values)  # (B, Nq, D)


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention.
    ``stacked_mlp``: the MLP's state-dict names are SAM 2's ``layers.0/1`` (SAM 1: ``lin1/lin2``)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, first: bool,
                 stacked_mlp: bool = False) -> None:
        super().__init__()
        self.first = first
        self.self_attn = TokenAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = StackedLinear(dim, mlp_dim, dim, 2) if stacked_mlp else FeedForward(dim, mlp_dim, act=nn.ReLU)
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
    def __init__(self, dim: int = 256, depth: int = 2, heads: int = 8, mlp_dim: int = 2048, downsample: int = 2,
                 stacked_mlp: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, downsample, first=(i == 0), stacked_mlp=stacked_mlp) for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(dim, heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """``image``/``image_pe`` ``(B, D, H, W)``, ``tokens`` ``(B, N, D)`` ->
        updated tokens ``(B, N, D)`` and image tokens ``(B, H*W, D)``."""
        image, image_pe = to_tokens(image), to_tokens(image_pe)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        attn = self.final_attn_token_to_image.tokens_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + attn), image


class MaskDecoder(nn.Module):
    cpu_chunk = 8
    """Prompts decoded together on a CPU: the per-prompt image tokens (4 MB each) of a chunk stay
    in cache (64 prompts in chunks of 8: 27 % faster than in one batch)."""

    def __init__(self, dim: int = 256, num_multimask: int = 3, iou_hidden: int = 256, stacked_mlp: bool = False) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask + 1
        self.transformer = TwoWayTransformer(dim, stacked_mlp=stacked_mlp)
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
        keep = slice(1, None) if multimask_output else slice(0, 1)
        prompts = sparse_prompt_embeddings.shape[0]
        step = self.cpu_chunk if sparse_prompt_embeddings.device.type == "cpu" else prompts
        parts = []
        for i in range(0, prompts, max(1, step)):
            sl = slice(i, i + step)
            image, dense = (t if t.shape[0] == 1 else t[sl] for t in (image_embeddings, dense_prompt_embeddings))
            parts.append(self.predict_masks(image, image_pe, sparse_prompt_embeddings[sl], dense, keep))
        return torch.cat([m for m, _ in parts]), torch.cat([q for _, q in parts])

    def predict_masks(self, image_embeddings, image_pe, sparse, dense, keep: slice = slice(None)):
        """Masks and IoU predictions of the mask tokens ``keep`` (default all
        ``num_mask_tokens``; token 0 is the single-mask one)."""
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
        mlps = list(enumerate(self.output_hypernetworks_mlps))[keep]
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in mlps], dim=1)
        return self.upscale_masks(src, hyper, h, w), self.iou_prediction_head(iou_out)[:, keep]

    def upscale_masks(self, image: torch.Tensor, hyper: torch.Tensor, h: int, w: int,
                      skips: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Image tokens ``(B, h*w, D)`` and hypernetwork outputs ``(B, M, D/8)`` -> mask logits
        ``(B, M, 4h, 4w)``. ``skips`` (SAM 2's high-resolution features, in the block order
        below: ``(h*w*4, D/4)`` and ``(h*w*16, D/8)``) are added after each transposed
        convolution, before its normalisation / activation.

        ``output_upscaling`` (two stride-2, kernel-2 transposed convolutions) is evaluated as
        matrix products in channels-last layout: the kernels do not overlap, so each input pixel
        maps to its own 2x2 output block, ``x @ W.reshape(C_in, 2*2*C_out)``. Rows stay in
        block order ``(i, j, a, b, a', b')`` (output pixel ``(4i+2a+a', 4j+2b+b')``) until the
        final ``M`` masks are put in raster order. On a CPU one prompt at a time, so the
        ``(4h*4w, D/8)`` intermediate stays in cache; elsewhere all prompts in one product.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        c1, c2 = up1.out_channels, up2.out_channels
        w1 = up1.weight.permute(0, 2, 3, 1).reshape(up1.in_channels, 4 * c1)   # columns (a, b, c)
        w2 = up2.weight.permute(0, 2, 3, 1).reshape(up2.in_channels, 4 * c2)
        b1, b2 = up1.bias.repeat(4), up2.bias.repeat(4)

        def masks_of(x: torch.Tensor, hy: torch.Tensor) -> torch.Tensor:  # (P, h*w, D), (P, M, D/8)
            y = torch.addmm(b1, x.reshape(-1, x.shape[-1]), w1).view(len(x), -1, c1)  # (P, h*w*4, c1)
            if skips is not None:
                y = y + skips[0]
            y = act1(nn.functional.layer_norm(y, (c1,), norm.weight, norm.bias, norm.eps)).view(-1, c1)
            y = torch.addmm(b2, y, w2).view(len(x), -1, c2)                       # (P, h*w*16, c2)
            y = act2(y if skips is None else y + skips[1])
            return (hy @ y.transpose(1, 2)).view(*hy.shape[:2], h, w, 2, 2, 2, 2)  # (P, M, i, j, a, b, a', b')

        if image.device.type == "cpu":
            masks = torch.cat([masks_of(x[None], hy[None]) for x, hy in zip(image, hyper)])
        else:
            masks = masks_of(image, hyper)
        masks = masks.permute(0, 1, 2, 4, 6, 3, 5, 7)                           # (B, M, i, a, a', j, b, b')
        return masks.reshape(len(image), -1, 4 * h, 4 * w)
