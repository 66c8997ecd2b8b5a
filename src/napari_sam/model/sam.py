"""The SAM module: image encoder + prompt encoder + mask decoder, and input normalisation."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Segment Anything. ``model_type`` names its configuration (e.g. ``"vit_b"``)."""

    mask_threshold = 0.0

    def __init__(self, image_encoder: ImageEncoder, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder, model_type: str = "custom") -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.model_type = model_type
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise RGB ``(B, 3, h, w)`` in 0-255 and zero-pad bottom/right to ``S x S``."""
        x = (images - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, poll: Callable[[], None] | None = None) -> torch.Tensor:
        """Resized RGB ``(B, 3, h, w)`` (0-255, longest side ``S``) -> features ``(B, 256, G, G)``.
        ``poll()`` is called between encoder blocks and raises to stop (see ``ImageEncoder``)."""
        return self.image_encoder(self.preprocess(images), poll=poll)

    @torch.no_grad()
    def decode(
        self,
        features: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in model coordinates -> low-res logits ``(P, M, 4G, 4G)`` and IoU ``(P, M)``."""
        sparse, dense = self.prompt_encoder(points, boxes, masks)
        return self.mask_decoder(
            image_embeddings=features,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
