"""Oracle: MobileSAM's TinyViT (package ``mobilesam-mirror`` 1.0.0, module ``mobile_sam``), built on our
weights (tests and ``benchmarks/``; installed ``--no-deps`` by ``.ci/run``, never a dependency).

``mobile_sam``'s TinyViT imports three helpers from ``timm`` (``DropPath``, ``to_2tuple``,
``trunc_normal_``) and its model registry decorator. timm itself imports torchvision, which does
not import beside CPU-only torch, so when the real timm is missing :func:`load` installs a stand-in
``timm.models.layers`` / ``timm.models.registry``: ``DropPath`` is the identity in eval mode (the
oracle only runs in eval mode, and MobileSAM's ``vit_t`` has a drop-path rate of 0), ``to_2tuple``
pairs a scalar, ``trunc_normal_`` and ``register_model`` only matter for initialisation and
registration, which the oracle never relies on (every weight is loaded from our state dict).
"""

from __future__ import annotations

import importlib
import sys
import types

import torch

from . import sam1


class _DropPath(torch.nn.Module):
    def __init__(self, drop_prob=None):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.training and self.drop_prob:
            raise RuntimeError("timm stand-in: drop path is only available in eval mode")
        return x


def _install_timm_stand_in() -> None:
    names = ["timm", "timm.models", "timm.models.layers", "timm.models.registry"]
    mods = {name: types.ModuleType(name) for name in names}
    layers = mods["timm.models.layers"]
    layers.DropPath = _DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = lambda tensor, std=1.0, **_: torch.nn.init.trunc_normal_(tensor, std=std)
    mods["timm.models.registry"].register_model = lambda fn: fn
    mods["timm"].models = mods["timm.models"]
    mods["timm.models"].layers = layers
    mods["timm.models"].registry = mods["timm.models.registry"]
    mods["timm"].__stand_in__ = True
    sys.modules.update(mods)


def load():
    """Import and return ``mobile_sam`` (with the timm and torchvision stand-ins if needed)."""
    sam1.load_reference()  # torchvision stand-in (mobile_sam's mask generator imports its NMS)
    if "timm" not in sys.modules:
        try:
            import timm.models.layers  # noqa: F401
        except Exception:
            for name in [m for m in sys.modules if m.split(".")[0] == "timm"]:
                del sys.modules[name]
            _install_timm_stand_in()
    try:
        return importlib.import_module("mobile_sam")
    except ImportError as exc:
        raise ImportError("the vit_t oracle needs MobileSAM: pip install --no-deps mobilesam-mirror==1.0.0") from exc


def reference_sam(state_dict: dict[str, torch.Tensor]):
    """MobileSAM's ``vit_t`` ``Sam`` loaded with ``state_dict`` (our key layout is theirs).

    ``eval()`` is called after loading: TinyViT caches its attention biases when switched to eval
    mode, and ``build_sam_vit_t`` switches before loading, which would keep the initial (zero)
    biases instead of the loaded ones."""
    mobile_sam = load()
    sam = mobile_sam.sam_model_registry["vit_t"]()
    sam.load_state_dict(state_dict, strict=True)
    return sam.eval()
