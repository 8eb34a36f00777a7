"""Live text without Krita: the font a block is set in, its SVG, and a layer's pixels cut around its text."""

import pathlib
import sys
import xml.etree.ElementTree as ET

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "krita_plugin"))
from layerbridge import livetext, protocol  # noqa: E402
from layerbridge.pixels import Region  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def block(**kw):
    b = {"text": "Summer Sale\nToday", "box": {"x": 100, "y": 40, "width": 300, "height": 120}, "size": 60.0,
         "color": "#C81E28", "align": "left", "editable": True,
         "font": {"family": "DejaVu Sans", "class": "sans-serif", "bold": True, "italic": False},
         "lines": [{"text": "Summer Sale", "box": {"x": 100, "y": 40, "width": 300, "height": 50}, "baseline": 90},
                   {"text": "Today", "box": {"x": 100, "y": 110, "width": 150, "height": 50}, "baseline": 160}]}
    b.update(kw)
    return b


def fixed(text):
    """A measure of a font whose glyphs are 10 px wide with 1 px of side bearing each side."""
    return 1.0, 10.0 * len(text) - 1.0, 10.0 * len(text)


def test_the_font_is_the_blocks_when_installed_else_one_of_its_class():
    families = ["DejaVu Sans", "Liberation Serif", "Noto Sans Mono"]
    assert livetext.choose_font({"family": "dejavu sans", "class": "sans-serif"}, families) == \
        livetext.Font("DejaVu Sans", "dejavu sans", False)
    assert livetext.choose_font({"family": "Gotham", "class": "serif"}, families) == \
        livetext.Font("Liberation Serif", "Gotham", True)
    assert livetext.choose_font({"family": "Menlo", "class": "monospace"}, families).family == "Noto Sans Mono"
    assert livetext.choose_font({"family": "X", "class": "script"}, []).family == "sans-serif"
    font = livetext.choose_font({"family": "Gotham", "class": "serif"}, families)
    assert livetext.layer_name(block(), font) == "Summer Sale Today (Liberation Serif for Gotham)"
    assert livetext.layer_name(block(text="x" * 60)).endswith("…") and len(livetext.layer_name(block(text="x" * 60))) == 40


@pytest.mark.parametrize("align,anchor,xs", [("left", "start", [99.0, 99.0]),
                                              ("center", "middle", [250.0, 175.0]),
                                              ("right", "end", [401.0, 251.0])])
def test_svg_sets_each_line_at_its_baseline_so_its_ink_lands_on_the_box(align, anchor, xs):
    font = livetext.Font("DejaVu Sans", "DejaVu Sans", False)
    svg = livetext.text_svg(block(align=align), 800, 600, font, fixed)
    root = ET.fromstring(svg)
    assert root.get("width") == "800px" and root.get("viewBox") == "0 0 800 600"
    text = root.find(SVG + "text")
    assert (text.get("font-family"), text.get("font-size"), text.get("fill"), text.get("font-weight"),
            text.get("font-style"), text.get("text-anchor")) == ("DejaVu Sans", "60.00", "#c81e28", "700", "normal", anchor)
    spans = text.findall(SVG + "tspan")
    assert [s.text for s in spans] == ["Summer Sale", "Today"]
    assert [float(s.get("y")) for s in spans] == [90.0, 160.0]
    assert [float(s.get("x")) for s in spans] == xs


def test_svg_escapes_the_words():
    b = block(lines=[{"text": "Fish & <Chips>", "box": {"x": 0, "y": 0, "width": 10, "height": 10}, "baseline": 9}])
    svg = livetext.text_svg(b, 10, 10, livetext.Font("A", "A", False), fixed)
    assert ET.fromstring(svg).find(SVG + "text/" + SVG + "tspan").text == "Fish & <Chips>"


def test_only_editable_blocks_with_words_become_text():
    layer = {"text": [block(), block(editable=False), block(lines=[]), block(size=None), "junk"]}
    assert protocol.editable_blocks(layer) == [block()]
    assert protocol.editable_blocks({"text": None}) == []


def test_cut_partitions_the_layer_exactly():
    w, h = 40, 30
    layer = Region(10, 20, w, h)
    data = bytes((i * 7 + 1) % 256 for i in range(w * h * 4))
    b = {"box": {"x": 15, "y": 25, "width": 10, "height": 5}, "size": 10.0}
    pieces = livetext.cut(data, layer, [b])
    assert [p.block is None for p in pieces] == [True, False]
    rest, text = pieces
    assert rest.region == layer and text.region == Region(13, 23, 14, 9)     # the box and a 2-px margin
    # every pixel in exactly one piece: laid over each other, they give the layer back
    canvas = bytearray(rest.data)
    r = text.region
    for y in range(r.height):
        row = text.data[y * r.width * 4:(y + 1) * r.width * 4]
        start = ((r.y - layer.y + y) * w + (r.x - layer.x)) * 4
        assert canvas[start:start + len(row)] == bytes(len(row))        # cut out of the rest
        canvas[start:start + len(row)] = row
    assert bytes(canvas) == data
    # a layer that is only its text leaves no rest; a block outside the layer gets an empty piece
    only = bytes(4 * w * h)
    only = only[:0] + bytes([9, 9, 9, 255]) + only[4:]
    assert [p.block is None for p in livetext.cut(only, layer, [{"box": {"x": 10, "y": 20, "width": 2, "height": 2},
                                                                  "size": 4}])] == [False]
    far = livetext.cut(data, layer, [{"box": {"x": 500, "y": 500, "width": 2, "height": 2}, "size": 4}])
    assert far[1].region.width == 0 and far[1].data == b""
