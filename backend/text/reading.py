"""Reading text from a picture or a layer: lines detected and read, their ink measured, grouped into blocks of one
style, and each block's font fitted (docs/text.md)."""

from __future__ import annotations

import math

from ..imaging.opencv import cv2
import numpy as np
from PIL import Image

from . import ocr
from .accents import restore_accents
from .blocks import Box, TextBlock, TextFont, TextLine, TextReading
from .accents import VARIANTS
from .fit import FontFit, best_face, fit_font, forget_renderings, render, size_at
from .fonts import faces_for
from .ink import Ink, line_ink

MAX_ANGLE = 3.0  # degrees: a line tilted more stays pixels
MIN_FIT = 0.45  # a block whose best face matches its ink less than this stays pixels
FLAT_BACKGROUND = 12.0  # colour deviation under the line above which the text is painted over other content
RECHECK_FIT = 0.6  # a best match below this is tried again with accents restored
RECHECK_ROUNDS = 3
SHAPE_MIN_FIT = 0.5  # a one- or two-character reading matching no face this well is a shape, not text


class _Line:
    def __init__(self, text: str, score: float, quad: np.ndarray, ink: Ink, angle: float):
        self.text, self.score, self.quad, self.ink, self.angle = text, score, quad, ink, angle

    @property
    def box(self) -> Box:
        return self.ink.box

    @property
    def height(self) -> float:
        return float(np.linalg.norm(self.quad[0] - self.quad[3]) + np.linalg.norm(self.quad[1] - self.quad[2])) / 2

    def observed(self) -> np.ndarray:
        b, (ox, oy) = self.ink.box, self.ink.origin
        return self.ink.coverage[b.y - oy : b.bottom - oy, b.x - ox : b.right - ox]


def _pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """H×W×4 uint8 for a picture with transparency, H×W×3 for an opaque one (a 24 MP photo is not copied into RGBA
    only to be found opaque)."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.shape[2] == 4 and arr[..., 3].min() == 255:
            arr = arr[..., :3]
        return np.ascontiguousarray(arr.astype(np.uint8, copy=False))
    if image.mode == "RGB":
        return np.asarray(image)
    if "transparency" in image.info or {"A", "a"} & set(image.getbands()):
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _flatten(pixels: np.ndarray) -> np.ndarray:
    """RGB for the recogniser: transparent parts become a colour far from the layer's own."""
    if pixels.shape[2] == 3:
        return pixels
    if pixels[..., 3].min() == 255:
        return np.ascontiguousarray(pixels[..., :3])
    rgba = pixels
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    opaque = rgba[..., 3] > 127
    mean = rgba[..., :3][opaque].mean(axis=0) if opaque.any() else np.zeros(3)
    backdrop = 0.0 if float(mean @ [0.299, 0.587, 0.114]) > 140 else 255.0
    return (rgba[..., :3] * alpha + backdrop * (1 - alpha)).round().astype(np.uint8)


def _crop_quad(rgb: np.ndarray, quad: np.ndarray) -> np.ndarray:
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    return cv2.warpPerspective(rgb, matrix, (max(1, width), max(1, height)), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)


def _hex(colour: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % colour


def _same_block(last: _Line, line: _Line) -> bool:
    gap = line.box.y - last.box.bottom
    ratio = line.height / last.height
    overlap = min(last.box.right, line.box.right) - max(last.box.x, line.box.x)
    colour = np.linalg.norm(np.subtract(last.ink.color, line.ink.color))
    return (-0.2 * last.height <= gap <= 0.9 * last.height and 0.8 <= ratio <= 1.25 and overlap > 0
            and colour < 40 and abs(line.angle) <= MAX_ANGLE and abs(last.angle) <= MAX_ANGLE)


def _same_row(left: _Line, right: _Line) -> bool:
    """Two pieces of one line the detector cut apart at a wide word space."""
    h = min(left.height, right.height)
    overlap = min(left.box.bottom, right.box.bottom) - max(left.box.y, right.box.y)
    gap = right.box.x - left.box.right
    return (overlap >= 0.6 * min(left.box.height, right.box.height) and 0.75 <= left.height / right.height <= 1.33
            and -0.1 * h <= gap <= 1.2 * h and abs(left.angle) <= MAX_ANGLE and abs(right.angle) <= MAX_ANGLE
            and np.linalg.norm(np.subtract(left.ink.color, right.ink.color)) < 40)


def _merge_rows(lines: list[_Line], part: np.ndarray) -> list[_Line]:
    merged: list[_Line] = []
    for line in sorted(lines, key=lambda l: l.box.x):
        for i, m in enumerate(merged):
            if _same_row(m, line):
                corners = np.concatenate([m.quad, line.quad])
                (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
                quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
                ink = line_ink(part, (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))))
                if ink is not None:
                    merged[i] = _Line(m.text + " " + line.text, min(m.score, line.score), quad, ink, 0.0)
                    break
        else:
            merged.append(line)
    return merged


def _alignment(lines: list[_Line], width: int) -> str:
    if len(lines) == 1:
        box = lines[0].box
        return "center" if abs(box.x + box.width / 2 - width / 2) < 0.01 * width + 2 else "left"
    lefts = np.array([l.box.x for l in lines], dtype=float)
    rights = np.array([l.box.right for l in lines], dtype=float)
    spreads = {"left": np.ptp(lefts), "center": np.ptp((lefts + rights) / 2), "right": np.ptp(rights)}
    return min(("left", "center", "right"), key=lambda k: spreads[k] - (0.5 if k == "left" else 0))


def read_text(image: Image.Image | np.ndarray) -> TextReading:
    """The text blocks of a picture or an RGBA layer.

    Args:
        image: a PIL image (any mode) or an H×W×3/4 uint8 array.
    """
    try:
        return _read(_pixels(image))
    finally:
        forget_renderings()


def _read(pixels: np.ndarray) -> TextReading:
    """read_text of an H×W×4 (or opaque H×W×3) picture."""
    height, width = pixels.shape[:2]
    reading = TextReading(width, height)
    if width < 4 or height < 4:
        return reading
    part, ox, oy = pixels, 0, 0
    if pixels.shape[2] == 4:
        visible = pixels[..., 3] > 0
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        if rows.size == 0:
            return reading
        ys, xs = rows[[0, -1]], cols[[0, -1]]  # only the layer's visible part is searched
        room = 24  # transparent room around the visible part: glyphs touching its edge are still found
        ox, oy = max(0, int(xs.min()) - room), max(0, int(ys.min()) - room)
        part = pixels[oy : int(ys.max()) + 1 + room, ox : int(xs.max()) + 1 + room]
    if part.shape[0] < 4 or part.shape[1] < 4:
        return reading
    rgb = _flatten(part)
    quads = ocr.detect(rgb)
    if not quads:
        return reading
    crops = [_crop_quad(rgb, q) for q in quads]
    lines: list[_Line] = []
    for quad, crop, (text, score) in zip(quads, crops, ocr.recognize(crops)):
        text = text.strip()
        if not text or score < ocr.MIN_SCORE:
            continue
        top = quad[1] - quad[0]
        angle = math.degrees(math.atan2(top[1], top[0]))
        x0, y0 = np.floor(quad.min(axis=0)).astype(int)
        x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
        ink = line_ink(part, (int(x0), int(y0), int(x1), int(y1)))
        if ink is not None:
            lines.append(_Line(text, score, quad, ink, angle))
    lines = _merge_rows(lines, part)
    lines.sort(key=lambda l: (l.box.y, l.box.x))

    groups: list[list[_Line]] = []
    for line in lines:
        for group in reversed(groups[-4:]):
            if _same_block(group[-1], line):
                group.append(line)
                break
        else:
            groups.append([line])

    for block in (b for group in groups for b in _blocks(group, part.shape[1])):
        for l in block.lines:  # back to the whole image's pixels
            l.box = Box(l.box.x + ox, l.box.y + oy, l.box.width, l.box.height)
            l.baseline += oy
        reading.blocks.append(block)
    reading.blocks.sort(key=lambda b: (b.box.y, b.box.x))
    return reading


def _accented(line: _Line, face, size: float) -> str:
    rendered = render(face, max(4, round(size)), line.text)
    sized = size_at(face, line.text, line.box.height, line.box.width)
    if rendered is None or sized is None:
        return line.text
    ox, oy = line.ink.origin
    pen_x = line.box.x - ox - rendered.left
    return restore_accents(line.text, line.ink.coverage, face, sized[0], pen_x, line.box.y + sized[1] - oy)


def _fit_with_accents(line: _Line, faces, fitted: FontFit) -> FontFit:
    """A poor match may come from letters read without their accents (ü read as i changes the widths): the accents
    the best face finds are restored and the faces ranked again, until the reading settles."""
    text, best = line.text, fitted
    for _ in range(RECHECK_ROUNDS - 1):  # the first ranking is `fitted`
        accented = _accented(line if text == line.text else _Line(text, line.score, line.quad, line.ink, line.angle),
                             best.face, best.size)
        if accented == text:
            break
        text = accented
        found = best_face(line.observed(), text, faces)
        if found is None:
            break
        score, face = found
        sized = size_at(face, text, line.box.height, line.box.width)
        if sized is None:
            break
        best = FontFit(face, score, sized[0])
    return best


def _blocks(group: list[_Line], width: int) -> list[TextBlock]:
    """The block of a group of lines, or several when the fitted face sets its lines at different sizes (a headline
    over a subtitle that the detector's line heights could not tell apart)."""
    longest = max(group, key=lambda l: l.box.width)
    faces = faces_for("".join(l.text for l in group))
    fitted = fit_font(longest.observed(), longest.text, faces)
    if fitted is not None and fitted.score < RECHECK_FIT and any(c in VARIANTS for c in longest.text):
        fitted = _fit_with_accents(longest, faces, fitted)
    if fitted is not None and len(group) > 1:
        sizes = [size_at(fitted.face, l.text, l.box.height, l.box.width) for l in group]
        cuts = [i for i in range(1, len(group)) if sizes[i] and sizes[i - 1]
                and not 0.8 <= sizes[i][0] / sizes[i - 1][0] <= 1.25]
        if cuts:
            runs = [group[a:b] for a, b in zip([0] + cuts, cuts + [len(group)])]
            return [b for run in runs for b in _blocks(run, width)]
    block = _block(group, width, fitted)
    return [] if block is None else [block]


def _block(group: list[_Line], width: int, fitted: FontFit | None) -> TextBlock | None:
    longest = max(group, key=lambda l: l.box.width)
    score = fitted.score if fitted else 0.0
    if len(group) == 1 and len(longest.text) <= 2 and score < SHAPE_MIN_FIT:
        return None  # a bar, a ring or a dot read as "I", "O" or "."
    rotated = any(abs(l.angle) > MAX_ANGLE for l in group)
    flat = all(l.ink.background_spread < FLAT_BACKGROUND for l in group)
    text_lines, sizes = [], []
    for line in group:
        text, baseline = line.text, line.box.bottom
        if fitted is not None:
            sized = size_at(fitted.face, text, line.box.height, line.box.width)
            if sized is not None:
                sizes.append(sized[0])
                baseline = line.box.y + sized[1]
                rendered = render(fitted.face, max(4, round(sized[0])), text)
                if rendered is not None and not rotated:
                    ox, oy = line.ink.origin
                    pen_x = line.box.x - ox - rendered.left
                    text = restore_accents(text, line.ink.coverage, fitted.face, sized[0], pen_x, baseline - oy)
        text_lines.append(TextLine(text, line.box, int(baseline)))
    size = float(np.median(sizes)) if sizes else float(np.median([l.height for l in group]) * 0.8)
    colour = tuple(int(np.median([l.ink.color[i] for l in group])) for i in range(3))
    if fitted is not None:
        font = TextFont(fitted.face.family, fitted.face.font_class, fitted.face.bold, fitted.face.italic,
                        fitted.face.postscript)
    else:
        font = TextFont("", "sans-serif", False, False)
    editable = fitted is not None and score >= MIN_FIT and not rotated and flat
    return TextBlock(text_lines, size, _hex(colour), _alignment(group, width), font, editable)
