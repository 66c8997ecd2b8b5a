"""Encoder precision modes: exact fp32, bf16 (GPU fast path), int8 dynamic quantization (CPU).

``fp32``: the reference-exact path, the default on CPU (and MPS).
``bf16``: the default on CUDA with bf16 support, opt-in on CPUs with bf16 instructions (AVX512-BF16,
    AMX). The encoder's Linear/Conv weights are stored
    in bf16 (half the memory) and it runs under ``torch.autocast(bfloat16)``: matmuls, SDPA and
    convolutions in bf16 with fp32 accumulation, LayerNorms and the residual stream in fp32.
    Accuracy vs fp32 on random weights: see ``docs/performance.md`` (tests demand embedding
    relative error <= 1 % and mask IoU >= 0.98).
``int8``: CPU only, opt-in. The encoder's Linear layers are replaced by dynamically quantized
    ones (int8 weights, per-call activation scales); faster on CPUs without bf16 units, with a
    measured accuracy cost (``docs/performance.md``).

Setting a precision modifies the encoder in place (like ``Module.to``); build the model
again to go back to fp32.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA devices with bf16 support, else ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ValueError("precision 'int8' (dynamic quantization) runs on the CPU only")
    if precision == "bf16" and device.type == "cpu" and cpu_has_bf16_units() is False:
        warnings.warn("this CPU has no bf16 instructions (AVX512-BF16/AMX): precision 'bf16' is "
                      "emulated and several times slower than 'fp32' here", RuntimeWarning, stacklevel=3)
    return precision


def cpu_has_bf16_units() -> bool | None:
    """Whether the CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16); None if unknown
    (not Linux, or not x86). With them, bf16 roughly halves the CPU encoder's time (docs/performance.md)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return None
    if not flags:  # not x86 (e.g. aarch64 lists "Features"): unknown here
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def prepare_encoder(encoder: nn.Module, precision: str) -> nn.Module:
    """Convert ``encoder`` in place for a resolved ``precision`` and return it."""
    if precision == "bf16":
        for mod in encoder.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                mod.to(torch.bfloat16)
    elif precision == "int8":
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as exc:  # deprecated in torch 2.x, to move to torchao
            raise RuntimeError("precision 'int8' needs torch.ao.quantization.quantize_dynamic, "
                               "which this PyTorch does not have") from exc
        with warnings.catch_warnings():  # its deprecation notices, once per layer
            warnings.simplefilter("ignore")
            for block in encoder.blocks:
                quantize_dynamic(block, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return encoder


def encoder_context(precision: str, device: torch.device):
    """The context to run the encoder in: autocast for bf16, nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def linear_bias(layer: nn.Module) -> torch.Tensor | None:
    """A Linear layer's bias; dynamically quantized layers expose it as a method."""
    bias = layer.bias
    return bias() if callable(bias) else bias

