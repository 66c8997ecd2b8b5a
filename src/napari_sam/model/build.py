"""Model configurations, construction and checkpoint loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .sam2 import SAM2_CONFIGS, Sam2


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
}
OFFICIAL = ("vit_b", "vit_l", "vit_h")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded into the requested model."""


def build_sam(model_type: str, checkpoint: str | Path | None = None) -> Sam | Sam2:
    """Build SAM of ``model_type`` (see :data:`CONFIGS`) or SAM 2 (see :data:`SAM2_CONFIGS`);
    random init when ``checkpoint`` is None.

    The checkpoint is an official file (``sam_vit_b_01ec64.pth``, ``sam2.1_hiera_tiny.pt``
    ``{"model": state_dict}`` ...), loaded on the CPU with ``weights_only=True`` and strict key
    matching. The model is returned in eval mode.
    """
    if model_type in SAM2_CONFIGS:
        model = Sam2(SAM2_CONFIGS[model_type], model_type)
    elif model_type in CONFIGS:
        cfg = CONFIGS[model_type]
        grid = cfg.img_size // 16
        model = Sam(
            ImageEncoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                         global_blocks=cfg.global_blocks, img_size=cfg.img_size),
            PromptEncoder(dim=256, grid=grid, img_size=cfg.img_size),
            MaskDecoder(dim=256),
            model_type=model_type,
        )
    else:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {', '.join([*CONFIGS, *SAM2_CONFIGS])}")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` safely (``weights_only``), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files
        raise CheckpointError(f"{path.name} is not a readable PyTorch checkpoint: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} does not hold a state dict of tensors")
    return state


def guess_model_type(state: dict[str, torch.Tensor]) -> str | None:
    """The configuration whose encoder width and depth match ``state``, if any (SAM 2: the
    trunk's; the first such configuration, an official one before test ones of other input
    sizes, which have the same weights)."""
    trunk = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if trunk is not None:
        depth = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
        return next((name for name, cfg in SAM2_CONFIGS.items()
                     if cfg.embed_dim == trunk.shape[0] and sum(cfg.stages) == depth), None)
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, cfg in CONFIGS.items():
        if cfg.dim == weight.shape[0] and cfg.depth == depth:
            return name
    return None


def load_checkpoint(model: Sam | Sam2, checkpoint: str | Path | dict[str, torch.Tensor], name: str | None = None) -> None:
    """Load a checkpoint file (or its state dict) into ``model`` strictly; explain
    mismatches in the error (``name`` labels a state dict in messages)."""
    if isinstance(checkpoint, dict):
        state, name = checkpoint, name or "the checkpoint"
    else:
        state, name = read_state_dict(checkpoint), Path(checkpoint).name
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = [f"{name} does not fit model type {model.model_type!r}."]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label} keys: {', '.join(keys[:5])}{more}.")
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
        if isinstance(mod, (torch.nn.LayerNorm, ChannelLayerNorm))
    }
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in model.state_dict().items():
        arr = rng.standard_normal(tuple(value.shape), dtype=np.float32)
        if key in norm_scales:
            arr = 1.0 + 0.1 * arr
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
