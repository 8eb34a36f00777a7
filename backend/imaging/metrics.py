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


def edge_masks(truth: Sequence[np.ndarray], model: Sequence[np.ndarray], radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Where each layer's alpha edge is, split into what the source shows and what other layers hide.

    A layer's edge is where its true alpha changes within `radius` pixels, or where the model's alpha (brought to the
    same size) has one (a blurred or misplaced edge errs there). An edge pixel is visible where the layers above it
    let at least half of it through (their true alphas), hidden otherwise: only the model knows the latter.

    Args:
        truth: the layers' true alphas, bottom to top, uint8 (h, w).
        model: the model's alphas at the same size, uint8 (h, w).
        radius: half the side of the square window, in pixels.

    Returns:
        per layer, (visible, hidden) boolean masks.
    """
    from .opencv import cv2

    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    through = np.ones(truth[0].shape, np.float32)  # transmittance of the layers above
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for t, m in zip(reversed(truth), reversed(model)):
        edge = cv2.dilate(t, kernel) != cv2.erode(t, kernel)
        edge |= cv2.dilate(m, np.ones((3, 3), np.uint8)) != cv2.erode(m, np.ones((3, 3), np.uint8))
        seen = through >= 0.5
        out.append((edge & seen, edge & ~seen))
        through *= 1.0 - t.astype(np.float32) / 255.0
    return out[::-1]


def soft_iou_sums(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Σ min and Σ max of two alpha masks of one scale over `mask`: a soft IoU's parts, to be pooled."""
    a, b = np.asarray(a, np.float64)[mask], np.asarray(b, np.float64)[mask]
    return float(np.minimum(a, b).sum()), float(np.maximum(a, b).sum())


def premultiplied_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the premultiplied colour of two uint8 straight RGBA images of one size, in 0..1."""
    return float(np.mean(np.abs(premultiplied(a)[..., :3] - premultiplied(b)[..., :3])))


__all__ = [
    "Recomposition", "edge_masks", "on_canvas", "premultiplied", "premultiplied_l1", "recomposition", "soft_iou",
    "soft_iou_sums",
]
