"""A text line's ink: how much of each pixel is glyph (coverage 0–1), its box, its colour, and whether what lies
under it is flat (a transparent or one-colour background) or other content."""

from __future__ import annotations

from dataclasses import dataclass

from ..imaging.opencv import cv2
import numpy as np

from .blocks import Box


@dataclass
class Ink:
    coverage: np.ndarray  # float32, the crop's pixels: 1 where fully glyph, 0 where background
    origin: tuple[int, int]  # the crop's top-left corner in the image
    box: Box  # the ink box in image pixels
    color: tuple[int, int, int]
    background_spread: float  # mean per-channel deviation of the opaque background under the line (0: flat)


def _features(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied colour and alpha: a transparent pixel and black ink stay apart, and blending stays linear."""
    f = rgba.astype(np.float32)
    alpha = f[..., 3:4] / 255.0
    return np.concatenate([f[..., :3] * alpha, f[..., 3:4]], axis=-1)


def line_ink(rgba: np.ndarray, box: tuple[int, int, int, int]) -> Ink | None:
    """The ink of the line detected in `box` (x0, y0, x1, y1, image pixels) of an RGBA image (or an opaque RGB one);
    None when the box holds no contrast. Glyphs are told from the background by colour: the background is the crop's
    border, the ink the colour farthest from it, and each pixel's coverage its position between the two."""
    h_img, w_img = rgba.shape[:2]
    x0, y0, x1, y1 = box
    height = max(1, y1 - y0)
    margin = max(2, round(0.2 * height))
    cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
    cx1, cy1 = min(w_img, x1 + margin), min(h_img, y1 + margin)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        return None
    crop = rgba[cy0:cy1, cx0:cx1]
    if crop.shape[2] == 3:  # an opaque picture
        crop = np.concatenate([crop, np.full(crop.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    feats = _features(crop)
    ring = np.concatenate([feats[:2].reshape(-1, 4), feats[-2:].reshape(-1, 4),
                           feats[:, :2].reshape(-1, 4), feats[:, -2:].reshape(-1, 4)])
    background = np.median(ring, axis=0)
    distance = np.linalg.norm(feats - background, axis=-1)
    far = float(np.quantile(distance, 0.995))
    if far < 40:
        return None
    ink_colour = np.median(feats[distance >= 0.8 * far], axis=0)
    direction = ink_colour - background
    coverage = np.clip(((feats - background) @ direction) / float(direction @ direction), 0.0, 1.0).astype(np.float32)

    # keep the glyphs of this line: components centred inside the detected box and no taller than a line
    busy = float(ring[:, :3].std(axis=0).mean()) > 12  # a photo or pattern under the text: stricter ink
    solid = (coverage > (0.5 if busy else 0.25)).astype(np.uint8)
    inside = max(1, round(0.05 * height))  # the detector's box holds the glyphs; beyond it lies background
    solid[: max(0, y0 - cy0 - inside)] = 0
    solid[y1 - cy0 + inside :] = 0
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(solid, connectivity=8)
    bx0, by0, bx1, by1 = x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0
    peaked = np.zeros(count, dtype=bool)  # a component with a pixel of coverage >= 0.75: a glyph, not a halo
    peaked[labels[coverage >= 0.75]] = True
    cx, cy = centroids[:, 0], centroids[:, 1]
    w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    keep = (peaked & (bx0 <= cx) & (cx <= bx1) & (by0 <= cy) & (cy <= by1) & (h <= 1.6 * height)
            & (w <= 1.2 * (bx1 - bx0) + 2))
    keep[0] = False  # the background
    mask = keep[labels]
    if not mask.any():
        return None
    coverage = np.where(mask, coverage, 0.0).astype(np.float32)
    ys, xs = np.nonzero(mask)
    ink_box = Box(int(xs.min()) + cx0, int(ys.min()) + cy0, int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))

    rgb = crop[..., :3].astype(np.float32)
    alpha = crop[..., 3].astype(np.float32)
    core = mask & (coverage >= 0.9) & (alpha > 0)
    if core.sum() >= 5:
        colour = np.median(rgb[core], axis=0)
    else:
        colour = ink_colour[:3] * 255.0 / max(float(ink_colour[3]), 1.0)
    under = (coverage < 0.05) & (alpha > 127)
    spread = float(rgb[under].std(axis=0).mean()) if under.sum() > 20 else 0.0
    r, g, b = (int(round(min(255.0, max(0.0, c)))) for c in colour)
    return Ink(coverage, (cx0, cy0), ink_box, (r, g, b), spread)
