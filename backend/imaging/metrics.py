"""How well layers rebuild their source, and how close a layer is to the one it should be.

One implementation for the tests and for scripts/bench_restore.py (the restoration figures in docs/benchmarks.md).
Everything is measured on premultiplied colour in 0..1, where "over" blending is linear: a layer's colour under
alpha 0 counts for nothing, as in every editor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.layer import PlacedLayer
from .image import composite


def premultiplied(rgba: np.ndarray) -> np.ndarray:
    """uint8 straight RGBA to float64 premultiplied RGBA in 0..1 (what `composite` returns)."""
    f = rgba.astype(np.float64) / 255.0
    return np.concatenate([f[..., :3] * f[..., 3:4], f[..., 3:4]], axis=-1)


@dataclass(frozen=True)
class Recomposition:
    """How far the layers blended bottom to top are from their source, premultiplied, in 0..1."""

    max_rgb: float  # the largest error of a colour channel
    max_alpha: float  # the largest error of alpha
    psnr: float  # dB over the colour channels; inf where they are exact

    @property
    def max_error(self) -> float:
        """The largest error of any channel."""
        return max(self.max_rgb, self.max_alpha)

    def within(self, bound: float) -> bool:
        """Whether every channel of every pixel is within `bound` (0..1) of the source."""
        return self.max_rgb <= bound and self.max_alpha <= bound


def recomposition(layers: Sequence[PlacedLayer], source: np.ndarray) -> Recomposition:
    """Blends `layers` (normal "over", bottom to top) on the canvas of `source` (uint8 straight RGBA, or the file's
    merged image) and compares the result with it.

    Args:
        layers: the layers, bottom to top, placed on the source's canvas.
        source: uint8 straight RGBA, height × width × 4.
    """
    height, width = source.shape[:2]
    err = np.abs(composite(layers, width, height) - premultiplied(source))
    mse = float(np.mean(err[..., :3] ** 2))
    psnr = 10 * math.log10(1.0 / mse) if mse > 0 else math.inf
    return Recomposition(float(err[..., :3].max()), float(err[..., 3].max()), psnr)


def on_canvas(layer: PlacedLayer, width: int, height: int) -> np.ndarray:
    """The layer on a transparent canvas of width × height (uint8 straight RGBA): layers are cropped to their content
    and are compared with whole-canvas ground truth this way."""
    out = np.zeros((height, width, 4), np.uint8)
    if layer.width:
        out[layer.y : layer.y + layer.height, layer.x : layer.x + layer.width] = layer.pixels
    return out


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Soft intersection over union of two alpha masks of one scale (0..255 or 0..1): Σ min / Σ max; 1 where both are
    empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    union = float(np.maximum(a, b).sum())
    return float(np.minimum(a, b).sum()) / union if union > 0 else 1.0


def premultiplied_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the premultiplied colour of two uint8 straight RGBA images of one size, in 0..1."""
    return float(np.mean(np.abs(premultiplied(a)[..., :3] - premultiplied(b)[..., :3])))


__all__ = ["Recomposition", "on_canvas", "premultiplied", "premultiplied_l1", "recomposition", "soft_iou"]
