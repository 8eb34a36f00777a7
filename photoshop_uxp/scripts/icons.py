"""Draws the panel's icons (a stack of three layers) for light and dark themes, at 1x and 2x.

The manifest names each icon without its scale (icons/panel-dark.png); Photoshop loads the file with
the scale's suffix, "@1x" included (Adobe's "Icons for Your Plugins" guide).

Run with the repository's virtualenv: ../.venv/bin/python scripts/icons.py
"""
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent.parent / "icons"
GLYPH = {"dark": (216, 216, 216, 255), "light": (70, 70, 70, 255)}  # theme -> glyph colour
ACCENT = (45, 157, 120, 255)
SIZES = {"panel": 23, "plugin": 24}


def draw(size: int, colour: tuple, scale: int) -> Image.Image:
    big = size * scale * 4
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    u = big / 24.0

    def sheet(dy: float, fill: tuple | None, outline: tuple) -> None:
        pts = [(12 * u, (3 + dy) * u), (21 * u, (8 + dy) * u), (12 * u, (13 + dy) * u), (3 * u, (8 + dy) * u)]
        d.polygon(pts, fill=fill, outline=outline, width=max(1, round(1.6 * u)))

    sheet(8, None, colour)
    sheet(4, None, colour)
    sheet(0, ACCENT, colour)
    return img.resize((size * scale, size * scale), Image.LANCZOS)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for kind, size in SIZES.items():
        for theme, colour in GLYPH.items():
            for scale in (1, 2):
                draw(size, colour, scale).save(HERE / f"{kind}-{theme}@{scale}x.png", optimize=True)


if __name__ == "__main__":
    main()
