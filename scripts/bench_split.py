"""Benchmark the element split (backend/imaging/split.py): time per layer size and the test set's figures.

Builds poster-like layers (shapes with soft shadows and glows, text lines and a paragraph in several fonts, a row of
icons close together, confetti, faint specks) at 2 MP and 24 MP and times split_layer (best and median of --repeat
runs, after one warm-up), then runs tests/split_scenes.py's scenes and prints their counts, recomposition error and
per-element alpha IoU.

    .venv/bin/python scripts/bench_split.py             # both sizes and the scenes
    .venv/bin/python scripts/bench_split.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from backend.core.layer import PlacedLayer  # noqa: E402
from backend.imaging.export import flatten  # noqa: E402
from backend.imaging.split import split_layer  # noqa: E402
from split_scenes import FONTS, PHRASES, all_scenes, alpha_iou, font, on_canvas  # noqa: E402


def poster(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A busy poster layer at this size: everything scales with the width."""
    rng = random.Random(seed)
    u = width / 2000
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    shapes = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    d = ImageDraw.Draw(shapes)
    for k in range(6):
        x, y, s = int((100 + 300 * k) * u), int(height * 0.55), int(200 * u)
        (d.ellipse if k % 2 else d.rounded_rectangle)((x, y, x + s, y + s), fill=(200, 40 * k, 90, 255))
    shadow = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    shadow.putalpha(shapes.getchannel("A").filter(ImageFilter.BoxBlur(int(12 * u))).point(lambda v: v // 2))
    image.alpha_composite(shadow, (int(15 * u), int(15 * u)))
    image.alpha_composite(shapes)
    d = ImageDraw.Draw(image)
    d.text((int(80 * u), int(60 * u)), "Grand opening été", font=font(FONTS[0], max(14, int(160 * u))), fill="black")
    body = font(FONTS[2], max(14, int(28 * u)))
    lines = [" ".join(rng.sample(PHRASES, 2)) for _ in range(6)]
    d.multiline_text((int(80 * u), int(height * 0.25)), "\n".join(lines), font=body, fill="black", spacing=int(8 * u))
    for k in range(8):
        x = int((1100 + 60 * k) * u)
        d.ellipse((x, int(height * 0.3), x + int(48 * u), int(height * 0.3) + int(48 * u)), fill=(20, 20, 200, 255))
    for _ in range(300):
        x, y = rng.randrange(width - 40), rng.randrange(int(height * 0.85), height - 40)
        d.rectangle((x, y, x + int(12 * u), y + int(8 * u)), fill=(rng.randrange(256), 120, 40, 255))
    a = np.asarray(image).copy()
    for _ in range(200):
        x, y = rng.randrange(width - 2), rng.randrange(height - 2)
        if a[y, x, 3] == 0:
            a[y:y + 2, x:x + 2] = (0, 0, 0, rng.randint(5, 40))
    return a


def time_split(pixels: np.ndarray, repeat: int) -> tuple[float, float, float, int]:
    """Best and median wall time, best CPU time (this process, all its threads), and the element count."""
    layer = PlacedLayer("Poster", 0, 0, pixels)
    split_layer(layer)
    times, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        elements = split_layer(layer)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return min(times), statistics.median(times), min(cpu), len(elements)


def premultiplied(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int64)
    return np.concatenate([a[..., :3] * a[..., 3:] // 255, a[..., 3:]], axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall time grows with the load; "
          "CPU time does not)")
    print("| layer | elements | best wall | median wall | best CPU |\n|---|---|---|---|---|")
    for label, (w, h) in {"2 MP (1732×1155)": (1732, 1155), "24 MP (6000×4000)": (6000, 4000)}.items():
        best, median, cpu, n = time_split(poster(w, h), args.repeat)
        print(f"| {label} | {n} | {best:.3f} s | {median:.3f} s | {cpu:.3f} s |", flush=True)
    print("\n| scene | elements (expected) | max premultiplied error | min alpha IoU |\n|---|---|---|---|")
    good = 0
    scenes = all_scenes()
    for scene in scenes:
        layer = scene.layer()
        elements = split_layer(PlacedLayer("Layer", 0, 0, layer))
        back = np.asarray(flatten(elements, scene.width, scene.height))
        error = int(np.abs(premultiplied(back) - premultiplied(layer)).max()) if layer.size else 0
        confetti = scene.name.startswith("confetti")
        expected = 64 if confetti else len(scene.elements)
        found = [on_canvas(e, scene.width, scene.height)[..., 3] for e in elements]
        iou = 1.0 if confetti else min([max([alpha_iou(t[..., 3], f) for f in found] or [0.0])
                                        for t in scene.elements] or [1.0])
        good += len(elements) == expected and error == 0 and iou >= 0.95
        print(f"| {scene.name} | {len(elements)} ({expected}) | {error} | {iou:.3f} |", flush=True)
    print(f"\n{good} of {len(scenes)} scenes split exactly as expected")


if __name__ == "__main__":
    main()
