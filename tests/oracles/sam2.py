"""Oracle: Meta's SAM 2, the ``sam2`` 1.1.0 package from the package index, built on our weights
(tests and ``benchmarks/ --compare-reference``; a test extra installed by ``.ci/run``, never a
dependency of the package). That upload is a third party's; its ``sam2/`` code is byte-identical
to facebookresearch/sam2 at commit 2b90b9f (2024-12-15).

How it is driven here, and why:

- configurations: Meta's ``configs/sam2.1/*.yaml``; our test configurations are
  ``sam2.1_hiera_t.yaml`` with Hydra overrides (``++model.image_size=256``, trunk shape).
- the image predictor imports torchvision for ``ToTensor``/``Resize``/``Normalize``; where the
  real torchvision does not import (CPU torch from the index) the stand-in of
  :mod:`tests.oracles.sam1` provides them. Its ``_bb_feat_sizes`` are hard-coded for 1024 and
  are set for the configuration's input size.
- the video predictor reads JPEG folders or MP4s only: :func:`video_state` hands it frames
  prepared by the same transforms as its image predictor. Hole filling needs the ``sam2._C``
  extension, which the CPU install lacks: ``fill_hole_area`` is 0 (ours has none either).
- the video predictor stores memories in bf16; where an object has no object pointer (an
  object first prompted on a later frame, reverse tracking) its memory attention then gets
  bf16 keys beside fp32 weights and fails without autocast (upstream #308, #577). The stored
  memories are cast back to fp32 *after* the bf16 rounding, which keeps every value the same.
"""

from __future__ import annotations

import importlib
from unittest import mock

import numpy as np
import torch

from . import sam1

PIXEL_MEAN, PIXEL_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load():
    """Import and return the ``sam2`` package (raises ``ImportError`` with an install hint)."""
    try:
        return importlib.import_module("sam2")
    except ImportError as exc:
        raise ImportError("the SAM 2 oracle needs sam2==1.1.0 (see .ci/run: SAM2_BUILD_CUDA=0 "
                          "pip install --no-build-isolation --no-deps sam2==1.1.0)") from exc


def config_file_and_overrides(model_type: str) -> tuple[str, list[str]]:
    """Meta's config file for one of our SAM 2 configurations, and the Hydra overrides that
    make it that configuration."""
    from napari_sam.model.sam2 import SAM2_CONFIGS

    official = f"configs/sam2.1/{model_type}.yaml"
    if model_type in ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"):
        return official, []
    cfg = SAM2_CONFIGS[model_type]
    trunk = "++model.image_encoder.trunk"
    dims = [cfg.embed_dim * 2 ** i for i in range(len(cfg.stages))][::-1]

    def seq(v) -> str:
        return "[" + ",".join(str(int(x)) for x in v) + "]"

    return "configs/sam2.1/sam2.1_hiera_t.yaml", [
        f"++model.image_size={cfg.image_size}",
        f"{trunk}.embed_dim={cfg.embed_dim}", f"{trunk}.num_heads={cfg.heads}", f"{trunk}.stages={seq(cfg.stages)}",
        f"{trunk}.global_att_blocks={seq(cfg.global_blocks)}", f"{trunk}.window_spec={seq(cfg.window_spec)}",
        f"{trunk}.window_pos_embed_bkg_spatial_size={seq(cfg.pos_embed_size)}",
        f"++model.image_encoder.neck.backbone_channel_list={seq(dims)}",
    ]


def reference_model(model_type: str, state_dict: dict[str, torch.Tensor], *, video: bool = False,
                    corrections_as_prompts: bool = True):
    """Meta's ``SAM2Base`` (or ``SAM2VideoPredictor`` when ``video``) for our configuration,
    loaded strictly with ``state_dict``, in eval mode on the CPU. ``corrections_as_prompts`` is
    the video predictor's ``add_all_frames_to_correct_as_cond``."""
    load()
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    config, overrides = config_file_and_overrides(model_type)
    if video:
        overrides = overrides + [f"++model.add_all_frames_to_correct_as_cond={str(corrections_as_prompts).lower()}"]
        model = build_sam2_video_predictor(config, None, device="cpu", hydra_overrides_extra=overrides)
        model.fill_hole_area = 0
        _keep_memories_fp32(model)
    else:
        model = build_sam2(config, None, device="cpu", hydra_overrides_extra=overrides)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def image_predictor(model):
    """Meta's ``SAM2ImagePredictor`` on ``model`` (a :func:`reference_model`)."""
    sam1.ensure_torchvision()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    s = model.image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return predictor


def prepare_frames(frames: list[np.ndarray], image_size: int) -> torch.Tensor:
    """uint8 RGB frames -> ``(T, 3, S, S)`` as the image predictor's transforms make them."""
    sam1.ensure_torchvision()
    from torchvision.transforms import Normalize, Resize, ToTensor

    to_tensor, rest = ToTensor(), torch.nn.Sequential(Resize((image_size, image_size)), Normalize(PIXEL_MEAN, PIXEL_STD))
    return torch.stack([rest(to_tensor(f)) for f in frames])


def video_state(predictor, frames: list[np.ndarray]) -> dict:
    """``predictor.init_state`` for in-memory uint8 RGB frames ``(H, W, 3)``."""
    images = prepare_frames(frames, predictor.image_size)
    h, w = frames[0].shape[:2]
    with mock.patch("sam2.sam2_video_predictor.load_video_frames", lambda **_: (images, h, w)):
        return predictor.init_state("in-memory frames")


def _keep_memories_fp32(predictor) -> None:
    """Cast the bf16-rounded memories back to fp32 (see the module docstring)."""
    single, encoder = predictor._run_single_frame_inference, predictor._run_memory_encoder

    def run_single(*args, **kwargs):
        out, masks = single(*args, **kwargs)
        if out["maskmem_features"] is not None:
            out["maskmem_features"] = out["maskmem_features"].float()
        return out, masks

    def run_encoder(*args, **kwargs):
        features, pos = encoder(*args, **kwargs)
        return features.float(), pos

    predictor._run_single_frame_inference = run_single
    predictor._run_memory_encoder = run_encoder


def reference_shapes(model_type: str) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer names and shapes of Meta's model for our configuration (built on the
    meta device: no memory, no weights)."""
    load()
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config, overrides = config_file_and_overrides(model_type)
    cfg = compose(config_name=config, overrides=overrides)
    OmegaConf.resolve(cfg)
    linspace = torch.linspace  # the trunk reads its (zero) drop-path rates with .item()
    with torch.device("meta"), mock.patch("torch.linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})):
        model = instantiate(cfg.model, _recursive_=True)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
