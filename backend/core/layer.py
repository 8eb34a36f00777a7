"""The layer a job returns: RGBA pixels cropped to their content, with their place on the canvas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_ELEMENTS = 64  # at most this many elements when a layer is split into its elements (docs/elements.md)


@dataclass
class PlacedLayer:
    """One RGBA layer cropped to its non-transparent bounds, placed at (x, y) on the canvas."""

    name: str
    x: int
    y: int
    pixels: np.ndarray  # (height, width, 4) uint8, straight alpha; (0, 0, 4) when empty
    text: list[dict[str, Any]] = field(default_factory=list)  # its text blocks, canvas pixels (docs/text.md)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])
