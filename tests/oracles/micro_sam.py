"""Oracle: micro-sam 1.8.14 and torch-em 0.10.9 (automatic instance segmentation with the UNETR
decoder, 3D merging), imported without their heavy dependency trees (tests and ``benchmarks/``).

``.ci/run`` installs ``micro-sam``, ``torch-em`` and ``python-elf`` with ``--no-deps``, plus the two
small packages the used code paths need: ``bioimage-cpp`` (a 2.3 MB compiled wheel with only NumPy
as dependency: micro-sam's smoothing, connected components, watershed, overlaps and multicut) and
``threadpoolctl`` (pure Python, imported by ``elf.parallel``). What stays uninstalled (matplotlib,
scikit-learn, h5py, kornia, bioimageio, timm, torchvision, ...) is only imported by package
``__init__`` modules and by code the tests never call. So when a package's ``__init__`` fails,
:func:`load` registers that package *bare* (its folder as ``__path__``, its ``__init__`` not run)
and imports the needed submodules directly:

- ``torch_em`` and ``torch_em.model``, ``torch_em.util`` (their ``__init__`` pull in trainers,
  plotting and data loaders); ``torch_em.model.UNETR`` is set from ``torch_em.model.unetr``;
- ``elf.segmentation`` (its ``__init__`` imports learning workflows that need scikit-learn).

torchvision (box NMS, imported at module level by micro-sam) comes from the stand-in of
:mod:`tests.oracles.sam1`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from . import sam1

_BARE = ("torch_em", "torch_em.model", "torch_em.util", "elf.segmentation")


def _bare(name: str) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not installed")
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def _import_or_bare(name: str) -> None:
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        _bare(name)


def load() -> types.SimpleNamespace:
    """The oracle modules: ``unetr`` (torch_em.model.unetr), ``segmentation``
    (torch_em.util.segmentation), ``instance_segmentation``, ``multi_dimensional_segmentation``
    and ``model_settings`` (micro_sam's)."""
    sam1.load_reference()
    try:
        import bioimage_cpp  # noqa: F401
    except ImportError as exc:
        raise ImportError("the micro-sam oracle needs bioimage-cpp and python-elf: pip install "
                          "bioimage-cpp==0.10.0 threadpoolctl && pip install --no-deps python-elf==0.9.2 "
                          "micro-sam==1.8.14 torch-em==0.10.9") from exc
    for name in _BARE:
        _import_or_bare(name)
    unetr = importlib.import_module("torch_em.model.unetr")
    if not hasattr(sys.modules["torch_em.model"], "UNETR"):
        sys.modules["torch_em.model"].UNETR = unetr.UNETR
    return types.SimpleNamespace(
        unetr=unetr,
        segmentation=importlib.import_module("torch_em.util.segmentation"),
        instance_segmentation=importlib.import_module("micro_sam.instance_segmentation"),
        multi_dimensional_segmentation=importlib.import_module("micro_sam.multi_dimensional_segmentation"),
        model_settings=importlib.import_module("micro_sam._model_settings"),
    )


def reference_decoder(image_encoder, decoder_state: dict):
    """micro-sam's decoder (``DecoderAdapter`` around torch_em's ``UNETR``) for ``decoder_state``,
    built exactly as ``micro_sam.instance_segmentation.get_decoder`` does (the upsampler variant is
    read off the keys), on the CPU and in eval mode."""
    mods = load()
    return mods.instance_segmentation.get_decoder(image_encoder, decoder_state, device="cpu").eval()


def reference_segmenter(decoder):
    """An ``InstanceSegmentationWithDecoder`` whose predictor is never used (maps are set directly)."""
    return load().instance_segmentation.InstanceSegmentationWithDecoder(None, decoder)


def reference_labels(foreground, center_distances, boundary_distances, **params):
    """micro-sam's post-processing of three decoder maps (``InstanceSegmentationWithDecoder.generate``)."""
    segmenter = reference_segmenter(None)
    segmenter.set_state({"foreground": foreground, "center_distances": center_distances,
                         "boundary_distances": boundary_distances})
    return segmenter.generate(**params)
