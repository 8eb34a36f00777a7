"""Text blocks of a result (docs/text.md) as live text: the SVG `<text>` a Krita vector layer takes, the font it
uses, and the layer's pixels cut into what holds the text and the rest. Qt only to measure glyphs (qt_measure)."""

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple
from xml.sax.saxutils import escape, quoteattr

from .pixels import Region

NAME_CHARACTERS = 40
# installed families tried, in order, for a block whose family Krita lacks, by the block's font class
CLASS_FAMILIES: Dict[str, Tuple[str, ...]] = {
    "sans-serif": ("DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica", "Nimbus Sans"),
    "serif": ("DejaVu Serif", "Liberation Serif", "Noto Serif", "Times New Roman", "Nimbus Roman"),
    "monospace": ("DejaVu Sans Mono", "Liberation Mono", "Noto Sans Mono", "Courier New", "Nimbus Mono PS"),
    "display": ("DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial"),
    "script": ("URW Chancery L", "Z003", "DejaVu Serif", "Liberation Serif"),
}
ANCHORS = {"left": "start", "center": "middle", "right": "end"}

# measure(text) -> (ink left, ink right, advance) in pixels from the pen's origin, for one font at one size
Measure = Callable[[str], Tuple[float, float, float]]


class Font(NamedTuple):
    family: str         # the family the text layer uses
    wanted: str         # the family the server matched
    substituted: bool   # Krita lacks `wanted`: `family` is an installed one of the same class


def choose_font(font: dict, families: Sequence[str]) -> Font:
    """The block's family when Krita has it (by name, case aside), else an installed family of its class
    (CLASS_FAMILIES), else the class's generic name, which Qt resolves."""
    wanted = str(font.get("family") or "")
    by_lower = {f.lower(): f for f in families}
    if wanted and wanted.lower() in by_lower:
        return Font(by_lower[wanted.lower()], wanted, False)
    kind = str(font.get("class") or "sans-serif")
    for family in CLASS_FAMILIES.get(kind, CLASS_FAMILIES["sans-serif"]):
        if family.lower() in by_lower:
            return Font(by_lower[family.lower()], wanted, True)
    return Font(kind if kind in ("serif", "sans-serif", "monospace") else "sans-serif", wanted, True)


def layer_name(block: dict, font: Optional[Font] = None) -> str:
    """The text's first words (NAME_CHARACTERS at most); with a substituted font, which one stands in."""
    text = " ".join(str(block.get("text") or "").split())
    name = text if len(text) <= NAME_CHARACTERS else text[:NAME_CHARACTERS - 1].rstrip() + "…"
    if font is not None and font.substituted and font.wanted:
        name += " (%s for %s)" % (font.family, font.wanted)
    return name or "Text"


def _colour(value: object) -> str:
    text = str(value or "")
    if len(text) == 7 and text[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in text[1:]):
        return text.lower()
    return "#000000"


def line_x(line: dict, align: str, measure: Measure) -> float:
    """The x of a line's text anchor (ANCHORS[align]) that puts its glyphs' ink where the line's box is."""
    box = line.get("box") or {}
    left, width = float(box.get("x", 0)), float(box.get("width", 0))
    ink_left, ink_right, advance = measure(str(line.get("text") or ""))
    if align == "center":
        return left + width / 2 + advance / 2 - (ink_left + ink_right) / 2
    if align == "right":
        return left + width + advance - ink_right
    return left - ink_left


def text_svg(block: dict, width: int, height: int, font: Font, measure: Measure) -> str:
    """An SVG document of the canvas's size (`width` × `height` pixels) holding the block as one `<text>`: one
    `<tspan>` per line at its baseline, its size (font-size in pixels), fill, weight, style and alignment."""
    align = block.get("align") if block.get("align") in ANCHORS else "left"
    style = block.get("font") or {}
    attributes = [
        ("font-family", font.family), ("font-size", "%.2f" % float(block["size"])),
        ("fill", _colour(block.get("color"))), ("font-weight", "700" if style.get("bold") else "400"),
        ("font-style", "italic" if style.get("italic") else "normal"), ("text-anchor", ANCHORS[align]),
    ]
    spans = []
    for line in block.get("lines") or ():
        text = str(line.get("text") or "")
        if not text.strip():
            continue
        spans.append('<tspan x="%.2f" y="%.2f">%s</tspan>' % (line_x(line, align, measure), float(line["baseline"]),
                                                             escape(text)))
    head = " ".join("%s=%s" % (k, quoteattr(v)) for k, v in attributes)
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%dpx" height="%dpx" viewBox="0 0 %d %d">'
            '<text %s>%s</text></svg>' % (width, height, width, height, head, "".join(spans)))


def cut_region(block: dict, layer: Region) -> Optional[Region]:
    """The part of a layer (in document pixels) whose pixels go with a block's text: its ink box with a margin
    for anti-aliasing, inside the layer; None when they do not meet."""
    box = block.get("box") or {}
    pad = max(2, int(round(float(block.get("size") or 0) * 0.1)))
    x0 = max(layer.x, int(box.get("x", 0)) - pad)
    y0 = max(layer.y, int(box.get("y", 0)) - pad)
    x1 = min(layer.x + layer.width, int(box.get("x", 0)) + int(box.get("width", 0)) + pad)
    y1 = min(layer.y + layer.height, int(box.get("y", 0)) + int(box.get("height", 0)) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    return Region(x0, y0, x1 - x0, y1 - y0)


class Piece(NamedTuple):
    region: Region
    data: bytes             # 4 bytes a pixel
    block: Optional[dict]   # the text block these pixels hold; None: the rest of the layer


def cut(data: bytes, layer: Region, blocks: List[dict]) -> List[Piece]:
    """A layer's pixels (4 bytes a pixel, `layer` in document pixels) cut into the rest of the layer and, for each
    block, the pixels under it (cut_region; a pixel under two blocks goes with the first). Every pixel is in exactly
    one piece, so together they composite to the layer exactly. The rest comes first, then the blocks' pieces in
    `blocks`' order; a piece with no visible pixel is left out (the rest too, when the text was all there was)."""
    rest = bytearray(data)
    pieces = []
    stride = layer.width * 4
    for block in blocks:
        region = cut_region(block, layer)
        if region is None:
            pieces.append(Piece(Region(0, 0, 0, 0), b"", block))
            continue
        x0 = (region.x - layer.x) * 4
        rows = []
        for y in range(region.y - layer.y, region.y - layer.y + region.height):
            start = y * stride + x0
            end = start + region.width * 4
            rows.append(bytes(rest[start:end]))
            rest[start:end] = bytes(region.width * 4)
        pieces.append(Piece(region, b"".join(rows), block))
    out = [Piece(layer, bytes(rest), None)] if any(rest[3::4]) else []
    return out + [p for p in pieces]


def qt_families() -> List[str]:
    """The font families Krita's text can use (Qt's font database)."""
    from .qt import QT6, QtGui
    return list(QtGui.QFontDatabase.families() if QT6 else QtGui.QFontDatabase().families())


def qt_measure(family: str, size: float, bold: bool, italic: bool) -> Measure:
    """Measures text in `family` at `size` pixels (em) with Qt, as Krita lays it out: the glyphs' ink from the pen's
    origin and the advance. Measured at 1000 px and scaled, so hinting at small sizes does not skew it."""
    from .qt import QtCore, QtGui
    reference = 1000.0
    font = QtGui.QFont(family)
    font.setPixelSize(int(reference))
    font.setBold(bool(bold))
    font.setItalic(bool(italic))
    metrics = QtGui.QFontMetricsF(font)
    scale = float(size) / reference

    def measure(text: str) -> Tuple[float, float, float]:
        path = QtGui.QPainterPath()
        path.addText(QtCore.QPointF(0, 0), font, text)
        ink = path.boundingRect()
        advance = metrics.horizontalAdvance(text) if hasattr(metrics, "horizontalAdvance") else metrics.width(text)
        return ink.left() * scale, ink.right() * scale, advance * scale
    return measure
