"""Benchmark full-resolution restoration against plain premultiplied resampling.

Builds synthetic ground-truth layer stacks (textured background with fine detail, anti-aliased and soft-edged
shapes, a semi-transparent panel, text), composites them into a source, simulates the model's output (each
layer downsampled to the bucket, then perturbed: blurred alpha, colour drift, sub-pixel shift, noise) and
scores both restorations against the full-resolution ground truth.

    .venv/bin/python scripts/bench_restore.py            # every case, prints a Markdown table
    .venv/bin/python scripts/bench_restore.py --quick    # small cases only
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from backend.imaging.metrics import on_canvas, premultiplied_l1, recomposition, soft_iou  # noqa: E402

BUCKET_AREA = 640 * 640


@dataclass
class Case:
    name: str
    width: int
    height: int
    layers: int
    transparent: bool = False
    seed: int = 0


CASES = [
    Case("2 MP 4:3", 1600, 1200, 4, seed=1),
    Case("2 MP 9:16", 1080, 1920, 5, seed=2),
    Case("3 MP 3:1", 3000, 1000, 4, seed=3),
    Case("4 MP 1:1 transparent", 2000, 2000, 4, transparent=True, seed=4),
    Case("12 MP 4:3", 4000, 3000, 6, seed=5),
    Case("24 MP 3:2", 6000, 4000, 6, seed=6),
]
QUICK = CASES[:4]


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


def ground_truth(width: int, height: int, n_layers: int, transparent: bool, seed: int) -> list[np.ndarray]:
    """Full-resolution ground-truth layers, bottom to top, straight RGBA uint8."""
    rng = np.random.default_rng(seed)
    w, h = width, height
    s = min(w, h)
    alphas: list[np.ndarray] = []
    colours: list[np.ndarray] = []
    if not transparent:
        alphas.append(np.ones((h, w), np.float32))
        colours.append(_texture(rng, w, h, fine=1.0))
    kinds = ["ellipse", "soft", "panel", "text", "ring", "ellipse", "soft", "text"]
    for i in range(n_layers - len(alphas)):
        kind = kinds[i % len(kinds)]
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        if kind == "ellipse":
            a = np.clip(0.5 - _sdf_ellipse(w, h, cx, cy, rng.uniform(0.15, 0.3) * w, rng.uniform(0.15, 0.3) * h), 0, 1)
        elif kind == "soft":
            feather = 0.03 * s
            d = _sdf_round_rect(w, h, cx - 0.25 * w, cy - 0.2 * h, cx + 0.2 * w, cy + 0.25 * h, 0.05 * s)
            t = np.clip(0.5 - d / feather, 0, 1)
            a = t * t * (3 - 2 * t)
        elif kind == "panel":
            d = _sdf_round_rect(w, h, 0.1 * w, 0.55 * h, 0.9 * w, 0.85 * h, 0.02 * s)
            a = 0.55 * np.clip(0.5 - d, 0, 1)
        elif kind == "text":
            size = max(8, int(0.06 * s))
            a = _text_alpha(w, h, int(0.08 * w), int(rng.uniform(0.1, 0.7) * h), size, "LayerBridge 0123 Qwg")
            a = np.maximum(a, _text_alpha(w, h, int(0.1 * w), int(0.85 * h), max(8, size // 2), "small print, fine"))
        else:  # ring
            d = np.abs(_sdf_ellipse(w, h, cx, cy, 0.2 * s, 0.2 * s)) - 0.02 * s
            a = np.clip(0.5 - d, 0, 1)
        base = rng.uniform(0.05, 0.95, size=3).astype(np.float32)
        colour = np.clip(base + 0.25 * (_field(rng, w, h, 3) - 0.5) + 0.1 * (_texture(rng, w, h, 0.6) - 0.5), 0, 1)
        alphas.append(a.astype(np.float32))
        colours.append(colour)
    layers = []
    for a, c in zip(alphas, colours):
        rgba = np.concatenate([c, a[..., None]], axis=-1)
        q = np.rint(rgba * 255.0).astype(np.uint8)
        q[q[..., 3] == 0] = 0
        layers.append(q)
    return layers


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


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(x, r, mode="edge")
    p = sum(k[i] * p[i : i + x.shape[0], :] for i in range(2 * r + 1))
    return sum(k[i] * p[:, i : i + x.shape[1]] for i in range(2 * r + 1))


def _shift(x: np.ndarray, dx: float, dy: float) -> np.ndarray:
    img = Image.fromarray(x.astype(np.float32), "F")
    return np.asarray(img.transform(img.size, Image.AFFINE, (1, 0, -dx, 0, 1, -dy), Image.BILINEAR))


def simulate_model(gt: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each layer at the bucket size, premultiplied resampling, then perturbed like a generative model's output."""
    rng = np.random.default_rng(seed + 1000)
    h, w = gt[0].shape[:2]
    bw, bh = bucket_size(w, h)
    out = []
    for layer in gt:
        small = resize_premultiplied(layer, bw, bh).astype(np.float32) / 255.0
        a = small[..., 3]
        dx, dy = rng.uniform(-0.4, 0.4, size=2)
        pre = [_shift(small[..., c] * a, dx, dy) for c in range(3)]
        a = np.clip(_blur(_shift(a, dx, dy), 0.6), 0, 1)
        a_s = _shift(small[..., 3], dx, dy)
        rgb = np.stack([np.where(a_s > 1e-4, p / np.maximum(a_s, 1e-4), 0) for p in pre], axis=-1)
        gain = 1 + rng.uniform(-0.04, 0.04, size=3)
        offset = rng.uniform(-0.02, 0.02, size=3)
        rgb = rgb * gain + offset + rng.normal(0, 1.5 / 255, size=rgb.shape)
        q = np.rint(np.clip(np.concatenate([rgb, a[..., None]], axis=-1), 0, 1) * 255.0).astype(np.uint8)
        q[q[..., 3] == 0] = 0
        out.append(q)
    return out


# ---------------------------------------------------------------- scoring


def score(placed, gt: list[np.ndarray], source: np.ndarray) -> dict:
    """The restored layers against the source (recomposition) and against the ground truth (each layer's alpha
    and premultiplied colour), with the project's one implementation of these metrics."""
    h, w = source.shape[:2]
    rebuilt = recomposition(placed, source)
    ious, l1s = [], []
    for layer, truth in zip(placed, gt):
        full = on_canvas(layer, w, h)
        ious.append(soft_iou(full[..., 3], truth[..., 3]))
        l1s.append(premultiplied_l1(full, truth))
    return {
        "psnr": rebuilt.psnr,
        "max_err": rebuilt.max_rgb * 255.0,
        "max_err_alpha": rebuilt.max_alpha * 255.0,
        "iou": float(np.mean(ious)),
        "l1": float(np.mean(l1s)),
    }


# ---------------------------------------------------------------- timing in a fresh process


def _run_method(method: str, folder: str) -> None:
    """Child process: load inputs, run one method, report time and the peak memory it added."""
    import pickle
    import tracemalloc

    source = np.load(os.path.join(folder, "source.npy"))
    model = list(np.load(os.path.join(folder, "model.npy")))
    names = [f"layer {i}" for i in range(len(model))]
    if method == "restore":
        from backend.imaging.restore import restore_layers as fn
    else:
        from backend.imaging.image import resample_layers as fn
    fn(source[:64, :64].copy(), [m[:8, :8].copy() for m in model], names)  # warm imports and caches
    t = time.perf_counter()
    placed = fn(source, model, names)
    seconds = time.perf_counter() - t
    # memory on a second run: tracemalloc sees every numpy allocation (the returned layers included)
    del placed
    tracemalloc.start()
    placed = fn(source, model, names)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with open(os.path.join(folder, f"{method}.pkl"), "wb") as f:
        pickle.dump(placed, f)
    out_mib = sum(p.pixels.nbytes for p in placed) / 2**20
    print(json.dumps({"seconds": seconds, "peak_mib": peak / 2**20, "out_mib": out_mib}))


def run_case(case: Case) -> dict:
    import pickle

    t = time.perf_counter()
    gt = ground_truth(case.width, case.height, case.layers, case.transparent, case.seed)
    source = flatten(gt)
    model = simulate_model(gt, case.seed)
    prep = time.perf_counter() - t
    result = {"case": case, "bucket": model[0].shape[1::-1], "prep": prep}
    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "source.npy"), source)
        np.save(os.path.join(folder, "model.npy"), np.stack(model))
        for method in ("resample", "restore"):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", method, folder],
                capture_output=True, text=True, timeout=600, cwd=ROOT,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr)
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            with open(os.path.join(folder, f"{method}.pkl"), "rb") as f:
                placed = pickle.load(f)
            figures.update(score(placed, gt, source))
            result[method] = figures
    return result


def table(results: list[dict]) -> str:
    head = (
        "| case | size | layers | bucket | method | composite PSNR (dB) | max err (/255) | alpha soft IoU "
        "| RGB L1 | time (s) | peak mem (MiB) | of which output (MiB) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        c = r["case"]
        for method, label in (("resample", "resample"), ("restore", "**restore**")):
            f = r[method]
            psnr = "∞" if math.isinf(f["psnr"]) else f"{f['psnr']:.1f}"
            rows.append(
                f"| {c.name} | {c.width}×{c.height} | {c.layers} | {r['bucket'][0]}×{r['bucket'][1]} | {label} "
                f"| {psnr} | {f['max_err']:.2f} | {f['iou']:.4f} | {f['l1']:.5f} | {f['seconds']:.2f} "
                f"| {f['peak_mib']:.0f} | {f['out_mib']:.0f} |"
            )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cases only")
    parser.add_argument("--case", action="append", help="run only cases whose name contains this")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_method(*args.child)
        return
    cases = QUICK if args.quick else CASES
    if args.case:
        cases = [c for c in CASES if any(c.name.startswith(s) for s in args.case)]
    results = []
    for case in cases:
        r = run_case(case)
        results.append(r)
        f, g = r["resample"], r["restore"]
        print(
            f"{case.name}: resample {f['psnr']:.1f} dB iou {f['iou']:.4f} l1 {f['l1']:.5f} {f['seconds']:.2f}s | "
            f"restore {g['psnr']:.1f} dB max {g['max_err']:.2f} iou {g['iou']:.4f} l1 {g['l1']:.5f} "
            f"{g['seconds']:.2f}s {g['peak_mib']:.0f} MiB",
            flush=True,
        )
    print()
    print(table(results))


if __name__ == "__main__":
    main()
