"""Checkpoint files and what they hold: SAM state dicts, training checkpoints, decoders.

Accepted layouts (all read on the CPU with ``weights_only`` semantics):

- a SAM state dict in the official key layout (``image_encoder.*``, ``prompt_encoder.*``,
  ``mask_decoder.*``), also as ``{"model": state}``;
- a torch_em / micro-sam training checkpoint ``{"model_state": state, ...}`` whose keys carry the
  trainer's ``sam.`` prefix (optimizer state, configuration and other entries are ignored);
- a micro-sam export ``{"model_state": state, "decoder_state": decoder}`` (one file with the
  instance-segmentation decoder; a joint training checkpoint has the same two entries);
- an instance-segmentation decoder file (``*_decoder.pt``): the decoder's state dict alone.

Training checkpoints also pickle Python objects (optimizer settings, trainer configuration).
They are never imported: each such reference is replaced by an inert :class:`Placeholder`, so
reading a file can run no code from it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

TRAINER_PREFIX = "sam."
DECODER_MARKER = "base.block.1.weight"  # the UNETR decoder's first convolution


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded into the requested model."""


class Placeholder:
    """Stands in for any Python object a checkpoint references; accepts and keeps nothing."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __repr__(self) -> str:
        return "<skipped object>"


def mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    """Sentences naming the first few missing, unexpected and wrongly shaped keys of ``state``
    against a model's ``expected`` state dict (empty when they fit)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
            parts.append(f"{label} keys: {', '.join(keys[:5])}{more}.")
    return parts


def read_checkpoint(path: str | Path) -> dict:
    """The object stored in ``path`` (a dict), read safely (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            if not names:
                raise
            with torch.serialization.safe_globals([(Placeholder, name) for name in names]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files
        raise CheckpointError(f"{path.name} is not a readable PyTorch checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} does not hold a state dict (found {type(obj).__name__})")
    return obj


def _tensors_only(state, name: str, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{name} does not hold {what} (a state dict of tensors)")
    return dict(state)


def sam_state(container: dict, name: str) -> dict[str, torch.Tensor]:
    """The SAM state dict inside a checkpoint ``container`` (see module docstring); ``name``
    labels the file in errors."""
    if isinstance(container.get("model_state"), dict):
        state = container["model_state"]
        state = {k[len(TRAINER_PREFIX):] if k.startswith(TRAINER_PREFIX) else k: v for k, v in state.items()}
    elif isinstance(container.get("model"), dict):
        state = container["model"]
    else:
        state = container
    if DECODER_MARKER in state and not any(k.startswith("image_encoder.") for k in state):
        raise CheckpointError(f"{name} is an instance-segmentation decoder, not a SAM model: load it "
                              "with load_decoder(), next to the model it belongs to")
    return _tensors_only(state, name, "a SAM model")


def decoder_state(container: dict, name: str) -> dict[str, torch.Tensor] | None:
    """The instance-segmentation decoder's state dict in ``container`` (None if it has none)."""
    if "decoder_state" in container:
        return _tensors_only(container["decoder_state"], name, "a decoder")
    if DECODER_MARKER in container:
        state = {k: v for k, v in container.items() if not k.startswith("encoder.")}
        return _tensors_only(state, name, "a decoder")
    return None
