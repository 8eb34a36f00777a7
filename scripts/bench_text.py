#!/usr/bin/env python3
"""Text reading benchmark: renders a test set of text pictures with the fonts of Debian packages (fonts-dejavu,
fonts-liberation, fonts-urw-base35, fonts-noto-cjk), reads them with backend.text, and prints every measure of
docs/text.md — lines found, character error rate, ink-box IoU, font-size and colour error, family and bold
accuracy, shapes read as text — for the first set of pictures and for the set added later apart, then the time
(wall-clock and process CPU, with the load average) of every 2 MP picture and of a 24 MP one.

    python scripts/bench_text.py [--out DIR] [--no-timing | --timing-only] [--repeat N]
    (DIR: where the pictures and readings are written, to look at)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.text.reading import read_text  # noqa: E402

FONTS = {
    "DejaVu Sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans{}.ttf",
    "DejaVu Serif": "/usr/share/fonts/truetype/dejavu/DejaVuSerif{}.ttf",
    "DejaVu Sans Mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono{}.ttf",
    "Liberation Sans": "/usr/share/fonts/truetype/liberation/LiberationSans-{}.ttf",
    "Liberation Serif": "/usr/share/fonts/truetype/liberation/LiberationSerif-{}.ttf",
    "Liberation Mono": "/usr/share/fonts/truetype/liberation/LiberationMono-{}.ttf",
    "Nimbus Sans": "/usr/share/fonts/opentype/urw-base35/NimbusSans-{}.otf",
    "Nimbus Roman": "/usr/share/fonts/opentype/urw-base35/NimbusRoman-{}.otf",
    "URW Gothic": "/usr/share/fonts/opentype/urw-base35/URWGothic-{}.otf",
    "C059": "/usr/share/fonts/opentype/urw-base35/C059-{}.otf",
    "P052": "/usr/share/fonts/opentype/urw-base35/P052-{}.otf",
    "Nimbus Sans Narrow": "/usr/share/fonts/opentype/urw-base35/NimbusSansNarrow-{}.otf",
    "Nimbus Mono PS": "/usr/share/fonts/opentype/urw-base35/NimbusMonoPS-{}.otf",
    "URW Bookman": "/usr/share/fonts/opentype/urw-base35/URWBookman-{}.otf",
    "Z003": "/usr/share/fonts/opentype/urw-base35/Z003-{}.otf",
    "Liberation Sans Narrow": "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-{}.ttf",
    "DejaVu Sans Condensed": "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed{}.ttf",
    "DejaVu Serif Condensed": "/usr/share/fonts/truetype/dejavu/DejaVuSerifCondensed{}.ttf",
    "Noto Sans CJK SC": "/usr/share/fonts/opentype/noto/NotoSansCJK-{}.ttc",
    "Noto Serif CJK SC": "/usr/share/fonts/opentype/noto/NotoSerifCJK-{}.ttc",
}
STYLE = {  # (bold, italic) → the file name's part
    "DejaVu Sans": {(0, 0): "", (1, 0): "-Bold", (0, 1): "-Oblique", (1, 1): "-BoldOblique"},
    "DejaVu Serif": {(0, 0): "", (1, 0): "-Bold", (0, 1): "-Italic", (1, 1): "-BoldItalic"},
    "DejaVu Sans Mono": {(0, 0): "", (1, 0): "-Bold"},
    "DejaVu Sans Condensed": {(0, 0): "", (1, 0): "-Bold", (0, 1): "-Oblique"},
    "DejaVu Serif Condensed": {(0, 0): "", (1, 0): "-Bold", (0, 1): "-Italic"},
    "Nimbus Sans Narrow": {(0, 0): "Regular", (1, 0): "Bold", (0, 1): "Oblique"},
    "URW Bookman": {(0, 0): "Light", (1, 0): "Demi", (0, 1): "LightItalic"},
    "Z003": {(0, 1): "MediumItalic"},
    "URW Gothic": {(0, 0): "Book", (1, 0): "Demi", (0, 1): "BookOblique"},
    "C059": {(0, 0): "Roman", (1, 0): "Bold", (0, 1): "Italic"},
    "P052": {(0, 0): "Roman", (1, 0): "Bold", (0, 1): "Italic"},
}
DEFAULT_STYLE = {(0, 0): "Regular", (1, 0): "Bold", (0, 1): "Italic", (1, 1): "BoldItalic"}
CJK_INDEX = 2  # Simplified Chinese in the Noto CJK collections


def font(family: str, size: int, bold: bool = False, italic: bool = False) -> ImageFont.FreeTypeFont:
    part = STYLE.get(family, DEFAULT_STYLE)[(int(bold), int(italic))]
    return ImageFont.truetype(FONTS[family].format(part), size, index=CJK_INDEX if "CJK" in family else 0)


@dataclass
class Truth:
    text: str
    box: tuple[int, int, int, int]  # x, y, w, h of the ink
    size: int
    color: tuple[int, int, int]
    family: str
    bold: bool


@dataclass
class Case:
    name: str
    image: Image.Image
    added: bool = False  # one of the pictures added after the readings were first tuned (family, light on dark, ...)
    lines: list[Truth] = field(default_factory=list)
    shapes: list[tuple[int, int, int, int]] = field(default_factory=list)

    def text(self, xy, text, family, size, color, bold=False, italic=False, anchor="la"):
        f = font(family, size, bold, italic)
        mask = Image.new("L", self.image.size)
        ImageDraw.Draw(mask).text(xy, text, font=f, fill=255, anchor=anchor)
        box = mask.getbbox()
        layer = Image.new("RGBA", self.image.size, color + (255,))
        self.image.paste(layer, (0, 0), mask) if self.image.mode == "RGB" else self.image.alpha_composite(
            Image.composite(layer, Image.new("RGBA", self.image.size, (0, 0, 0, 0)), mask))
        self.lines.append(Truth(text, (box[0], box[1], box[2] - box[0], box[3] - box[1]), size, color, family, bold))
        return box

    def shape(self, kind, box, color):
        d = ImageDraw.Draw(self.image)
        (d.rectangle if kind == "rect" else d.ellipse)(box, fill=color)
        self.shapes.append((box[0], box[1], box[2] - box[0], box[3] - box[1]))


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like background: soft gradients, blurred blobs and grain."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([60 + 80 * x / w, 90 + 60 * y / h, 140 - 60 * x / w], axis=-1)
    img = Image.fromarray(base.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(25):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(40, 300)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(30, 200, 3)))
    img = img.filter(ImageFilter.GaussianBlur(40))
    grain = rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8))


def cases() -> list[Case]:
    W, H = 1600, 1200
    out = []
    c = Case("poster", Image.new("RGB", (W, H), (245, 238, 220)))
    c.text((80, 60), "Summer Sale", "DejaVu Sans", 150, (200, 30, 40), bold=True)
    c.text((80, 280), "Everything must go this weekend", "Liberation Serif", 48, (30, 30, 30))
    c.text((80, 380), "Saturday and Sunday from 9 am to 6 pm", "Liberation Sans", 28, (60, 60, 120))
    c.text((80, 1120), "Terms and conditions apply, see store for details", "Liberation Sans", 14, (90, 90, 90))
    out.append(c)

    c = Case("paragraph", Image.new("RGB", (W, H), (255, 255, 255)))
    c.text((100, 80), "Our Story", "Nimbus Roman", 72, (20, 40, 90), bold=True)
    para = ["We started in a small workshop in 1998,", "making furniture by hand for friends and",
            "neighbours. Today our team of twelve still", "builds every piece to order."]
    for i, line in enumerate(para):
        c.text((100, 230 + i * 44), line, "Nimbus Roman", 32, (40, 40, 40))
    out.append(c)

    c = Case("centred", Image.new("RGB", (W, H), (20, 30, 60)))
    for i, line in enumerate(["Grand Opening", "New City Gallery", "Free entry all week"]):
        c.text((W // 2, 200 + i * 130), line, "Nimbus Sans", 80 if i == 0 else 56, (250, 240, 200), bold=i == 0,
               anchor="ma")
    out.append(c)

    c = Case("right", Image.new("RGB", (W, H), (230, 245, 235)))
    for i, line in enumerate(["Fresh bread daily", "Open from 7 am", "Call 555 0123"]):
        c.text((W - 100, 300 + i * 60), line, "URW Gothic", 44, (10, 90, 50), anchor="ra")
    out.append(c)

    c = Case("photo", photo((W, H), 1).convert("RGB"))
    c.text((120, 200), "Adventure Awaits", "DejaVu Sans", 110, (255, 255, 255), bold=True)
    c.text((120, 400), "Book your trip before the end of May", "DejaVu Sans", 44, (255, 250, 230))
    out.append(c)

    c = Case("shapes", Image.new("RGB", (W, H), (250, 250, 250)))
    c.shape("rect", (100, 100, 500, 400), (40, 120, 200))
    c.shape("ellipse", (1100, 120, 1450, 470), (230, 160, 20))
    c.shape("rect", (700, 700, 730, 1000), (30, 30, 30))
    c.shape("ellipse", (900, 800, 1000, 900), (200, 40, 60))
    c.text((540, 200), "Best price", "Liberation Sans", 64, (40, 120, 200), bold=True)
    c.text((760, 760), "Limited offer", "C059", 56, (30, 30, 30))
    out.append(c)

    c = Case("accents", Image.new("RGB", (W, H), (255, 252, 245)))
    c.text((80, 100), "Größe über Straße", "DejaVu Serif", 64, (30, 30, 30))
    c.text((80, 260), "Café à côté, très élégant", "Liberation Sans", 56, (120, 20, 60))
    c.text((80, 400), "El niño comió piña en España", "P052", 52, (20, 60, 120))
    c.text((80, 540), "Grüße aus München", "Liberation Serif", 60, (10, 10, 10), bold=True)
    out.append(c)

    c = Case("chinese", Image.new("RGB", (W, H), (255, 255, 255)))
    c.text((100, 150), "夏季大促销全场五折", "Noto Sans CJK SC", 80, (200, 20, 20), bold=True)
    c.text((100, 400), "欢迎光临我们的新店", "Noto Serif CJK SC", 56, (30, 30, 30))
    c.text((100, 600), "Open every day", "Noto Sans CJK SC", 48, (30, 30, 30))
    out.append(c)

    c = Case("italic", Image.new("RGB", (W, H), (240, 240, 255)))
    c.text((100, 150), "A quiet evening", "Liberation Serif", 72, (50, 20, 80), italic=True)
    c.text((100, 350), "Handmade with care", "DejaVu Sans", 48, (30, 30, 30), italic=True)
    out.append(c)

    c = Case("sizes", Image.new("RGB", (W, H), (255, 255, 255)))
    c.text((60, 40), "BIG", "C059", 220, (0, 0, 0), bold=True)
    c.text((60, 400), "A line of small print at fourteen pixels", "DejaVu Sans", 14, (0, 0, 0))
    c.text((60, 500), "Medium words at twenty", "Liberation Sans", 20, (0, 80, 160))
    c.text((60, 600), "Monospaced code line", "DejaVu Sans Mono", 36, (0, 110, 0))
    c.text((60, 700), "Typewriter style text", "Liberation Mono", 30, (80, 40, 0))
    out.append(c)

    c = Case("layer", Image.new("RGBA", (W, H), (0, 0, 0, 0)))
    c.text((200, 300), "White on nothing", "Liberation Sans", 90, (255, 255, 255), bold=True)
    c.text((200, 500), "a transparent layer", "DejaVu Serif", 50, (250, 200, 40))
    out.append(c)
    return out + added_cases(W, H)


def added_cases(W: int, H: int) -> list[Case]:
    """Pictures added after the readings were tuned on the ones above: other families of the same Debian packages,
    light text on dark, many sizes on one transparent layer, text close to the picture's edges."""
    out = []
    c = Case("families", Image.new("RGB", (W, H), (252, 250, 245)), added=True)
    c.text((80, 60), "Narrow Headline Today", "Nimbus Sans Narrow", 96, (20, 20, 20), bold=True)
    c.text((80, 260), "A condensed sans for captions", "DejaVu Sans Condensed", 40, (60, 30, 30))
    c.text((80, 380), "Bookman light for a quiet note", "URW Bookman", 44, (30, 50, 90))
    c.text((80, 500), "Order code 7741 AB", "Nimbus Mono PS", 36, (0, 0, 0))
    c.text((80, 620), "Narrow text fits more words on one line", "Liberation Sans Narrow", 34, (90, 20, 20))
    c.text((80, 740), "Condensed serif, bold", "DejaVu Serif Condensed", 52, (20, 70, 40), bold=True)
    c.text((80, 900), "With love from Paris", "Z003", 64, (120, 30, 90), italic=True)
    out.append(c)

    c = Case("dark", Image.new("RGB", (W, H), (18, 20, 28)), added=True)
    c.text((100, 120), "Night Market", "URW Bookman", 120, (255, 214, 90), bold=True)
    c.text((100, 380), "Street food and live music", "DejaVu Sans", 46, (235, 235, 240))
    c.text((100, 480), "Every Friday from 6 pm", "Liberation Sans", 40, (120, 210, 255))
    c.text((100, 1000), "Free entry", "Nimbus Sans", 28, (200, 200, 200))
    out.append(c)

    c = Case("mixed", Image.new("RGBA", (W, H), (0, 0, 0, 0)), added=True)
    c.text((120, 80), "Spring Collection", "P052", 130, (40, 40, 40), bold=True)
    c.text((120, 330), "New arrivals every week", "Liberation Sans", 48, (200, 60, 40))
    c.text((120, 450), "Sizes from small to large", "DejaVu Serif", 30, (40, 40, 40))
    c.text((120, 540), "Prices include tax and delivery within the country", "Nimbus Sans", 18, (80, 80, 80))
    c.text((900, 700), "Shop now", "DejaVu Sans", 72, (20, 90, 160), bold=True)
    out.append(c)

    c = Case("edges", Image.new("RGB", (W, H), (240, 236, 228)), added=True)
    c.text((3, 3), "Top corner label", "Liberation Sans", 40, (30, 30, 30), bold=True)
    c.text((W - 3, 560), "Right edge", "Nimbus Roman", 56, (90, 20, 20), anchor="ra")
    c.text((3, H - 3), "Bottom line of text", "DejaVu Sans", 36, (20, 60, 100), anchor="ld")
    c.text((W - 3, H - 3), "Page 12", "URW Gothic", 30, (60, 60, 60), anchor="rd")
    out.append(c)
    return out


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


def measure(case: Case, reading: dict) -> dict:
    found = []
    for block in reading["blocks"]:
        for line in block["lines"]:
            b = line["box"]
            found.append((line, block, (b["x"], b["y"], b["width"], b["height"])))
    rows, used = [], set()
    for truth in case.lines:
        best = max(range(len(found)), key=lambda i: iou(truth.box, found[i][2]), default=None)
        if best is None or best in used or iou(truth.box, found[best][2]) < 0.5:
            rows.append({"truth": truth, "found": False})
            continue
        used.add(best)
        line, block, box = found[best]
        colour = tuple(int(block["color"][i : i + 2], 16) for i in (1, 3, 5))
        rows.append({
            "truth": truth, "found": True, "text": line["text"], "iou": iou(truth.box, box),
            "edits": levenshtein(truth.text, line["text"]),
            "size_error": abs(block["size"] - truth.size) / truth.size,
            "colour_error": max(abs(a - b) for a, b in zip(colour, truth.color)),
            "family": block["font"]["family"] == truth.family, "bold": block["font"]["bold"] == truth.bold,
        })
    extra = [found[i] for i in range(len(found)) if i not in used]
    on_shapes = [f for f in extra if any(iou(f[2], s) > 0 or _inside(f[2], s) for s in case.shapes)]
    return {"rows": rows, "extra": len(extra), "on_shapes": len(on_shapes)}


def _inside(a, s) -> bool:
    return a[0] >= s[0] and a[1] >= s[1] and a[0] + a[2] <= s[0] + s[2] and a[1] + a[3] <= s[1] + s[3]


def timed(image: Image.Image, repeat: int = 3) -> tuple[float, float]:
    """Best wall-clock and process-CPU seconds over `repeat` readings (the first reading loads the engine)."""
    read_text(image)
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        read_text(image)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def summary(label: str, rows: list[dict], extra: int, on_shapes: int) -> None:
    hit = [r for r in rows if r["found"]]
    chars = sum(len(r["truth"].text) for r in hit)
    colours = [r["colour_error"] for r in hit]
    print(f"\n{label}")
    print(f"lines found        {len(hit)}/{len(rows)} = {len(hit) / len(rows):.1%}   (target >= 95 %)")
    print(f"character errors   {sum(r['edits'] for r in hit) / max(1, chars):.2%} of {chars} characters   (<= 3 %)")
    print(f"mean ink-box IoU   {statistics.mean(r['iou'] for r in hit):.3f}   (>= 0.8)")
    print(f"median size error  {statistics.median(r['size_error'] for r in hit):.1%}   (<= 10 %)")
    print(f"colour error       median {statistics.median(colours):g}/255, max {max(colours)}/255   (<= 6, max 16)")
    print(f"family right       {sum(r['family'] for r in hit) / len(hit):.1%}   (>= 60 %)")
    print(f"bold right         {sum(r['bold'] for r in hit) / len(hit):.1%}   (>= 80 %)")
    print(f"shapes read as text {on_shapes}   (0); other lines not in the truth: {extra - on_shapes}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the pictures and their readings here")
    parser.add_argument("--no-timing", action="store_true", help="measure the readings only")
    parser.add_argument("--timing-only", action="store_true", help="time the readings only")
    parser.add_argument("--repeat", type=int, default=3, help="readings timed per picture (the best counts)")
    args = parser.parse_args()
    results = {False: ([], 0, 0), True: ([], 0, 0)}
    for case in ([] if args.timing_only else cases()):
        reading = read_text(case.image).to_dict()
        result = measure(case, reading)
        rows, extra, on_shapes = results[case.added]
        results[case.added] = (rows + result["rows"], extra + result["extra"], on_shapes + result["on_shapes"])
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            case.image.save(args.out / f"{case.name}.png")
            (args.out / f"{case.name}.json").write_text(json.dumps(reading, ensure_ascii=False, indent=1))
        for r in result["rows"]:
            t = r["truth"]
            got = (f'"{r["text"]}" iou {r["iou"]:.2f} size {r["size_error"]:.1%} colour {r["colour_error"]} '
                   f'family {"ok" if r["family"] else "no"} bold {"ok" if r["bold"] else "no"}') if r["found"] else "NOT FOUND"
            print(f"  {case.name:10s} {t.family:17s} {t.size:4d}px \"{t.text}\": {got}")
    if not args.timing_only:
        first, added = results[False], results[True]
        summary("first set (11 pictures)", *first)
        summary("added set (4 pictures)", *added)
        summary("all", first[0] + added[0], first[1] + added[1], first[2] + added[2])
    if args.no_timing:
        return
    print(f"\ntimes: best of {args.repeat} readings after a first one; {load()}")
    per_picture = []
    for case in cases():
        wall, cpu = timed(case.image, args.repeat)
        per_picture.append((wall, cpu, case.name))
        print(f"  {case.name:10s} {case.image.width}x{case.image.height}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    walls, cpus = sorted(p[0] for p in per_picture), sorted(p[1] for p in per_picture)
    slowest = max(per_picture)
    print(f"time 2 MP (1600 x 1200), {len(per_picture)} pictures: median {statistics.median(walls):.2f} s wall "
          f"{statistics.median(cpus):.2f} s CPU; slowest ({slowest[2]}) {slowest[0]:.2f} s wall {slowest[1]:.2f} s CPU"
          f"   (target 1.5 s)")
    big = Image.new("RGB", (6000, 4000), (245, 238, 220))
    for case, (x, y) in zip(cases()[:4], [(0, 0), (3000, 0), (0, 2000), (3000, 2000)]):
        big.paste(case.image.convert("RGB").resize((3000, 2000)), (x, y))
    wall, cpu = timed(big, args.repeat)
    print(f"time 24 MP (6000 x 4000), 4 posters: {wall:.2f} s wall, {cpu:.2f} s CPU   (target 4 s)")
    print(load())


if __name__ == "__main__":
    main()
