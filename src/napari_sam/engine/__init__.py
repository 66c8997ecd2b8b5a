"""NumPy in / NumPy out engine: preprocessing, Predictor, embeddings (no Qt, no napari)."""

from .automatic import generate_masks, masks_to_labels
from .cache import EmbeddingCache
from .channels import ChannelComposite, ChannelSlice, channel_view
from .instances import checked_instance_params, instance_defaults, load_decoder, segment_instances
from .predictor import Cancelled, Embedding, Prediction, Predictor, available_devices, resolve_device
from .preprocess import Geometry, to_rgb_uint8
from .propagate import PropagationStep, PropagationStop, propagate
from .settings import GeneratorSettings
from .store import EmbeddingStore, StoreDamageWarning, StoreExists, StoreInfo, StoreMismatch
from .tiling import TileLayout
from .tracker import Tracker, TrackResult
from .volume import PlanePrediction, VolumeEmbeddings
from .volume_line import VolumeLine

__all__ = [
    "Cancelled", "ChannelComposite", "ChannelSlice", "Embedding", "EmbeddingCache", "EmbeddingStore", "Geometry",
    "PlanePrediction", "Prediction", "Predictor", "PropagationStep", "PropagationStop", "StoreInfo", "StoreMismatch",
    "TileLayout", "TrackResult", "Tracker", "VolumeEmbeddings", "VolumeLine", "propagate", "resolve_device", "to_rgb_uint8",
]
__all__ += ["GeneratorSettings", "available_devices", "channel_view", "generate_masks", "masks_to_labels"]
__all__ += ["StoreDamageWarning", "StoreExists"]
__all__ += ["checked_instance_params", "instance_defaults", "load_decoder", "segment_instances"]
