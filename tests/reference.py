"""The reference package ``segment-anything==1.0`` as test oracle.

It is imported through :mod:`napari_sam.bench_reference`, which the benchmarks use too: where
the real torchvision does not import (PyPI's wheels need CUDA torch) it installs a small
stand-in for the four torchvision functions the reference calls, checked against the real
torchvision by ``tests/test_reference_shim.py`` wherever that imports.
"""

from napari_sam.bench_reference import (  # noqa: F401 (re-exported for the tests)
    _batched_nms,
    _install_stand_in,
    real_torchvision_available,
    reference_sam,
)
from napari_sam.bench_reference import load_reference as load  # noqa: F401
