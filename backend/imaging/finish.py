"""Finishing a job's layers: the model's layers (at the pipeline's size) brought to the source's size, restored or
resampled, and cropped to their content."""

from __future__ import annotations

import numpy as np

from ..core.layer import PlacedLayer
from .image import resample_layers


def finish_layers(source: np.ndarray, layers: list[np.ndarray], restore: bool, names: list[str]) -> list[PlacedLayer]:
    """Model layers (bucket size) to layers at the source's size, cropped to content."""
    if restore:
        from .restore import restore_layers

        return restore_layers(source, layers, names)
    return resample_layers(source, layers, names)
