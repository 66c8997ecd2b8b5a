"""NumPy in / NumPy out engine: preprocessing, Predictor, embeddings (no Qt, no napari)."""

from .predictor import Cancelled, Embedding, Prediction, Predictor, resolve_device
from .preprocess import Geometry, to_rgb_uint8

__all__ = ["Cancelled", "Embedding", "Geometry", "Prediction", "Predictor", "resolve_device", "to_rgb_uint8"]
