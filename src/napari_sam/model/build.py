"""Model configurations, construction and checkpoint loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .formats import CheckpointError, mismatch, read_checkpoint, sam_state
from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .sam2 import SAM2_CONFIGS, Sam2
from .tiny_vit import TINY_CONFIGS, TinyViT


@dataclass(frozen=True)
class EncoderConfig:
    dim: int
    depth: int
    heads: int
    global_blocks: tuple[int, ...]
    img_size: int = 1024


CONFIGS: dict[str, EncoderConfig] = {
    "vit_b": EncoderConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": EncoderConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": EncoderConfig(1280, 32, 16, (7, 15, 23, 31)),
    # Small encoders with the real input size, prompt encoder and decoder: for tests.
    "vit_tiny_test": EncoderConfig(32, 2, 2, (1,)),
    "vit_small_test": EncoderConfig(64, 4, 4, (1, 3)),
    # ... and at a quarter of the input size (a 16 x 16 embedding): fast decoder tests.
    "vit_tiny_test_256": EncoderConfig(32, 2, 2, (1,), img_size=256),
}
OFFICIAL = ("vit_b", "vit_l", "vit_h")
MODEL_TYPES = (*CONFIGS, *TINY_CONFIGS, *SAM2_CONFIGS)  # ViT, TinyViT (``vit_t``: MobileSAM), SAM 2.1


def build_sam(model_type: str, checkpoint: str | Path | None = None) -> Sam | Sam2:
    """Build SAM of ``model_type`` (see :data:`MODEL_TYPES`; SAM 2: :data:`SAM2_CONFIGS`); random
    init when ``checkpoint`` is None.

    The checkpoint is an official file (``sam_vit_b_01ec64.pth``, Meta's ``{"model": state_dict}``
    ``sam2.1_hiera_tiny.pt`` ...), loaded on the CPU with ``weights_only=True`` and strict key
    matching. The model is returned in eval mode.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    if model_type in SAM2_CONFIGS:
        model = Sam2(SAM2_CONFIGS[model_type], model_type)
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        return model.eval()
    if model_type in TINY_CONFIGS:
        encoder = TinyViT(TINY_CONFIGS[model_type])
    else:
        cfg = CONFIGS[model_type]
        encoder = ImageEncoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                               global_blocks=cfg.global_blocks, img_size=cfg.img_size)
    grid = encoder.img_size // 16
    model = Sam(
        encoder,
        PromptEncoder(dim=256, grid=grid, img_size=encoder.img_size),
        MaskDecoder(dim=256),
        model_type=model_type,
    )
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the SAM state dict in ``path`` safely (``weights_only``), with clear errors; training
    checkpoints and micro-sam exports are unwrapped (see :mod:`.formats`)."""
    return sam_state(read_checkpoint(path), Path(path).name)


def guess_model_type(state: dict[str, torch.Tensor]) -> str | None:
    """The configuration whose encoder width and depth match ``state``, if any (SAM 2: the
    trunk's; the first such configuration, an official one before test ones of other input
    sizes, which have the same weights)."""
    trunk = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if trunk is not None:
        depth = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
        return next((name for name, cfg in SAM2_CONFIGS.items()
                     if cfg.embed_dim == trunk.shape[0] and sum(cfg.stages) == depth), None)
    stem = state.get("image_encoder.patch_embed.seq.0.c.weight")
    if stem is not None:  # TinyViT: the stem's width tells the configurations apart
        return next((name for name, cfg in TINY_CONFIGS.items() if cfg.dims[0] // 2 == stem.shape[0]), None)
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    pos = state.get("image_encoder.pos_embed")
    grid = pos.shape[1] if pos is not None else None
    for name, cfg in CONFIGS.items():
        if cfg.dim == weight.shape[0] and cfg.depth == depth and grid in (None, cfg.img_size // 16):
            return name
    return None


def load_checkpoint(model: Sam | Sam2, checkpoint: str | Path | dict[str, torch.Tensor], name: str | None = None) -> None:
    """Load a checkpoint file (or its state dict) into ``model`` strictly; explain
    mismatches in the error (``name`` labels a state dict in messages)."""
    if isinstance(checkpoint, dict):
        state, name = checkpoint, name or "the checkpoint"
    else:
        state, name = read_state_dict(checkpoint), Path(checkpoint).name
    problems = mismatch(model.state_dict(), state)
    if problems:
        parts = [f"{name} does not fit model type {model.model_type!r}.", *problems]
        guess = guess_model_type(state)
        if guess and guess != model.model_type:
            parts.append(f"The shapes match model type {guess!r}: use that instead.")
        raise CheckpointError(" ".join(parts))
    model.load_state_dict(state, strict=True)


OBJECT_PRESENT_BIAS = 1.0  # see random_state_dict


def random_state_dict(model: Sam | Sam2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights for every parameter and buffer of ``model`` (SAM or SAM 2).

    Uses NumPy's generator so the values are the same on every platform and torch version.
    Matrices get fan-in scaled noise (unit-scale activations), norm scales are drawn around
    1, biases and the absolute position embeddings are small. SAM 2's object-score head gets
    the bias :data:`OBJECT_PRESENT_BIAS` (its random output is otherwise within a few tenths
    of 0, half the time "absent", which blanks every tracked mask): prompted objects are then
    present, as a trained model finds them. Used by tests and benchmarks: no official weights
    are needed.
    """
    import numpy as np

    from .common import ChannelLayerNorm

    norm_scales = {
        f"{name}.weight" for name, mod in model.named_modules()
        if isinstance(mod, (torch.nn.LayerNorm, ChannelLayerNorm, torch.nn.BatchNorm2d))
    }
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in model.state_dict().items():
        arr = rng.standard_normal(tuple(value.shape), dtype=np.float32)
        if not value.is_floating_point():  # e.g. BatchNorm's num_batches_tracked
            out[key] = torch.zeros_like(value)
            continue
        if key in norm_scales:
            arr = 1.0 + 0.1 * arr
        elif key.endswith("running_var"):  # BatchNorm statistics: positive variances
            arr = 1.0 + 0.1 * np.abs(arr)
        elif key.endswith("running_mean"):
            arr *= 0.1
        elif key.endswith("positional_encoding_gaussian_matrix"):
            pass
        elif value.ndim >= 2 and not key.endswith("pos_embed"):
            arr /= np.sqrt(np.prod(value.shape[1:]))
        else:
            arr *= 0.02
        out[key] = torch.from_numpy(arr)
    key = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    if key in out:
        out[key] = out[key] + OBJECT_PRESENT_BIAS
    return out
