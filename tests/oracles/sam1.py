"""Oracle: the reference ``segment-anything==1.0``, imported and built on our weights (tests and
``benchmarks/ --compare-reference``; a test extra, never a dependency of the package).

The reference imports torchvision for a PIL resize and a PIL conversion (its predictor) and for
box NMS (its automatic mask generator); SAM 2's image predictor (``tests/oracles/sam2.py``) for
``ToTensor``, ``Resize`` and ``Normalize``. PyPI's torchvision wheels do not import beside a
CPU-only torch, so when the real torchvision is missing :func:`load_reference` installs a small
stand-in module: ``resize`` and ``to_pil_image`` do what torchvision does for PIL images
(``PIL.Image.resize(..., BILINEAR)``, ``Image.fromarray``); ``box_area`` and ``batched_nms``
are textbook greedy NMS per category; the three transforms do what torchvision does for
tensors (scale to 0-1, antialiased bilinear ``interpolate``, subtract and divide).
``tests/oracles/test_sam1_stand_in.py`` checks the stand-in against the real torchvision where
it imports.
"""

from __future__ import annotations

import importlib
import sys
import types
from functools import partial

import numpy as np
import torch


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                 iou_threshold: float) -> torch.Tensor:  # torchvision's names: the reference passes the keyword
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    boxes = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
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
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


class _ToTensor:
    """``torchvision.transforms.ToTensor`` for uint8 ``(H, W, C)`` arrays: ``(C, H, W)`` float in 0-1."""

    def __call__(self, pic) -> torch.Tensor:
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        img = torch.from_numpy(arr.transpose((2, 0, 1)).copy()).contiguous()
        return img.float().div(255) if img.dtype == torch.uint8 else img.float()


class _Resize(torch.nn.Module):
    """``torchvision.transforms.Resize(size)`` of a float ``(C, H, W)`` tensor: antialiased
    bilinear (torchvision's default for tensors), the tensor itself when it has the size."""

    def __init__(self, size) -> None:
        super().__init__()
        self.size = [int(s) for s in size]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if [img.shape[-2], img.shape[-1]] == self.size:
            return img
        return torch.nn.functional.interpolate(img[None], size=self.size, mode="bilinear", align_corners=False,
                                               antialias=True)[0]


class _Normalize(torch.nn.Module):
    """``torchvision.transforms.Normalize(mean, std)`` of a ``(C, H, W)`` tensor."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=img.dtype, device=img.device)[:, None, None]
        std = torch.tensor(self.std, dtype=img.dtype, device=img.device)[:, None, None]
        return (img - mean) / std


def _install_stand_in() -> None:
    from PIL import Image

    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.ops", "torchvision.ops.boxes"]
    mods = {name: types.ModuleType(name) for name in names}
    functional = mods["torchvision.transforms.functional"]
    functional.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)
    functional.to_pil_image = lambda arr: Image.fromarray(np.asarray(arr))
    mods["torchvision.ops.boxes"].box_area = _box_area
    mods["torchvision.ops.boxes"].batched_nms = _batched_nms
    mods["torchvision"].transforms = mods["torchvision.transforms"]
    mods["torchvision"].ops = mods["torchvision.ops"]
    mods["torchvision.transforms"].functional = functional
    for name, cls in (("ToTensor", _ToTensor), ("Resize", _Resize), ("Normalize", _Normalize)):  # SAM 2's image predictor
        setattr(mods["torchvision.transforms"], name, cls)
    mods["torchvision.ops"].boxes = mods["torchvision.ops.boxes"]
    mods["torchvision"].__stand_in__ = True
    sys.modules.update(mods)


def real_torchvision_available() -> bool:
    """True if the real torchvision imports (not our stand-in)."""
    try:
        import torchvision
    except Exception:
        return False
    return not getattr(torchvision, "__stand_in__", False)


def ensure_torchvision() -> None:
    """Import the real torchvision, or install the stand-in where it does not import."""
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except Exception:
            for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
                del sys.modules[name]  # leftovers of a failed import
            _install_stand_in()


def load_reference():
    """Import and return ``segment_anything`` (with the torchvision stand-in if needed).

    Raises ``ImportError`` with an install hint when the package is missing."""
    ensure_torchvision()
    try:
        return importlib.import_module("segment_anything")
    except ImportError as exc:
        raise ImportError("--compare-reference needs the reference package: "
                          "pip install segment-anything==1.0") from exc


load = load_reference


def reference_sam(model_type: str, state_dict: dict[str, torch.Tensor]):
    """The reference ``Sam`` for one of our configurations, loaded with ``state_dict``."""
    from napari_sam.model import CONFIGS

    load_reference()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

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
