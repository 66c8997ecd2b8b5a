"""Pure PyTorch Segment Anything (no NumPy UI, no Qt).

``build_sam(model_type, checkpoint=None)`` builds ``vit_b``/``vit_l``/``vit_h``, MobileSAM's
``vit_t`` (or a small test configuration) and loads official checkpoints unchanged;
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
from .tiny_vit import TinyViT
from .unetr import InstanceDecoder, build_decoder

__all__ = [
    "CONFIGS", "OFFICIAL", "CheckpointError", "Sam", "build_sam", "guess_model_type",
    "load_checkpoint", "random_state_dict", "read_state_dict",
]
__all__ += ["InstanceDecoder", "TinyViT", "build_decoder"]
