"""SAM 2's mask decoder: SAM's two-way transformer decoder plus what SAM 2 adds.

- an object-score token (before the IoU token) and an MLP head on it: a logit for "the
  object is present in this frame" (``> 0``);
- high-resolution skips: the stride-4 and stride-8 image features, projected by ``conv_s0``
  (to ``D/8``) and ``conv_s1`` (to ``D/4``), are added after each transposed convolution of
  the mask upscaler;
- predicted IoU through a sigmoid;
- the output tokens (for SAM 2's object pointers) and, for single-mask output, a fall-back to
  the best of the three multimask outputs when the single mask is unstable (the fraction of
  pixels above ``+delta`` over those above ``-delta`` is below ``stability_thresh``).

Shapes as in :mod:`.mask_decoder`: image features ``(B, D, g, g)``, prompts ``(P, N, D)``; masks
``(P, M, 4g, 4g)``. High-resolution features: ``((1|P, D/8, 4g, 4g), (1|P, D/4, 2g, 2g))``
(already projected by ``conv_s0``/``conv_s1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import StackedLinear
from .mask_decoder import MaskDecoder, shared_add


def skip_blocks(high_res: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """High-resolution features ``(B, C0, 4g, 4g)``, ``(B, C1, 2g, 2g)`` -> the upscaler's block
    order (see :meth:`MaskDecoder.upscale_masks`): ``(B, g*g*4, C1)`` and ``(B, g*g*16, C0)``."""
    s0, s1 = high_res
    b, c1, h2, w2 = s1.shape
    h, w = h2 // 2, w2 // 2
    s1 = s1.view(b, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w * 4, c1)  # (i, j, a, b)
    c0 = s0.shape[1]
    s0 = s0.view(b, c0, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(b, h * w * 16, c0)  # (i, j, a, b, a', b')
    return s1, s0


@dataclass
class DecoderOutput:
    """Everything one decoder pass gives, for all ``1 + 3`` mask tokens: ``logits (P, 4, 4g, 4g)``,
    ``iou (P, 4)``, ``tokens (P, 4, D)`` (mask-token outputs), ``object_score (P, 1)``."""

    logits: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score: torch.Tensor


class Sam2MaskDecoder(MaskDecoder):
    """See the module docstring; parameter names follow Meta's checkpoints."""

    def __init__(self, dim: int = 256, *, stability_delta: float = 0.05, stability_thresh: float = 0.98) -> None:
        super().__init__(dim, stacked_mlp=True)
        self.obj_score_token = nn.Embedding(1, dim)
        self.pred_obj_score_head = StackedLinear(dim, dim, 1, 3)
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh
        self._skips: tuple = (None, None)

    def skips_for(self, high_res: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`skip_blocks` of ``high_res``, remembered for the last features seen (every click
        on one image reuses them)."""
        key = tuple((t.data_ptr(), t._version, t.shape) for t in high_res)
        if self._skips[0] != key:
            self._skips = (key, skip_blocks(high_res))
        return self._skips[1]

    def run(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
            high_res: tuple[torch.Tensor, torch.Tensor]) -> DecoderOutput:
        """Decode ``P`` prompts (chunks of :attr:`cpu_chunk` on a CPU) against ``image``."""
        prompts = sparse.shape[0]
        step = self.cpu_chunk if sparse.device.type == "cpu" else prompts
        parts = []
        for i in range(0, prompts, max(1, step)):
            sl = slice(i, i + step)
            pick = [t if t.shape[0] == 1 else t[sl] for t in (image, dense, *high_res)]
            parts.append(self._run(pick[0], image_pe, sparse[sl], pick[1], (pick[2], pick[3])))
        return DecoderOutput(*(torch.cat([getattr(p, f) for p in parts]) for f in ("logits", "iou", "tokens", "object_score")))

    def _run(self, image, image_pe, sparse, dense, high_res) -> DecoderOutput:
        prompts = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([out_tokens.expand(prompts, -1, -1), sparse], dim=1)
        if image.shape[0] != prompts:
            image = image.expand(prompts, -1, -1, -1)
        src = shared_add(image, dense)
        _, _, h, w = src.shape
        tokens, src = self.transformer(src, image_pe.expand(prompts, -1, -1, -1), tokens)
        mask_out = tokens[:, 2: 2 + self.num_mask_tokens]
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        s1, s0 = self.skips_for(high_res)
        if s1.shape[0] == 1:
            skips = (s1, s0)
            logits = self.upscale_masks(src, hyper, h, w, skips)
        else:  # per-prompt features (e.g. one frame's objects): one prompt at a time
            logits = torch.cat([self.upscale_masks(src[i:i + 1], hyper[i:i + 1], h, w, (s1[i:i + 1], s0[i:i + 1]))
                                for i in range(prompts)])
        iou = torch.sigmoid(self.iou_prediction_head(tokens[:, 1]))
        return DecoderOutput(logits, iou, mask_out, self.pred_obj_score_head(tokens[:, 0]))

    def stability(self, logits: torch.Tensor) -> torch.Tensor:
        """``(P, H, W)`` logits -> ``(P,)`` area above ``+delta`` over area above ``-delta`` (1 if empty)."""
        flat = logits.flatten(1)
        inner = (flat > self.stability_delta).sum(-1).float()
        outer = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer, 1.0)

    def select(self, out: DecoderOutput, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs a caller sees: the three multimask outputs, or one mask (token 0, or the
        best-scored multimask output where token 0's mask is unstable): ``(P, M, 4g, 4g)``, ``(P, M)``."""
        if multimask:
            return out.logits[:, 1:], out.iou[:, 1:]
        best = out.iou[:, 1:].argmax(-1) + 1
        rows = torch.arange(len(best), device=best.device)
        stable = self.stability(out.logits[:, 0]) >= self.stability_thresh
        logits = torch.where(stable[:, None, None], out.logits[:, 0], out.logits[rows, best])
        iou = torch.where(stable, out.iou[:, 0], out.iou[rows, best])
        return logits[:, None], iou[:, None]
