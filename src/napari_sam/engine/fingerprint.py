"""Model fingerprints: which weights an embedding was computed with (no Qt, no napari).

A fingerprint is an xxh3-128 digest of every parameter and buffer of the model's image encoder
(names, shapes, dtypes and values), of the model's own input normalisation buffers and of the
submodules a model names in ``embedding_parts`` (SAM 2: the decoder's high-resolution
projections, part of its embeddings): two encoders that differ in any weight (a fine-tune, a
merged adapter) get different fingerprints, while the prompt encoder and mask decoder, which do
not change an embedding, are left out. Models without an ``image_encoder`` are hashed whole.

It names the weights as loaded: :class:`~napari_sam.engine.Predictor` computes it before it
converts the encoder to another precision (bf16, int8), so embeddings of one checkpoint match
whatever precision computed them. The value is ``"xxh3-encoder:<32 hex digits>"``; the prefix
names the scheme (older stores carry a shorter digest of four tensors and are refused).

Cost: one pass over the encoder's weights at memory speed, about 0.3 s for vit_h (2.4 GiB)
on one CPU core (docs/microscopy.md). It is cached on the model object, keyed by the identity
and version counter of every tensor, so weights changed in place (``load_state_dict``, an
optimiser step) are hashed again, and nothing global is kept.
"""

from __future__ import annotations

import torch
from torch import nn

SCHEME = "xxh3-encoder"
_CACHE_ATTR = "_napari_sam_fingerprint"  # (key, fingerprint) on the model object


def _named_state(model: nn.Module) -> list[tuple[str, object]]:
    """Everything an embedding depends on, by name: the encoder's state (parameters, buffers,
    quantised layers' packed weights) and the model's own buffers (pixel mean and std)."""
    encoder = getattr(model, "image_encoder", None)
    if not isinstance(encoder, nn.Module):
        return sorted(model.state_dict().items()) + sorted(model.named_buffers())
    state = [(f"image_encoder.{k}", v) for k, v in encoder.state_dict().items()]
    state += [(f"image_encoder.{k}", v) for k, v in encoder.named_buffers() if k not in encoder.state_dict()]
    state += list(model.named_buffers(recurse=False))
    for part in getattr(model, "embedding_parts", ()):
        state += [(f"{part}.{k}", v) for k, v in model.get_submodule(part).state_dict().items()]
    return sorted(state, key=lambda kv: kv[0])


def _key(model: nn.Module) -> tuple:
    """Identity and version of every tensor the fingerprint covers (cheap: no data read).
    Quantised layers keep their weights in packed objects: their identity stands for them."""
    encoder = getattr(model, "image_encoder", None)
    encoder = encoder if isinstance(encoder, nn.Module) else model
    tensors = [*encoder.named_parameters(), *encoder.named_buffers(), *model.named_buffers(recurse=False)]
    tensors += [(f"{p}.{k}", t) for p in getattr(model, "embedding_parts", ()) for k, t in
                model.get_submodule(p).named_parameters()]
    packed = [id(m._packed_params) for m in encoder.modules() if hasattr(m, "_packed_params")]
    return tuple((name, t.data_ptr(), t._version) for name, t in tensors) + tuple(packed)


def _update(digest, name: str, value) -> None:
    digest.update(name.encode())
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_quantized:
            digest.update(repr((t.qscheme(), t.shape)).encode())
            scales = (t.q_per_channel_scales(), t.q_per_channel_zero_points()) \
                if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) else ()
            for part in (t.int_repr(), *scales):
                _update(digest, "", part)
            if not scales:
                digest.update(repr((t.q_scale(), t.q_zero_point())).encode())
            return
        digest.update(repr((tuple(t.shape), str(t.dtype))).encode())
        flat = t.cpu().contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().data)
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _update(digest, str(i), v)
    else:
        digest.update(repr(value).encode())


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of ``model``'s image encoder weights (see the module docstring); cached on
    the model until any of its tensors changes."""
    import xxhash

    key = _key(model)
    cached = model.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = xxhash.xxh3_128()
    for name, value in _named_state(model):
        _update(digest, name, value)
    fingerprint = f"{SCHEME}:{digest.hexdigest()}"
    model.__dict__[_CACHE_ATTR] = (key, fingerprint)
    return fingerprint


def keep_fingerprint(model: nn.Module, fingerprint: str) -> None:
    """Record that ``model``, as it is now, has ``fingerprint``: after a precision conversion
    changed its tensors, the fingerprint still names the weights as loaded."""
    model.__dict__[_CACHE_ATTR] = (_key(model), fingerprint)
