"""Pure PyTorch Segment Anything and SAM 2 (no NumPy UI, no Qt).

``build_sam(model_type, checkpoint=None)`` builds ``vit_b``/``vit_l``/``vit_h``, MobileSAM's
``vit_t``, SAM 2.1's ``sam2.1_hiera_t``/``_s``/``_b+``/``_l`` (or a small test configuration)
and loads official checkpoints unchanged;
``build_decoder(state)`` builds micro-sam's instance-segmentation decoder.
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
from .tiny_vit import TinyViT
from .unetr import InstanceDecoder, build_decoder

__all__ = [
    "CONFIGS", "OFFICIAL", "CheckpointError", "Sam", "build_sam", "guess_model_type",
    "load_checkpoint", "random_state_dict", "read_state_dict",
]
__all__ += ["InstanceDecoder", "TinyViT", "build_decoder"]
__all__ += ["SAM2_CONFIGS", "Sam2"]
