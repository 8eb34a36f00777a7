"""Synthetic layers with known elements for the element split: shapes, soft shadows, glows, text in several fonts
and sizes, icons close together, specks, confetti. Each scene is its elements, rendered one by one on the canvas, and
the layer they make composited."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/opentype/urw-base35/URWGothic-Book.otf",
    "/usr/share/fonts/opentype/urw-base35/NimbusRoman-Italic.otf",
]
PHRASES = ["Élégant café naïve", "jiggly fizz quiz", "Ünïque Ça va? Oui!", "The quick brown fox", "Grand opening 2026",
           "élève à Noël", "Mijn ijs is lijn"]


@dataclass
class Scene:
    name: str
    width: int
    height: int
    elements: list[np.ndarray] = field(default_factory=list)  # each (height, width, 4) uint8 on the whole canvas

    def add(self, image: Image.Image) -> None:
        self.elements.append(np.asarray(image.convert("RGBA")).copy())

    def layer(self) -> np.ndarray:
        canvas = Image.new("RGBA", (self.width, self.height), (0, 0, 0, 0))
        for e in self.elements:
            canvas.alpha_composite(Image.fromarray(e, "RGBA"))
        return np.asarray(canvas).copy()

    def blank(self) -> Image.Image:
        return Image.new("RGBA", (self.width, self.height), (0, 0, 0, 0))


@lru_cache(maxsize=64)
def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _colour(rng: random.Random, alpha: int = 255) -> tuple[int, int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256), alpha


def _shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if kind == "rect":
        draw.rectangle(box, fill=fill)
    elif kind == "ellipse":
        draw.ellipse(box, fill=fill)
    elif kind == "rounded":
        draw.rounded_rectangle(box, radius=(x1 - x0) // 5, fill=fill)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif kind == "star":
        draw.regular_polygon(((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2), 5, fill=fill)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=max(2, (x1 - x0) // 8))


def _smooth(image: Image.Image, scale: int = 4) -> Image.Image:
    return image.resize((image.width // scale, image.height // scale), Image.Resampling.LANCZOS)


def shapes(seed: int, shadow: str = "") -> Scene:
    """A row of separate shapes, each with an optional soft drop shadow or glow."""
    rng = random.Random(seed)
    kinds = ["rect", "ellipse", "rounded", "triangle", "star", "ring"]
    n = rng.randint(2, 5)
    s = Scene(f"shapes-{shadow or 'plain'}-{seed}", 200 + 260 * n, 420)
    for k in range(n):
        size = rng.randint(80, 180)
        x, y = 60 + 260 * k + rng.randint(0, 20), rng.randint(60, 420 - size - 60)
        big = Image.new("RGBA", (s.width * 4, s.height * 4), (0, 0, 0, 0))
        _shape(ImageDraw.Draw(big), kinds[(seed + k) % len(kinds)], (x * 4, y * 4, (x + size) * 4, (y + size) * 4),
               _colour(rng))
        body = _smooth(big)
        if shadow:
            alpha = body.getchannel("A")
            halo = Image.new("RGBA", body.size, (0, 0, 0, 0) if shadow == "shadow" else (255, 240, 120, 0))
            offset = (12, 14) if shadow == "shadow" else (0, 0)
            moved = Image.new("L", body.size, 0)
            moved.paste(alpha, offset)
            blurred = moved.filter(ImageFilter.GaussianBlur(10 if shadow == "shadow" else 14))
            halo.putalpha(blurred.point(lambda v: int(v * (0.55 if shadow == "shadow" else 0.9))))
            halo.alpha_composite(body)
            body = halo
        s.add(body)
    return s


def text_lines(seed: int) -> Scene:
    """Lines of text in several fonts and sizes (14-220 px), with accents and i-dots, far enough apart."""
    rng = random.Random(seed)
    sizes = [14, 18, 24, 36, 56, 90, 140, 220]
    picked = rng.sample(sizes, 3)
    probe = Image.new("RGBA", (10, 10))
    lines = []
    for size in picked:
        f = font(FONTS[rng.randrange(len(FONTS))], size)
        text = rng.choice(PHRASES)
        box = ImageDraw.Draw(probe).textbbox((0, 0), text, font=f)
        lines.append((f, text, box))
    width = max(b[2] for _, _, b in lines) + 80
    height = sum(b[3] - b[1] + 60 + f.size for f, _, b in lines) + 40
    s = Scene(f"text-{seed}", width, height)
    y = 30
    for f, text, box in lines:
        image = s.blank()
        ImageDraw.Draw(image).text((40 - box[0], y - box[1]), text, font=f, fill=_colour(rng))
        s.add(image)
        y += box[3] - box[1] + 60 + f.size
    return s


def paragraph(seed: int) -> Scene:
    """A heading over a paragraph of left-, centre- or right-aligned lines: two elements."""
    rng = random.Random(seed)
    path = FONTS[seed % len(FONTS)]
    size = rng.choice([14, 16, 20, 28])
    body = font(path, size)
    head = font(path, size * 3)
    words = "lorem ipsum dolor sit amet élan vital jig fizz quiz naïve déjà vu".split()
    lines = [" ".join(rng.sample(words, rng.randint(3, 6))) for _ in range(rng.randint(3, 6))]
    align = ["left", "center", "right"][seed % 3]
    s = Scene(f"paragraph-{align}-{seed}", size * 40, size * (len(lines) * 2 + 10))
    image = s.blank()
    draw = ImageDraw.Draw(image)
    draw.text((size * 2, size), "Headline Été", font=head, fill=_colour(rng))
    s.add(image)
    image = s.blank()
    ImageDraw.Draw(image).multiline_text((size * 2, size * 6), "\n".join(lines), font=body, fill=_colour(rng),
                                         spacing=size // 3, align=align)
    s.add(image)
    return s


def icons(seed: int, kinds: tuple[str, ...] = ("ellipse", "rect", "rounded")) -> Scene:
    """Small icons in a row close together (gaps of 6-12 px at 32-48 px)."""
    rng = random.Random(seed)
    size = rng.choice([32, 40, 48])
    gap = rng.randint(6, 12)
    n = rng.randint(3, 6)
    s = Scene(f"icons-{'-'.join(kinds)}-{seed}", 40 + n * (size + gap) + 40, size + 80)
    for k in range(n):
        big = Image.new("RGBA", (s.width * 4, s.height * 4), (0, 0, 0, 0))
        x = 40 + k * (size + gap)
        _shape(ImageDraw.Draw(big), kinds[(k + seed) % len(kinds)],
               (x * 4, 40 * 4, (x + size) * 4, (40 + size) * 4), _colour(rng))
        s.add(_smooth(big))
    return s


def poster(seed: int) -> Scene:
    """A headline with a soft shadow, a paragraph, a row of icons and a glowing badge on one layer."""
    rng = random.Random(seed)
    s = Scene(f"poster-{seed}", 1400, 900)
    path = FONTS[seed % len(FONTS)]
    head = s.blank()
    ImageDraw.Draw(head).text((60, 40), rng.choice(PHRASES), font=font(path, 110), fill=_colour(rng))
    shadow = Image.new("RGBA", head.size, (0, 0, 0, 0))
    moved = Image.new("L", head.size, 0)
    moved.paste(head.getchannel("A"), (6, 8))
    shadow.putalpha(moved.filter(ImageFilter.GaussianBlur(5)).point(lambda v: v // 2))
    shadow.alpha_composite(head)
    s.add(shadow)
    body = s.blank()
    lines = [" ".join(rng.sample(PHRASES, 2)) for _ in range(4)]
    ImageDraw.Draw(body).multiline_text((60, 260), "\n".join(lines), font=font(path, 30), fill=_colour(rng),
                                        spacing=10)
    s.add(body)
    for k in range(4):
        big = Image.new("RGBA", (s.width * 4, s.height * 4), (0, 0, 0, 0))
        x = 60 + k * 70
        _shape(ImageDraw.Draw(big), ["ellipse", "rect", "rounded", "ellipse"][k],
               (x * 4, 560 * 4, (x + 56) * 4, 616 * 4), _colour(rng))
        s.add(_smooth(big))
    badge = Image.new("RGBA", (s.width * 4, s.height * 4), (0, 0, 0, 0))
    _shape(ImageDraw.Draw(badge), "ellipse", (1000 * 4, 500 * 4, 1250 * 4, 750 * 4), _colour(rng))
    badge = _smooth(badge)
    glow = Image.new("RGBA", badge.size, (255, 255, 200, 0))
    glow.putalpha(badge.getchannel("A").filter(ImageFilter.GaussianBlur(18)))
    glow.alpha_composite(badge)
    ImageDraw.Draw(glow).text((1060, 600), "SALE", font=font(FONTS[3], 50), fill=(255, 255, 255, 255))
    s.add(glow)
    return s


def specks(seed: int) -> Scene:
    """Two shapes with faint specks (a few pixels of low alpha) around them: two elements."""
    rng = random.Random(seed)
    s = Scene(f"specks-{seed}", 600, 300)
    for x in (60, 360):
        image = s.blank()
        ImageDraw.Draw(image).ellipse((x, 60, x + 180, 240), fill=_colour(rng))
        a = np.asarray(image).copy()
        for _ in range(6):
            sx, sy = x + rng.randint(-40, 220), rng.choice([rng.randint(20, 45), rng.randint(255, 285)])
            a[sy:sy + 2, sx:sx + 2] = (90, 90, 90, rng.randint(8, 40))
        s.elements.append(a)
    return s


def confetti(seed: int, count: int = 150) -> Scene:
    """More than 64 small pieces on a grid: the split returns 64 elements."""
    rng = random.Random(seed)
    s = Scene(f"confetti-{seed}", 1500, 1000)
    image = s.blank()
    draw = ImageDraw.Draw(image)
    cells = rng.sample(range(15 * 10), count)
    for c in cells:
        x, y = (c % 15) * 100 + rng.randint(5, 60), (c // 15) * 100 + rng.randint(5, 60)
        draw.rectangle((x, y, x + rng.randint(6, 30), y + rng.randint(6, 30)), fill=_colour(rng))
    s.add(image)
    s.name += f"-{count}"
    return s


def edge_cases() -> list[Scene]:
    out = []
    s = Scene("transparent", 64, 48)
    out.append(s)
    s = Scene("one-pixel", 1, 1)
    s.elements.append(np.array([[[200, 10, 10, 255]]], np.uint8))
    out.append(s)
    s = Scene("wide-30000x1", 30000, 1)
    a = np.zeros((1, 30000, 4), np.uint8)
    a[0, 100:9000] = (10, 200, 10, 255)
    s.elements.append(a.copy())
    b = np.zeros_like(a)
    b[0, 20000:29990] = (10, 10, 200, 180)
    s.elements.append(b)
    out.append(s)
    return out


def all_scenes() -> list[Scene]:
    scenes = []
    for seed in range(4):
        scenes += [shapes(seed), shapes(seed, "shadow"), shapes(seed, "glow"), icons(seed), specks(seed),
                   icons(seed, ("star", "triangle", "ring")), poster(seed)]
    scenes += [text_lines(seed) for seed in range(12)]
    scenes += [paragraph(seed) for seed in range(12)]
    scenes += [confetti(0), confetti(1, 64)]
    scenes += edge_cases()
    return scenes


def alpha_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Alpha IoU of two alpha planes: Σ min / Σ max (1 for two empty planes)."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    top = np.maximum(a, b).sum()
    return float(np.minimum(a, b).sum() / top) if top else 1.0


def on_canvas(layer, width: int, height: int) -> np.ndarray:
    out = np.zeros((height, width, 4), np.uint8)
    out[layer.y:layer.y + layer.height, layer.x:layer.x + layer.width] = layer.pixels
    return out


def write_scenes(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for s in all_scenes():
        Image.fromarray(s.layer(), "RGBA").save(folder / f"{s.name}.png")
