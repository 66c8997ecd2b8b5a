"""Access to the reference package ``segment-anything==1.0``, used only as a test oracle.

The reference imports torchvision for two things: a PIL resize in its predictor's
preprocessing, and box NMS in its automatic mask generator. PyPI's torchvision wheels
are built against CUDA torch and do not import beside the CPU-only torch that CI uses.
When the real torchvision is missing, :func:`load` installs a minimal stand-in module
that provides exactly those four functions:

- ``resize(pil_image, (h, w))`` -> ``pil_image.resize((w, h), BILINEAR)``: what torchvision
  does for a PIL image (PIL always antialiases);
- ``to_pil_image(uint8 HWC array)`` -> ``PIL.Image.fromarray``;
- ``box_area`` and ``batched_nms``: textbook greedy NMS per category.

``tests/test_reference_shim.py`` compares the stand-in with the real torchvision where the
latter is importable (run the suite in a venv with ``torch==2.14.1 torchvision==0.29.1``).
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    area = _box_area(boxes)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > thresh
    return order[torch.tensor(keep, dtype=torch.long)]


def _batched_nms(boxes, scores, idxs, iou_threshold):  # torchvision's keyword name
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _install_stand_in() -> None:
    from PIL import Image

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    functional.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)
    functional.to_pil_image = lambda arr: Image.fromarray(np.asarray(arr))
    boxes.box_area = _box_area
    boxes.batched_nms = _batched_nms
    tv.transforms, transforms.functional, tv.ops, ops.boxes = transforms, functional, ops, boxes
    tv.__stand_in__ = True
    for mod in (tv, transforms, functional, ops, boxes):
        sys.modules[mod.__name__] = mod


def real_torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return not getattr(sys.modules.get("torchvision"), "__stand_in__", False)


def load():
    """Import and return ``segment_anything`` (stand-in torchvision if needed)."""
    if not real_torchvision_available():
        if not getattr(sys.modules.get("torchvision"), "__stand_in__", False):
            for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
                del sys.modules[name]  # leftovers of a failed import
            _install_stand_in()
    return importlib.import_module("segment_anything")


def reference_sam(model_type: str, state_dict: dict[str, torch.Tensor]):
    """The reference ``Sam`` for one of our configurations, loaded with ``state_dict``."""
    from napari_sam.model import CONFIGS

    load()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from functools import partial

    cfg = CONFIGS[model_type]
    grid = cfg.img_size // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=cfg.depth, embed_dim=cfg.dim, img_size=cfg.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=cfg.heads, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=cfg.global_blocks, window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(cfg.img_size, cfg.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    sam.load_state_dict(state_dict, strict=True)
    return sam.eval()
