"""SAM 2 (2.1 configurations): Hiera image encoder, SAM-style prompt encoder and mask decoder,
memory encoder, memory attention, object pointers.

Coordinates are the model's: ``(x, y)`` pixels of the ``S x S`` input (the image is resized to
``S x S`` without keeping its aspect ratio, unlike SAM 1). Shapes: image features
``(B, 256, g, g)`` with ``g = S / 16``; high-resolution features ``(B, 32, 4g, 4g)`` and
``(B, 64, 2g, 2g)``; low-res mask logits ``(B, M, 4g, 4g)``; memories ``(B, 64, g, g)``;
object pointers ``(B, 256)``.

The image path (:meth:`Sam2.embed`, :meth:`Sam2.decode`) gives what Meta's image predictor
gives; the tracking steps (:meth:`Sam2.no_memory`, :meth:`Sam2.condition`,
:meth:`Sam2.decode_frame`, :meth:`Sam2.mask_as_output`, :meth:`Sam2.encode_memory`) are
driven by :class:`napari_sam.engine.Tracker`, which keeps the memory bank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import StackedLinear
from .dense import matmul_nt
from .hiera import FpnNeck, Hiera
from .memory import MemoryAttention, MemoryEncoder, sine_positions
from .prompt_encoder import PromptEncoder
from .sam2_decoder import Sam2MaskDecoder

PIXEL_MEAN = (0.485, 0.456, 0.406)  # of 0-1 RGB
PIXEL_STD = (0.229, 0.224, 0.225)
NO_OBJECT_LOGIT = -1024.0  # low-res logits of an object predicted absent


@dataclass(frozen=True)
class Sam2Config:
    """A SAM 2 architecture: the Hiera trunk's shape and the input size ``image_size``."""

    embed_dim: int
    heads: int
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    pos_embed_size: tuple[int, int] = (14, 14)
    image_size: int = 1024


SAM2_CONFIGS: dict[str, Sam2Config] = {  # Meta's sam2.1_hiera_{t,s,b+,l}.yaml
    "sam2.1_hiera_t": Sam2Config(96, 1, (1, 2, 7, 2), (5, 7, 9), pos_embed_size=(7, 7)),
    "sam2.1_hiera_s": Sam2Config(96, 1, (1, 2, 11, 2), (7, 10, 13), pos_embed_size=(7, 7)),
    "sam2.1_hiera_b+": Sam2Config(112, 2),
    "sam2.1_hiera_l": Sam2Config(144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7)),
    # For tests: sam2.1_hiera_t at 256 x 256 input, and a small trunk (real heads) at 256.
    "sam2_hiera_t256_test": Sam2Config(96, 1, (1, 2, 7, 2), (5, 7, 9), pos_embed_size=(7, 7), image_size=256),
    "sam2_tiny_test": Sam2Config(32, 1, (1, 1, 2, 1), (3,), pos_embed_size=(7, 7), image_size=256),
    # For the annotator's tracking tests: a 4-block trunk at 128 x 128 input (memory attention over 8 x 8 tokens).
    "sam2_tiny128_test": Sam2Config(32, 1, (1, 1, 1, 1), (2,), (8, 4, 4, 2), (7, 7), image_size=128),
}


class Sam2ImageEncoder(nn.Module):
    """Hiera trunk + FPN neck (levels 2 and 3 top-down, the coarsest dropped)."""

    def __init__(self, cfg: Sam2Config) -> None:
        super().__init__()
        self.img_size = cfg.image_size
        self.trunk = Hiera(embed_dim=cfg.embed_dim, heads=cfg.heads, stages=cfg.stages, global_blocks=cfg.global_blocks,
                           window_spec=cfg.window_spec, pos_embed_size=cfg.pos_embed_size)
        self.neck = FpnNeck(self.trunk.channels[::-1])

    @property
    def blocks(self) -> nn.ModuleList:
        return self.trunk.blocks

    def forward(self, x: torch.Tensor, poll: Callable[[], None] | None = None) -> list[torch.Tensor]:
        """Normalised ``(B, 3, S, S)`` -> the pyramid at strides 4, 8, 16, ``(B, 256, h, w)`` each
        (Meta's ``backbone_fpn``; :meth:`Sam2.embed` computes what the decoder needs more directly).
        ``poll()`` is called between trunk blocks."""
        pyramid = self.neck(self.trunk(x, poll), (0, 1, 2))
        return [pyramid[level].permute(0, 3, 1, 2) for level in (0, 1, 2)]


@dataclass
class FrameOutput:
    """One decoded frame for ``B`` objects: ``logits (B, 1, 4g, 4g)`` (the chosen mask),
    ``iou (B,)``, ``pointer (B, 256)``, ``object_score (B, 1)`` (logit of "present")."""

    logits: torch.Tensor
    iou: torch.Tensor
    pointer: torch.Tensor
    object_score: torch.Tensor


class Sam2(nn.Module):
    """SAM 2; ``model_type`` names its configuration (see :data:`SAM2_CONFIGS`)."""

    mask_threshold = 0.0
    family = "sam2"
    num_maskmem = 7   # memory slots: prompted frames (slot 0) and the 6 frames before
    max_pointers = 16  # object pointers from frames within this distance
    logit_clamp = 32.0  # returned low-res logits (and logits fed back as prompts) lie within +-this
    embedding_parts = ("sam_mask_decoder.conv_s0", "sam_mask_decoder.conv_s1")  # beyond image_encoder

    def __init__(self, cfg: Sam2Config, model_type: str = "custom") -> None:
        super().__init__()
        dim, mem_dim, grid = 256, 64, cfg.image_size // 16
        self.model_type = model_type
        self.image_encoder = Sam2ImageEncoder(cfg)
        self.sam_prompt_encoder = PromptEncoder(dim, grid, cfg.image_size)
        self.sam_mask_decoder = Sam2MaskDecoder(dim)
        self.memory_attention = MemoryAttention(dim, mem_dim)
        self.memory_encoder = MemoryEncoder(dim, mem_dim)
        self.obj_ptr_proj = StackedLinear(dim, dim, dim, 3)
        self.obj_ptr_tpos_proj = nn.Linear(dim, mem_dim)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(self.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, dim))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim))
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)
        self._fused: tuple = (None, None)

    # --- the names the engine uses for SAM 1 and SAM 2 alike -------------------------------
    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> Sam2MaskDecoder:
        return self.sam_mask_decoder

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    @property
    def grid(self) -> int:
        return self.img_size // 16

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # --- image path ----------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """RGB ``(B, 3, H, W)`` in 0-255 -> normalised ``(B, 3, S, S)``: scaled to 0-1, resized
        bilinearly (antialiased) to ``S x S`` unless it has that size, normalised."""
        x = images / 255
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def _fused_skips(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The neck's ``1 x 1`` projection of trunk levels 0 and 1 followed by the decoder's
        ``conv_s0``/``conv_s1`` as one linear map each (both are linear; the 256-channel
        intermediate is never formed). Recomputed when the weights change."""
        neck, dec = self.image_encoder.neck, self.sam_mask_decoder
        params = [*neck.convs.parameters(), dec.conv_s0.weight, dec.conv_s0.bias, dec.conv_s1.weight, dec.conv_s1.bias]
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._fused[0] != key:
            fused = []
            for level, conv in ((0, dec.conv_s0), (1, dec.conv_s1)):
                w, b = (t.float() for t in neck.lateral_weights(level))
                w2, b2 = conv.weight.flatten(1).float(), conv.bias.float()
                fused.append(((w2 @ w).to(conv.weight.dtype), torch.addmv(b2, w2, b).to(conv.weight.dtype)))
            self._fused = (key, fused)
        return self._fused[1]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, poll: Callable[[], None] | None = None
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """RGB ``(B, 3, H, W)`` in 0-255 -> raw features ``(B, 256, g, g)`` (stride 16, before
        ``no_mem_embed``) and high-resolution features ``((B, 32, 4g, 4g), (B, 64, 2g, 2g))``
        (projected for the decoder). ``poll()`` is called between trunk blocks."""
        stages = self.image_encoder.trunk(self.preprocess(images), poll)
        neck = self.image_encoder.neck
        fusable = not any(neck.needed_by_top_down(lv) or lv in neck.top_down for lv in (0, 1))
        levels = (2,) if fusable else (0, 1, 2)
        pyramid = neck(stages, levels)
        if fusable:
            high = [matmul_nt(stages[lv], w, b) for lv, (w, b) in enumerate(self._fused_skips())]
        else:
            dec = self.sam_mask_decoder
            high = [matmul_nt(pyramid[lv], conv.weight.flatten(1), conv.bias)
                    for lv, conv in ((0, dec.conv_s0), (1, dec.conv_s1))]
        features = pyramid[2].permute(0, 3, 1, 2).contiguous()
        return features, tuple(h.permute(0, 3, 1, 2).contiguous() for h in high)

    @staticmethod
    def merge_prompts(points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Boxes ``(P, 4)`` become two leading corner points (labels 2 and 3), as SAM 2 was trained."""
        if boxes is None:
            return points
        corners = boxes.reshape(-1, 2, 2)
        kinds = torch.tensor([[2, 3]], device=boxes.device).expand(len(corners), 2)
        if points is None:
            return corners, kinds
        return torch.cat([corners, points[0]], dim=1), torch.cat([kinds.to(points[1].dtype), points[1]], dim=1)

    @torch.no_grad()
    def decode(self, features: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
               boxes: torch.Tensor | None = None, masks: torch.Tensor | None = None, multimask: bool = True,
               high_res: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in model coordinates on one image -> low-res logits ``(P, M, 4g, 4g)`` and IoU
        ``(P, M)``. Meta's image predictor returns the logits clamped to :attr:`logit_clamp`
        (masks come from the unclamped ones)."""
        if high_res is None:
            raise ValueError("SAM 2 decodes with the high-resolution features of its embedding (high_res=)")
        image = features + self.no_mem_embed.view(1, -1, 1, 1)
        sparse, dense = self.sam_prompt_encoder(self.merge_prompts(points, boxes), None, masks)
        out = self.sam_mask_decoder.run(image, self.sam_prompt_encoder.get_dense_pe(), sparse, dense, high_res)
        logits, iou = self.sam_mask_decoder.select(out, multimask)
        return logits, iou

    # --- tracking steps ------------------------------------------------------------------
    def no_memory(self, features: torch.Tensor) -> torch.Tensor:
        """Features of a frame decoded without memory (its first prompt)."""
        return features + self.no_mem_embed.view(1, -1, 1, 1)

    def condition(self, features: torch.Tensor, memories: Sequence[tuple[torch.Tensor, int]],
                  pointers: Sequence[tuple[torch.Tensor, int]], pointer_span: int) -> torch.Tensor:
        """Raw frame features ``(B, 256, g, g)`` attended to the memory bank -> ``(B, 256, g, g)``.

        ``memories``: ``(memory (B, 64, g, g), slot)``, slot 0 for prompted frames and
        ``num_maskmem - k`` for the frame ``k`` steps back; ``pointers``: ``(pointer (B, 256),
        signed frame distance)``, normalised by ``pointer_span`` for their temporal encoding.
        """
        b, c, g, _ = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        pos = sine_positions(c, g, g, features.device).flatten(2).transpose(1, 2)
        mem_pos = sine_positions(64, g, g, features.device).flatten(2).transpose(1, 2)
        parts, part_pos = [], []
        for mem, slot in memories:
            parts.append(mem.flatten(2).transpose(1, 2))
            part_pos.append((mem_pos + self.maskmem_tpos_enc[self.num_maskmem - slot - 1].view(1, 1, -1)).expand(b, -1, -1))
        n_ptr = 0
        if pointers:
            ptr = torch.stack([p for p, _ in pointers])                           # (P, B, 256)
            dist = torch.tensor([d for _, d in pointers], device=features.device) / pointer_span
            ptr_pos = self.obj_ptr_tpos_proj(sine_1d(dist, c))                    # (P, 64)
            split = c // 64
            parts.append(ptr.reshape(len(pointers), b, split, 64).permute(1, 0, 2, 3).reshape(b, -1, 64))
            part_pos.append(ptr_pos.repeat_interleave(split, dim=0)[None].expand(b, -1, -1))
            n_ptr = len(pointers) * split
        memory, memory_pos = torch.cat(parts, dim=1), torch.cat(part_pos, dim=1)
        out = self.memory_attention(tokens, pos, memory, memory_pos, n_ptr)
        return out.transpose(1, 2).reshape(b, c, g, g)

    def _heads(self, features, high_res, points, mask_logits, multimask: bool) -> tuple[FrameOutput, torch.Tensor]:
        """Decode ``(B, 256, g, g)`` conditioned features -> the frame output and its pointer token."""
        b = features.shape[0]
        if points is None:  # an empty point stands in for no prompt
            points = (features.new_zeros(b, 1, 2), torch.full((b, 1), -1, dtype=torch.int64, device=features.device))
        if mask_logits is not None and mask_logits.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_logits = F.interpolate(mask_logits.float(), size=self.sam_prompt_encoder.mask_input_size,
                                        mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder(points, None, mask_logits)
        out = self.sam_mask_decoder.run(features, self.sam_prompt_encoder.get_dense_pe(), sparse, dense, high_res)
        logits, iou = self.sam_mask_decoder.select(out, multimask)
        present = out.object_score > 0
        logits = torch.where(present[:, :, None, None], logits, NO_OBJECT_LOGIT)
        rows = torch.arange(b, device=features.device)
        if multimask:
            best = iou.argmax(-1)
            logits, iou, token = logits[rows, best][:, None], iou[rows, best], out.tokens[rows, best + 1]
        else:
            logits, iou, token = logits, iou[:, 0], out.tokens[:, 0]
        pointer = self.obj_ptr_proj(token)
        lam = present.float()
        pointer = lam * pointer + (1 - lam) * self.no_obj_ptr
        return FrameOutput(logits, iou, pointer, out.object_score), token

    @torch.no_grad()
    def decode_frame(self, features: torch.Tensor, high_res, points=None, mask_logits=None,
                     multimask: bool = False) -> FrameOutput:
        """Decode conditioned features ``(B, 256, g, g)`` with optional points (model ``(x, y)``,
        labels; 2/3 for box corners) and low-res ``mask_logits (B, 1, h, w)``."""
        return self._heads(features, high_res, points, mask_logits, multimask)[0]

    @torch.no_grad()
    def mask_as_output(self, features: torch.Tensor, high_res, mask: torch.Tensor) -> FrameOutput:
        """A given mask ``(B, 1, S, S)`` (0/1) taken as the frame's output: logits +-10 at the
        model resolution, downsampled; the pointer decoded from the raw ``features``."""
        mask = mask.float()
        logits = F.interpolate(mask * 20.0 - 10.0, size=(mask.shape[-2] // 4, mask.shape[-1] // 4), mode="bilinear",
                               align_corners=False, antialias=True)
        heads = self.decode_frame(features, high_res, mask_logits=self.mask_downsample(mask))
        lam = torch.any(mask.flatten(1) > 0.0, dim=1)[:, None].float()
        pointer = lam * heads.pointer + (1 - lam) * self.no_obj_ptr
        ones = mask.new_ones(mask.shape[0])
        return FrameOutput(logits, ones, pointer, 20.0 * lam - 10.0)

    @torch.no_grad()
    def encode_memory(self, features: torch.Tensor, logits: torch.Tensor, object_score: torch.Tensor,
                      binarize: bool) -> torch.Tensor:
        """Raw features ``(B, 256, g, g)`` and a frame's low-res logits ``(B, 1, 4g, 4g)`` -> its
        memory ``(B, 64, g, g)``: the logits upsampled to ``S x S``, as a 0/1 mask (``binarize``,
        for prompted frames) or probabilities, scaled to +-10; the "no object" embedding added
        where the object is absent."""
        masks = F.interpolate(logits, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = (masks > 0).float() if binarize else torch.sigmoid(masks)
        memory = self.memory_encoder(features, masks * 20.0 - 10.0)
        absent = 1 - (object_score > 0).float()
        return memory + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]


def sine_1d(values: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``(n,)`` -> ``(n, dim)``: sines then cosines of ``values`` at geometric frequencies."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=values.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    p = values[:, None] / dim_t
    return torch.cat([p.sin(), p.cos()], dim=-1)
