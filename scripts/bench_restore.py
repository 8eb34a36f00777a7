"""Benchmark full-resolution restoration against plain premultiplied resampling, on held-out model errors.

Builds synthetic ground-truth layer stacks (a textured background with fine detail; shapes drawn from hard and
soft-edged objects, semi-transparent panels and glass, hair-like fine alpha, thin lines, text large and small,
gradients ending in transparency), composites them into a source, simulates the model's output (each layer
downsampled to the bucket, then perturbed by errors drawn per layer from a family: blurred, sharpened, eroded or
dilated alpha, sub-pixel shifts, colour gain and offset, noise, and one layer whose edge is misplaced by several
model pixels) and scores both restorations against the full-resolution ground truth.

Every picture size comes twice: an even seed (the tuning half, on which the method's parameters are chosen) and an
odd seed (the reporting half, the figures in docs/benchmarks.md).

    .venv/bin/python scripts/bench_restore.py                   # the reporting half, prints a Markdown table
    .venv/bin/python scripts/bench_restore.py --half tuning     # the half the parameters are chosen on
    .venv/bin/python scripts/bench_restore.py --quick           # pictures up to 6 MP only
    .venv/bin/python scripts/bench_restore.py --case "24 MP"    # one size (both methods in fresh processes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.imaging.image import resize_premultiplied  # noqa: E402
from backend.imaging.metrics import (  # noqa: E402
    edge_masks, on_canvas, premultiplied_l1, recomposition, soft_iou, soft_iou_sums,
)
from backend.imaging.opencv import cv2  # noqa: E402

BUCKET_AREA = 640 * 640


@dataclass
class Case:
    name: str
    width: int
    height: int
    layers: int
    transparent: bool = False
    seed: int = 0

    @property
    def half(self) -> str:
        """Even seeds tune the method, odd seeds report on it."""
        return "tuning" if self.seed % 2 == 0 else "reporting"


# every size twice: seed 100 + 2k tunes, 101 + 2k reports
SIZES = [
    ("2 MP 4:3", 1600, 1200, 4, False),
    ("2 MP 9:16", 1080, 1920, 5, False),
    ("3 MP 3:1", 3000, 1000, 4, False),
    ("4 MP 1:1 transparent", 2000, 2000, 4, True),
    ("3 MP 4:3", 2048, 1536, 5, False),
    ("3.5 MP 4:3 transparent", 2160, 1620, 5, True),
    ("3.7 MP 16:9", 2560, 1440, 6, False),
    ("5.8 MP 16:9", 3200, 1800, 6, False),
    ("12 MP 4:3", 4000, 3000, 6, False),
    ("24 MP 3:2", 6000, 4000, 6, False),
]
CASES = [
    Case(f"{label} #{100 + 2 * k + half}", w, h, n, transparent, seed=100 + 2 * k + half)
    for k, (label, w, h, n, transparent) in enumerate(SIZES)
    for half in (0, 1)
]
QUICK_PIXELS = 6_000_000


def bucket_size(width: int, height: int, area: int = BUCKET_AREA, multiple: int = 32) -> tuple[int, int]:
    """The model's working size: about `area` pixels, the source's aspect, sides a multiple of `multiple`."""
    aspect = width / height
    w = max(multiple, int(round(math.sqrt(area * aspect) / multiple)) * multiple)
    h = max(multiple, int(round(math.sqrt(area / aspect) / multiple)) * multiple)
    return w, h


# ---------------------------------------------------------------- ground truth


def _field(rng: np.random.Generator, w: int, h: int, cells: int, channels: int = 3) -> np.ndarray:
    """Smooth random field in 0..1 (bicubic upsampling of a coarse random grid)."""
    cw = max(2, int(round(cells * max(1.0, w / h))))
    ch = max(2, int(round(cells * max(1.0, h / w))))
    out = []
    for _ in range(channels):
        grid = rng.random((ch, cw), dtype=np.float32)
        out.append(np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC)))
    return np.clip(np.stack(out, axis=-1), 0.0, 1.0)


def _texture(rng: np.random.Generator, w: int, h: int, fine: float) -> np.ndarray:
    """Photo-like colour texture: large colour regions, mid-scale blotches, fine grain and thin stripes."""
    tex = 0.55 * _field(rng, w, h, 4) + 0.3 * _field(rng, w, h, 40)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(3.0, min(w, h) / 400.0)
    tex += (0.08 * fine) * np.sin((xx * 0.8 + yy * 0.6) * (2 * np.pi / period))[..., None]
    tex += (0.06 * fine) * rng.standard_normal((h, w, 1), dtype=np.float32)
    return np.clip(tex + 0.1, 0.0, 1.0)


def _sdf_ellipse(w: int, h: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2)
    return (r - 1.0) * min(rx, ry)


def _sdf_round_rect(w: int, h: int, x0: float, y0: float, x1: float, y1: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 - radius, (y1 - y0) / 2 - radius
    dx = np.abs(xx + 0.5 - cx) - hx
    dy = np.abs(yy + 0.5 - cy) - hy
    outside = np.sqrt(np.maximum(dx, 0) ** 2 + np.maximum(dy, 0) ** 2)
    return outside + np.minimum(np.maximum(dx, dy), 0) - radius


def _text_alpha(w: int, h: int, x: int, y: int, size: int, text: str) -> np.ndarray:
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((x, y), text, fill=255, font=ImageFont.load_default(size=size))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _segments(a: np.ndarray, points: np.ndarray, width: float, opacity: float) -> None:
    """Draw an anti-aliased polyline (points (k, 2) as x, y) of `width` pixels into alpha `a` (maximum)."""
    h, w = a.shape
    r = width / 2 + 1.5
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        bx0, bx1 = max(0, int(min(x0, x1) - r)), min(w, int(max(x0, x1) + r) + 1)
        by0, by1 = max(0, int(min(y0, y1) - r)), min(h, int(max(y0, y1) + r) + 1)
        if bx1 <= bx0 or by1 <= by0:
            continue
        yy, xx = np.mgrid[by0:by1, bx0:bx1].astype(np.float32) + 0.5
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        d = np.hypot(xx - x0 - t * dx, yy - y0 - t * dy)
        cov = np.clip(width / 2 + 0.5 - d, 0, 1) * opacity
        np.maximum(a[by0:by1, bx0:bx1], cov, out=a[by0:by1, bx0:bx1])


def _shape_alpha(kind: str, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """One object's true alpha at full resolution."""
    s = min(w, h)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    if kind == "ellipse":
        return np.clip(0.5 - _sdf_ellipse(w, h, cx, cy, rng.uniform(0.15, 0.3) * w, rng.uniform(0.15, 0.3) * h), 0, 1)
    if kind == "soft":
        feather = rng.uniform(0.01, 0.04) * s
        d = _sdf_round_rect(w, h, cx - 0.25 * w, cy - 0.2 * h, cx + 0.2 * w, cy + 0.25 * h, 0.05 * s)
        t = np.clip(0.5 - d / feather, 0, 1)
        return t * t * (3 - 2 * t)
    if kind == "panel":
        y0 = rng.uniform(0.45, 0.6)
        d = _sdf_round_rect(w, h, 0.1 * w, y0 * h, 0.9 * w, (y0 + 0.3) * h, 0.02 * s)
        return rng.uniform(0.4, 0.7) * np.clip(0.5 - d, 0, 1)
    if kind == "text":
        size = max(8, int(0.06 * s))
        a = _text_alpha(w, h, int(0.08 * w), int(rng.uniform(0.1, 0.7) * h), size, "LayerBridge 0123 Qwg")
        return np.maximum(a, _text_alpha(w, h, int(0.1 * w), int(0.85 * h), max(8, size // 2), "small print, fine"))
    if kind == "smalltext":  # type finer than a model pixel: 9 to 14 pixels whatever the picture's size
        a = np.zeros((h, w), np.float32)
        size = int(rng.integers(9, 15))
        x, y = int(rng.uniform(0.05, 0.4) * w), int(rng.uniform(0.1, 0.5) * h)
        for k in range(6):
            a = np.maximum(a, _text_alpha(w, h, x, y + k * int(1.6 * size), size, "The quick brown fox jumps, 0123 (€9.99)"))
        return a
    if kind == "ring":
        d = np.abs(_sdf_ellipse(w, h, cx, cy, 0.2 * s, 0.2 * s)) - rng.uniform(0.005, 0.02) * s
        return np.clip(0.5 - d, 0, 1)
    if kind == "hair":  # a head of hair: a solid mass with strands of one or two pixels, partly see-through
        rx, ry = rng.uniform(0.1, 0.16) * s, rng.uniform(0.12, 0.2) * s
        a = np.clip(0.5 - _sdf_ellipse(w, h, cx, cy, rx, ry), 0, 1).astype(np.float32)
        for _ in range(int(rng.integers(150, 300))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.05, 0.15) * s
            steps = max(4, int(length / max(2.0, s / 400)))
            heading = angle + np.cumsum(rng.normal(0, 0.12, steps))
            step = length / steps
            x0, y0 = cx + 0.9 * rx * np.cos(angle), cy + 0.9 * ry * np.sin(angle)
            xs = x0 + np.concatenate([[0], np.cumsum(step * np.cos(heading))])
            ys = y0 + np.concatenate([[0], np.cumsum(step * np.sin(heading))])
            _segments(a, np.stack([xs, ys], axis=1), rng.uniform(0.7, 1.8), rng.uniform(0.35, 1.0))
        return a
    if kind == "lines":  # thin strokes, one to four pixels wide
        a = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(6, 14))):
            p = np.stack([rng.uniform(0.05, 0.95, 2) * [w, h] for _ in range(int(rng.integers(2, 4)))])
            _segments(a, p, rng.uniform(1.0, 4.0), 1.0)
        return a
    if kind == "glass":  # see-through body, denser rim and a highlight
        rx, ry = rng.uniform(0.12, 0.25) * w, rng.uniform(0.12, 0.25) * h
        d = _sdf_ellipse(w, h, cx, cy, rx, ry)
        cover = np.clip(0.5 - d, 0, 1)
        inner = rng.uniform(0.15, 0.4)
        rim = np.clip(1 + d / (rng.uniform(0.006, 0.02) * s), 0, 1)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        streak = np.clip(1 - np.abs((xx - cx) + (yy - cy) + 0.3 * rx) / (0.08 * rx), 0, 1)
        return cover * np.clip(inner + (0.85 - inner) * rim + 0.4 * streak, 0, 1)
    if kind == "fade":  # a band whose alpha falls to nothing along its length
        d = _sdf_round_rect(w, h, cx - 0.3 * w, cy - 0.12 * h, cx + 0.3 * w, cy + 0.12 * h, 0.01 * s)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        g = np.clip(0.5 - along / (rng.uniform(0.3, 0.6) * s), 0, 1)
        return np.clip(0.5 - d, 0, 1) * g ** rng.uniform(0.7, 1.5)
    if kind == "glow":  # radial gradient to transparency
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = np.hypot(xx - cx, yy - cy) / (rng.uniform(0.1, 0.25) * s)
        return np.clip(1 - r, 0, 1) ** rng.uniform(1.0, 2.5)
    raise ValueError(kind)


KINDS = ["ellipse", "soft", "panel", "text", "ring", "hair", "glass", "lines", "smalltext", "fade", "glow"]


def ground_truth(width: int, height: int, n_layers: int, transparent: bool, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Full-resolution ground-truth layers, bottom to top, straight RGBA uint8, and their kinds."""
    rng = np.random.default_rng(seed)
    w, h = width, height
    alphas: list[np.ndarray] = []
    colours: list[np.ndarray] = []
    kinds: list[str] = []
    if not transparent:
        alphas.append(np.ones((h, w), np.float32))
        colours.append(_texture(rng, w, h, fine=1.0))
        kinds.append("background")
    for kind in rng.choice(KINDS, size=n_layers - len(alphas), replace=False):
        a = _shape_alpha(str(kind), rng, w, h)
        base = rng.uniform(0.05, 0.95, size=3).astype(np.float32)
        if kind == "glass":
            base = 0.6 + 0.4 * base
        colour = np.clip(base + 0.25 * (_field(rng, w, h, 3) - 0.5) + 0.1 * (_texture(rng, w, h, 0.6) - 0.5), 0, 1)
        alphas.append(a.astype(np.float32))
        colours.append(colour)
        kinds.append(str(kind))
    layers = []
    for a, c in zip(alphas, colours):
        rgba = np.concatenate([c, a[..., None]], axis=-1)
        q = np.rint(rgba * 255.0).astype(np.uint8)
        q[q[..., 3] == 0] = 0
        layers.append(q)
    return layers, kinds


def flatten(layers: list[np.ndarray]) -> np.ndarray:
    """Composite straight RGBA layers (normal blending) into a straight RGBA uint8 source."""
    h, w = layers[0].shape[:2]
    out = np.zeros((h, w, 4), np.float32)
    for layer in layers:
        f = layer.astype(np.float32) / 255.0
        a = f[..., 3:4]
        out = np.concatenate([f[..., :3] * a, a], axis=-1) + out * (1.0 - a)
    alpha = out[..., 3:4]
    rgb = np.where(alpha > 0, out[..., :3] / np.maximum(alpha, 1e-8), 0.0)
    return np.rint(np.clip(np.concatenate([rgb, alpha], axis=-1), 0, 1) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------- simulated model output


@dataclass
class Errors:
    """The model's errors on one layer, in model pixels (drawn per layer from the family)."""

    blur: float  # Gaussian σ of the alpha
    edge: str  # "plain", "sharpened" or "grown" (eroded when `grow` < 0)
    sharpen: float  # 1 + the amount of unsharp masking (σ 1 px)
    grow: float  # edge moved outwards by this much (negative: eroded)
    dx: float
    dy: float
    gain: tuple
    offset: tuple
    noise: float  # σ, 0..1
    misplaced: float  # peak of a smooth displacement of the whole layer, 0 if none

    def text(self) -> str:
        e = {"plain": "", "sharpened": f" sharpen×{self.sharpen:.1f}", "grown": f" grow {self.grow:+.2f}"}[self.edge]
        m = f" misplaced {self.misplaced:.1f}px" if self.misplaced else ""
        return f"blur {self.blur:.2f}{e} shift ({self.dx:+.2f},{self.dy:+.2f}) noise {self.noise * 255:.1f}{m}"


def draw_errors(rng: np.random.Generator, n: int, transparent: bool) -> list[Errors]:
    """The family: alpha blur σ 0.3–1.2, a third of layers sharpened (unsharp masking, amount up to 2) and a third eroded or
    dilated by up to 1 px; shifts up to ±0.8 px; colour gain ±8 %, offset ±3 %; noise σ 1–4/255; one object layer
    misplaced by a smooth displacement of 2–3.5 px at its peak."""
    first = 0 if transparent else 1
    wrong = int(rng.integers(first, n))
    out = []
    for i in range(n):
        pick = rng.random()
        out.append(Errors(
            blur=float(rng.uniform(0.3, 1.2)),
            edge="plain" if pick < 1 / 3 else "sharpened" if pick < 2 / 3 else "grown",
            sharpen=float(rng.uniform(1.0, 3.0)),
            grow=float(rng.uniform(-1.0, 1.0)),
            dx=float(rng.uniform(-0.8, 0.8)),
            dy=float(rng.uniform(-0.8, 0.8)),
            gain=tuple(1 + rng.uniform(-0.08, 0.08, 3)),
            offset=tuple(rng.uniform(-0.03, 0.03, 3)),
            noise=float(rng.uniform(1, 4) / 255),
            misplaced=float(rng.uniform(2.0, 3.5)) if i == wrong else 0.0,
        ))
    return out


def simulate_model(gt: list[np.ndarray], seed: int, transparent: bool = False) -> tuple[list[np.ndarray], list[Errors]]:
    """Each layer at the bucket size, premultiplied resampling, then perturbed like a generative model's output."""
    rng = np.random.default_rng(seed + 1000)
    h, w = gt[0].shape[:2]
    bw, bh = bucket_size(w, h)
    errors = draw_errors(rng, len(gt), transparent)
    out = []
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    for layer, e in zip(gt, errors):
        small = resize_premultiplied(layer, bw, bh).astype(np.float32) / 255.0
        a = small[..., 3]
        pre = small[..., :3] * a[..., None]
        mx, my = xx - e.dx, yy - e.dy
        if e.misplaced:
            field = _field(rng, bw, bh, 3, channels=2)
            mx = mx + (2 * field[..., 0] - 1) * e.misplaced
            my = my + (2 * field[..., 1] - 1) * e.misplaced
        border = cv2.BORDER_REPLICATE if a.min() >= 1 else cv2.BORDER_CONSTANT
        moved = cv2.remap(np.concatenate([pre, a[..., None]], axis=-1), mx.astype(np.float32), my.astype(np.float32),
                          cv2.INTER_LINEAR, borderMode=border)
        pre, a = moved[..., :3], moved[..., 3]
        # colour under the model's (spread) alpha: the layer's own, extended outwards
        wide = cv2.GaussianBlur(np.concatenate([pre, a[..., None]], axis=-1), (0, 0), 3)
        rgb = np.where(a[..., None] > 1e-3, pre / np.maximum(a, 1e-3)[..., None],
                       wide[..., :3] / np.maximum(wide[..., 3:], 1e-6))
        a = cv2.GaussianBlur(a, (0, 0), e.blur, borderType=cv2.BORDER_REPLICATE)
        if e.edge == "sharpened":  # unsharp masking: steeper edges (with the odd overshoot, clipped)
            a = a + (e.sharpen - 1.0) * (a - cv2.GaussianBlur(a, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE))
        elif e.edge == "grown":
            gy, gx = np.gradient(a)
            a = a + e.grow * np.hypot(gx, gy)
        a = np.clip(a, 0, 1)
        rgb = rgb * np.asarray(e.gain, np.float32) + np.asarray(e.offset, np.float32)
        rgb = rgb + rng.normal(0, e.noise, size=rgb.shape)
        q = np.rint(np.clip(np.concatenate([rgb, a[..., None]], axis=-1), 0, 1) * 255.0).astype(np.uint8)
        q[q[..., 3] == 0] = 0
        out.append(q)
    return out, errors


# ---------------------------------------------------------------- scoring


def score(placed, gt: list[np.ndarray], source: np.ndarray, masks: list) -> dict:
    """The restored layers against the source (recomposition) and against the ground truth (each layer's alpha,
    over the whole layer and over its visible and hidden edges, and premultiplied colour), with the project's one
    implementation of these metrics. Means are over layers (for the edges: layers with at least 100 such pixels)."""
    h, w = source.shape[:2]
    rebuilt = recomposition(placed, source)
    ious, l1s, vis, hid, per_layer = [], [], [], [], []
    sums = np.zeros(4)
    for layer, truth, (seen, hidden) in zip(placed, gt, masks):
        full = on_canvas(layer, w, h)
        ious.append(soft_iou(full[..., 3], truth[..., 3]))
        l1s.append(premultiplied_l1(full, truth))
        row = {"iou": ious[-1], "vis": None, "hid": None}
        for mask, into, key, at in ((seen, vis, "vis", 0), (hidden, hid, "hid", 2)):
            if mask.sum() >= 100:
                lo, hi = soft_iou_sums(full[..., 3], truth[..., 3], mask)
                sums[at : at + 2] += lo, hi
                into.append(lo / hi if hi > 0 else 1.0)
                row[key] = into[-1]
        per_layer.append(row)
    return {
        "psnr": rebuilt.psnr,
        "max_err": rebuilt.max_rgb * 255.0,
        "max_err_alpha": rebuilt.max_alpha * 255.0,
        "iou": float(np.mean(ious)),
        "vis_iou": float(np.mean(vis)) if vis else 1.0,
        "hid_iou": float(np.mean(hid)) if hid else 1.0,
        "l1": float(np.mean(l1s)),
        "layers": per_layer,
    }


def hidden_share(masks: list) -> float:
    """Of all edge pixels (all layers), the share hidden behind other layers."""
    seen = sum(int(v.sum()) for v, _ in masks)
    hidden = sum(int(x.sum()) for _, x in masks)
    return hidden / max(1, seen + hidden)


# ---------------------------------------------------------------- running the methods


def _method(name: str):
    if name == "restore":
        from backend.imaging.restore import restore_layers

        return restore_layers
    from backend.imaging.image import resample_layers

    return resample_layers


def _timed(fn, source: np.ndarray, model: list[np.ndarray], names: list[str]) -> tuple[list, dict]:
    fn(source[:64, :64].copy(), [m[:8, :8].copy() for m in model], names)  # warm imports and caches
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    placed = fn(source, model, names)
    return placed, {"seconds": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "load": load}


def _run_method(method: str, folder: str) -> None:
    """Child process: load inputs, run one method, report time and the peak memory it added."""
    import tracemalloc

    source = np.load(os.path.join(folder, "source.npy"))
    model = list(np.load(os.path.join(folder, "model.npy")))
    names = [f"layer {i}" for i in range(len(model))]
    fn = _method(method)
    placed, figures = _timed(fn, source, model, names)
    # memory on a second run: tracemalloc sees every numpy allocation (the returned layers included)
    del placed
    tracemalloc.start()
    placed = fn(source, model, names)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with open(os.path.join(folder, f"{method}.pkl"), "wb") as f:
        pickle.dump(placed, f)
    figures.update(peak_mib=peak / 2**20, out_mib=sum(p.pixels.nbytes for p in placed) / 2**20)
    print(json.dumps(figures))


def make_inputs(case: Case, cache: str | None) -> tuple[list[np.ndarray], list[str], np.ndarray, list[np.ndarray], list[Errors]]:
    """Ground truth, its kinds, the source and the simulated model's layers (from `cache` if it holds them)."""
    path = os.path.join(cache, f"{case.seed}_{case.width}x{case.height}_{case.layers}.pkl") if cache else None
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    gt, kinds = ground_truth(case.width, case.height, case.layers, case.transparent, case.seed)
    source = flatten(gt)
    model, errors = simulate_model(gt, case.seed, case.transparent)
    if path:
        os.makedirs(cache, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump((gt, kinds, source, model, errors), f, protocol=5)
    return gt, kinds, source, model, errors


def run_case(case: Case, in_process: bool = False, cache: str | None = None) -> dict:
    """Both methods on one case: in fresh processes (timing and traced memory) unless `in_process`."""
    t = time.perf_counter()
    gt, kinds, source, model, errors = make_inputs(case, cache)
    result = {"case": case, "bucket": model[0].shape[1::-1], "prep": time.perf_counter() - t, "kinds": kinds,
              "errors": errors}
    placed: dict[str, list] = {}
    names = [f"layer {i}" for i in range(len(model))]
    if in_process:
        for method in ("resample", "restore"):
            placed[method], result[method] = _timed(_method(method), source, model, names)
    else:
        with tempfile.TemporaryDirectory() as folder:
            np.save(os.path.join(folder, "source.npy"), source)
            np.save(os.path.join(folder, "model.npy"), np.stack(model))
            for method in ("resample", "restore"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", method, folder],
                    capture_output=True, text=True, timeout=900, cwd=ROOT,
                )
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr)
                result[method] = json.loads(proc.stdout.strip().splitlines()[-1])
                with open(os.path.join(folder, f"{method}.pkl"), "rb") as f:
                    placed[method] = pickle.load(f)
    h, w = source.shape[:2]
    scale = 0.5 * (w / model[0].shape[1] + h / model[0].shape[0])
    reference = [on_canvas(p, w, h)[..., 3] for p in placed["resample"]]
    masks = edge_masks([g[..., 3] for g in gt], reference, max(2, int(round(scale / 2))))
    result["hidden_share"] = hidden_share(masks)
    for method in ("resample", "restore"):
        result[method].update(score(placed[method], gt, source, masks))
    return result


def way(base: float, ours: float) -> float:
    """How far `ours` went from `base` to 1.0 (1 = all the way)."""
    return (ours - base) / (1.0 - base) if base < 1.0 else 1.0


def verdict(r: dict) -> dict:
    """The issue's targets for one case."""
    f, g = r["resample"], r["restore"]
    return {
        "vis_way": way(f["vis_iou"], g["vis_iou"]),
        "hid_way": way(f["hid_iou"], g["hid_iou"]),
        "way": way(f["iou"], g["iou"]),
        "l1_ratio": g["l1"] / f["l1"],
        "ok": way(f["vis_iou"], g["vis_iou"]) >= 0.5 and g["psnr"] >= 60 and g["l1"] <= f["l1"] / 3,
    }


def table(results: list[dict]) -> str:
    head = (
        "| case | size | layers | bucket | method | composite PSNR (dB) | max err (/255) | alpha soft IoU | visible edges "
        "| hidden edges (share) | RGB L1 | time (s) | CPU (s) | load | peak mem (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        c = r["case"]
        v = verdict(r)
        for method, label in (("resample", "resample"), ("restore", "**restore**")):
            f = r[method]
            psnr = "∞" if math.isinf(f["psnr"]) else f"{f['psnr']:.1f}"
            extra = method == "restore"
            iou = f"{f['iou']:.4f}" + (f" ({100 * v['way']:.0f} %)" if extra else "")
            vis = f"{f['vis_iou']:.4f}" + (f" ({100 * v['vis_way']:.0f} %)" if extra else "")
            hid = f"{f['hid_iou']:.4f}" + (f" ({100 * v['hid_way']:.0f} %)" if extra else f" ({100 * r['hidden_share']:.0f} %)")
            l1 = f"{f['l1']:.5f}" + (f" (×{v['l1_ratio']:.2f})" if extra else "")
            mem = f"{f['peak_mib']:.0f}" if "peak_mib" in f else "–"  # not traced in-process
            rows.append(
                f"| {c.name} | {c.width}×{c.height} | {c.layers} | {r['bucket'][0]}×{r['bucket'][1]} | {label} "
                f"| {psnr} | {f['max_err']:.2f} | {iou} | {vis} | {hid} | {l1} | {f['seconds']:.2f} | {f['cpu']:.2f} "
                f"| {f['load']:.1f} | {mem} |"
            )
    return head + "\n".join(rows) + "\n"


def summary_line(r: dict) -> str:
    f, g, v = r["resample"], r["restore"], verdict(r)
    worst = min((lay["vis"], k) for lay, k in zip(g["layers"], r["kinds"]) if lay["vis"] is not None)
    return (
        f"{r['case'].name} [{r['case'].half}]: iou {f['iou']:.4f}->{g['iou']:.4f} ({100 * v['way']:.0f}%) "
        f"vis {f['vis_iou']:.4f}->{g['vis_iou']:.4f} ({100 * v['vis_way']:.0f}%) "
        f"hid {f['hid_iou']:.4f}->{g['hid_iou']:.4f} ({100 * v['hid_way']:.0f}%, share {100 * r['hidden_share']:.0f}%) "
        f"l1 x{v['l1_ratio']:.2f} {g['psnr']:.1f}dB max {g['max_err']:.2f} "
        f"{g['seconds']:.2f}s cpu {g['cpu']:.2f}s load {g['load']:.1f} worst vis {worst[0]:.3f} {worst[1]}"
        + ("" if v["ok"] else "  MISSED")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", choices=["tuning", "reporting", "both"], default="reporting")
    parser.add_argument("--quick", action="store_true", help=f"pictures up to {QUICK_PIXELS / 1e6:.0f} MP only")
    parser.add_argument("--case", action="append", help="run only cases whose name starts with this")
    parser.add_argument("--in-process", action="store_true", help="no fresh processes, no traced memory (faster)")
    parser.add_argument("--cache", help="keep generated inputs in this folder")
    parser.add_argument("--layers", action="store_true", help="print each layer's figures")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_method(*args.child)
        return
    cases = [c for c in CASES if args.half == "both" or c.half == args.half]
    if args.quick:
        cases = [c for c in cases if c.width * c.height <= QUICK_PIXELS]
    if args.case:
        cases = [c for c in cases if any(c.name.startswith(s) for s in args.case)]
    results = []
    for case in cases:
        r = run_case(case, args.in_process, args.cache)
        results.append(r)
        print(summary_line(r), flush=True)
        if args.layers:
            for k, kind, e, a, b in zip(range(case.layers), r["kinds"], r["errors"], r["resample"]["layers"],
                                        r["restore"]["layers"]):
                fmt = lambda x: "   -  " if x is None else f"{x:.4f}"  # noqa: E731
                print(f"    {k} {kind:10s} iou {a['iou']:.4f}->{b['iou']:.4f} vis {fmt(a['vis'])}->{fmt(b['vis'])} "
                      f"hid {fmt(a['hid'])}->{fmt(b['hid'])}  {e.text()}")
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"case": r["case"].name, "half": r["case"].half, "hidden_share": r["hidden_share"],
                        **{m: {k: v for k, v in r[m].items()} for m in ("resample", "restore")}, **verdict(r)}
                       for r in results], f, indent=1)


if __name__ == "__main__":
    main()
