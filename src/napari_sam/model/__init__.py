"""Pure PyTorch Segment Anything and SAM 2 (no NumPy UI, no Qt).

``build_sam(model_type, checkpoint=None)`` builds ``vit_b``/``vit_l``/``vit_h``, SAM 2.1's
``sam2.1_hiera_t``/``_s``/``_b+``/``_l`` (or a small test configuration) and loads the official
checkpoints unchanged.
"""

from .build import (
    CONFIGS,
    OFFICIAL,
    CheckpointError,
    build_sam,
    guess_model_type,
    load_checkpoint,
    random_state_dict,
    read_state_dict,
)
from .sam import Sam
from .sam2 import SAM2_CONFIGS, Sam2

__all__ = [
    "CONFIGS", "OFFICIAL", "SAM2_CONFIGS", "CheckpointError", "Sam", "Sam2", "build_sam", "guess_model_type",
    "load_checkpoint", "random_state_dict", "read_state_dict",
]
