"""Text reading (backend.text): rendered text read back with its words, box, size, colour and font."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

pytest.importorskip("rapidocr_onnxruntime")

from backend.text.reading import read_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEJAVU_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
LIBERATION_SERIF = "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf"
NOTO_CJK = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"


def _font(path: str, size: int, index: int = 0) -> ImageFont.FreeTypeFont:
    if not Path(path).exists():
        pytest.skip(f"{path} is not installed (scripts/apt-packages-test.txt)")
    return ImageFont.truetype(path, size, index=index)


def _render(size=(900, 500), background=(250, 246, 236), items=()):
    image = Image.new("RGBA" if len(background) == 4 else "RGB", size, background)
    boxes = []
    for xy, text, font, colour in items:
        draw = ImageDraw.Draw(image)
        draw.text(xy, text, font=font, fill=colour)
        boxes.append(draw.textbbox(xy, text, font=font))
    return image, boxes


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_bold_headline_and_a_serif_line_come_back_with_words_size_colour_and_font():
    image, boxes = _render(items=[
        ((40, 40), "Summer Sale", _font(DEJAVU_BOLD, 96), (200, 30, 40)),
        ((40, 300), "Everything must go", _font(LIBERATION_SERIF, 40), (30, 30, 90)),
    ])
    blocks = read_text(image).to_dict()["blocks"]
    assert [b["text"] for b in blocks] == ["Summer Sale", "Everything must go"]
    head, line = blocks
    assert abs(head["size"] - 96) / 96 < 0.05 and abs(line["size"] - 40) / 40 < 0.05
    assert head["color"] == "#c81e28" and line["color"] == "#1e1e5a"
    assert head["font"] == {"family": "DejaVu Sans", "class": "sans-serif", "bold": True, "italic": False}
    assert line["font"]["family"] == "Liberation Serif" and not line["font"]["bold"]
    assert line["font"]["class"] == "serif"
    box = head["box"]
    assert _iou((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]), boxes[0]) > 0.8
    assert head["lines"][0]["baseline"] == pytest.approx(boxes[0][3], abs=3)  # no descender: the ink ends on it
    assert head["editable"] and line["editable"]


def test_a_paragraph_is_one_block_of_lines_and_centred_lines_are_centred():
    font = _font(LIBERATION_SERIF, 34)
    words = ["Grand opening of the", "new city gallery on", "the first of June"]
    image = Image.new("RGB", (900, 400), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(words):
        draw.text((450, 60 + 44 * i), line, font=font, fill="black", anchor="ma")
    (block,) = read_text(image).blocks
    assert block.text == "\n".join(words)
    assert block.align == "center"
    assert [l.baseline for l in block.lines] == sorted(l.baseline for l in block.lines)


def test_a_headline_over_a_smaller_subtitle_close_below_is_two_blocks():
    image = Image.new("RGB", (1200, 500), (20, 30, 60))
    draw = ImageDraw.Draw(image)
    draw.text((600, 60), "Grand Opening", font=_font(DEJAVU_BOLD, 80), fill=(250, 240, 200), anchor="ma")
    draw.text((600, 190), "New City Gallery", font=_font(LIBERATION_SERIF, 56), fill=(250, 240, 200), anchor="ma")
    head, sub = read_text(image).blocks
    assert (head.text, sub.text) == ("Grand Opening", "New City Gallery")
    assert abs(head.size - 80) / 80 < 0.05 and abs(sub.size - 56) / 56 < 0.05
    assert head.font.bold and not sub.font.bold


def test_accents_the_recogniser_lacks_are_read_from_the_glyphs():
    image, _ = _render(size=(1000, 200), items=[((30, 50), "Größe über Straße", _font(LIBERATION_SERIF, 64), "black")])
    (block,) = read_text(image).blocks
    assert block.text == "Größe über Straße"


def test_a_chinese_line_on_a_transparent_layer():
    image, _ = _render(size=(800, 200), background=(0, 0, 0, 0),
                       items=[((30, 50), "夏季大促销全场五折", _font(NOTO_CJK, 64, index=2), (255, 255, 255, 255))])
    (block,) = read_text(image).blocks
    assert block.text == "夏季大促销全场五折"
    assert block.font.family == "Noto Sans CJK SC"
    assert block.color == "#ffffff"


def test_shapes_alone_are_not_text():
    image = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((50, 50, 300, 250), fill=(40, 120, 200))
    draw.ellipse((400, 100, 650, 350), fill=(230, 160, 20))
    draw.rectangle((100, 400, 120, 580), fill="black")
    draw.ellipse((500, 450, 560, 510), fill=(200, 40, 60))
    assert read_text(image).blocks == []


def test_rotated_text_stays_pixels():
    line = Image.new("RGBA", (900, 140), (0, 0, 0, 0))
    ImageDraw.Draw(line).text((20, 20), "Rotated headline", font=_font(DEJAVU_BOLD, 80), fill="black")
    image = Image.new("RGB", (1000, 700), "white")
    rotated = line.rotate(20, expand=True)
    image.paste(rotated, (20, 150), rotated)
    blocks = read_text(image).blocks
    assert blocks and not any(b.editable for b in blocks)


@pytest.mark.parametrize("size,mode", [((1, 1), "RGBA"), ((300, 200), "RGBA"), ((30000, 40), "RGB"), ((3, 3), "L"),
                                       ((2000, 1500), "RGBA"), ((1, 30000), "RGB"), ((1600, 1200), "RGB")])
def test_degenerate_pictures_give_no_blocks_quickly(size, mode):
    image = Image.new(mode, size, 0 if mode != "RGB" else (255, 255, 255))
    start = time.perf_counter()
    reading = read_text(image)
    assert reading.blocks == [] and (reading.width, reading.height) == size
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("axis", [0, 1])
def test_a_plain_gradient_gives_no_blocks(axis):
    ramp = np.linspace(0, 255, 1600).astype(np.uint8)
    pixels = np.repeat(np.repeat(ramp[:, None, None] if axis == 0 else ramp[None, :, None], 1200, axis=1 - axis), 3, -1)
    assert read_text(pixels).blocks == []


def test_a_busy_picture_without_text_gives_no_blocks():
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:900, 0:1200].astype(np.float32)
    pixels = np.stack([80 + 100 * x / 1200, 60 + 120 * y / 900, 160 - 60 * x / 1200], axis=-1)
    image = Image.fromarray(np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        cx, cy, r = rng.integers(0, 1200), rng.integers(0, 900), rng.integers(20, 120)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    assert read_text(image).blocks == []


def test_a_30000_px_wide_banner_with_words_is_read_without_failing():
    image, _ = _render(size=(30000, 300), background=(255, 255, 255),
                       items=[((100 + 6000 * i, 80), "Banner text", _font(DEJAVU_BOLD, 120), "black") for i in range(5)])
    reading = read_text(image)
    assert (reading.width, reading.height) == (30000, 300)
    assert all(b.box.right <= 30000 and b.box.bottom <= 300 for b in reading.blocks)


def test_lines_far_apart_on_a_flat_background_come_back_where_they_are():
    # the detector's copy leaves out most of the empty background between them: their boxes map back
    image, boxes = _render(size=(2400, 1800), background=(235, 240, 250), items=[
        ((4, 4), "Top left corner", _font(DEJAVU_BOLD, 48), (20, 20, 20)),
        ((1500, 900), "In the middle", _font(LIBERATION_SERIF, 40), (120, 20, 20)),
        ((1900, 1730), "Bottom right", _font(DEJAVU_BOLD, 56), (20, 60, 120)),
    ])
    blocks = read_text(image).blocks
    assert [b.text for b in blocks] == ["Top left corner", "In the middle", "Bottom right"]
    for block, box in zip(blocks, boxes):
        b = block.box
        assert _iou((b.x, b.y, b.right, b.bottom), box) > 0.8


def test_an_opaque_picture_reads_the_same_as_rgb_rgba_or_an_array():
    image, _ = _render(size=(700, 200), items=[((30, 50), "Fresh bread", _font(DEJAVU_BOLD, 64), (10, 90, 50))])
    readings = [read_text(x).to_dict() for x in (image, image.convert("RGBA"), np.asarray(image.convert("RGBA")))]
    assert readings[0]["blocks"] and readings[0] == readings[1] == readings[2]


def test_the_command_writes_the_json_shape_of_docs_text_md(tmp_path):
    image, _ = _render(items=[((40, 40), "Fresh bread", _font(DEJAVU_BOLD, 72), (10, 90, 50))])
    image.save(tmp_path / "in.png")
    out = subprocess.run([sys.executable, "-m", "backend", "text", str(tmp_path / "in.png"), "--json", "-"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"width", "height", "blocks"} and (data["width"], data["height"]) == (900, 500)
    (block,) = data["blocks"]
    assert set(block) == {"text", "box", "lines", "size", "color", "align", "font", "editable"}
    assert set(block["box"]) == {"x", "y", "width", "height"}
    assert set(block["lines"][0]) == {"text", "box", "baseline"}
    assert set(block["font"]) == {"family", "class", "bold", "italic"}
    assert block["text"] == "Fresh bread" and block["color"] == "#0a5a32"
    subprocess.run([sys.executable, "-m", "backend", "text", str(tmp_path / "in.png"), "--json",
                    str(tmp_path / "out.json")], cwd=ROOT, check=True, timeout=120)
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8")) == data
    bad = subprocess.run([sys.executable, "-m", "backend", "text", str(tmp_path / "missing.png"), "--json", "-"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "missing.png" in bad.stderr
