"""Fitting a line's font: each candidate face renders the words, and the face whose glyph mask best matches the
line's ink gives the family, weight and slant; the ink's height and width at that face give the size in pixels."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .fonts import Face

SEARCH_SIZE = 40  # the size faces are compared at
RENDER_CACHE = 512  # renderings kept while a picture is read: every face at SEARCH_SIZE for a line, the sizes tried


@dataclass
class Rendered:
    mask: np.ndarray  # float32 coverage cropped to the ink
    baseline: int  # the baseline's row in the mask
    left: float  # ink's left edge relative to the pen's starting point


def render(face: Face, size: int, text: str) -> Rendered | None:
    """`text` set in `face` at `size` px, its mask cropped to the ink (the same words are set many times while a
    line is fitted: kept for the next ones until forget_renderings(); the mask is shared, never to be written to)."""
    return _render(face, int(size), text)


def forget_renderings() -> None:
    """Drops the kept renderings (read_text does when it is done with a picture)."""
    _render.cache_clear()


@functools.lru_cache(maxsize=RENDER_CACHE)
def _render(face: Face, size: int, text: str) -> Rendered | None:
    font = face.font(size)
    l, t, r, b = font.getbbox(text, anchor="ls")
    if r <= l or b <= t:
        return None
    canvas = Image.new("L", (r - l + 2, b - t + 2))
    ImageDraw.Draw(canvas).text((1 - l, 1 - t), text, font=font, fill=255, anchor="ls")
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    left, top, right, bottom = bbox
    mask = np.asarray(canvas.crop(bbox), dtype=np.float32) / 255.0
    mask.flags.writeable = False
    return Rendered(mask, int(1 - t - top), float(left - (1 - l)))


def _similarity(observed: Image.Image, rendered: np.ndarray) -> float:
    """Soft IoU of the ink and a rendering, compared at the smaller of their two sizes: ink smaller than the
    rendering is not enlarged, as enlarging blurs it and makes every stroke look bolder."""
    h, w = rendered.shape
    if observed.height < h:
        ours = np.asarray(observed, dtype=np.float32)
        smaller = Image.fromarray(rendered).resize(observed.size, Image.Resampling.BILINEAR)
        theirs = np.asarray(smaller, dtype=np.float32)
    else:
        ours = np.asarray(observed.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        theirs = rendered
    union = np.maximum(ours, theirs).sum()
    return float(np.minimum(ours, theirs).sum() / union) if union > 0 else 0.0


def _pieces(mask: np.ndarray) -> list[tuple[int, int]]:
    """Column ranges of the mask's words: runs of ink split at gaps wider than a fifth of its height."""
    columns = np.flatnonzero((mask > 0.3).any(axis=0))
    if columns.size == 0:
        return []
    min_gap = max(2, int(0.2 * mask.shape[0]))
    breaks = np.flatnonzero(np.diff(columns) - 1 >= min_gap)
    starts = np.concatenate([columns[:1], columns[breaks + 1]])
    ends = np.concatenate([columns[breaks], columns[-1:]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _width_penalty(expected: float, actual: float) -> float:
    return float(np.exp(-2.0 * abs(np.log(expected / actual))))


class _Observed:
    """A line's ink as every candidate face is compared with it: its words and its picture, worked out once."""

    def __init__(self, coverage: np.ndarray):
        self.coverage = coverage
        self.image = Image.fromarray(coverage)
        self.pieces = _pieces(coverage)
        self.words = {piece: Image.fromarray(np.ascontiguousarray(coverage[:, piece[0] : piece[1]]))
                      for piece in self.pieces}


def _match(observed: _Observed, rendered: np.ndarray, bound: float = 0.0) -> float:
    """How well a face's rendering matches the ink: soft IoU, less for another width. Word by word where both split
    into as many words, so a misread letter shifts only its own word. Returns at most `bound` early when the widths
    alone show it cannot score above it (a soft IoU is at most 1)."""
    h, w = observed.coverage.shape
    rh, rw = rendered.shape
    whole_width = _width_penalty(w / h, rw / rh)
    ours, theirs = observed.pieces, _pieces(rendered)
    by_word = len(ours) >= 2 and len(ours) == len(theirs)
    scale = rh / h
    if by_word:
        penalties = [_width_penalty((b - a) * scale, max(1, d - c)) for (a, b), (c, d) in zip(ours, theirs)]
        weights = [d - c for c, d in theirs]
        best_by_word = sum(p * wt for p, wt in zip(penalties, weights)) / sum(weights)
        if max(whole_width, best_by_word) <= bound:
            return max(whole_width, best_by_word)
    elif whole_width <= bound:
        return whole_width
    whole = _similarity(observed.image, rendered) * whole_width
    if not by_word:
        return whole
    total = sum(_similarity(observed.words[ours[i]], rendered[:, c:d]) * penalties[i] * weights[i]
                for i, (c, d) in enumerate(theirs))
    return max(whole, total / sum(weights))


@dataclass
class FontFit:
    face: Face
    score: float  # soft IoU of the face's glyphs with the ink, 0–1
    size: float  # em size in image pixels


def size_at(face: Face, text: str, ink_height: int, ink_width: int) -> tuple[float, int] | None:
    """The em size at which `face` sets `text` with this ink box, and the baseline's offset below the ink's top."""
    probe = render(face, SEARCH_SIZE, text)
    if probe is None:
        return None
    guess = SEARCH_SIZE * ink_height / probe.mask.shape[0]
    exact = render(face, max(4, min(300, round(guess))), text)  # measured again near the size, for precision
    if exact is None:
        return None
    at = max(4, min(300, round(guess)))
    by_height = at * ink_height / exact.mask.shape[0]
    by_width = at * ink_width / exact.mask.shape[1]
    size = float(np.sqrt(by_height * by_width)) if 0.9 < by_width / by_height < 1.1 else by_height
    return size, round(exact.baseline * size / at)


def best_face(coverage: np.ndarray, text: str, faces: list[Face]) -> tuple[float, Face] | None:
    """(match, face) of the face among `faces` that renders `text` most like `coverage` (the line's ink, cropped to
    it); None when none can render it. Faces whose widths alone cannot beat the best so far are not compared."""
    observed = _Observed(coverage)
    best: tuple[float, Face] | None = None
    for face in faces:
        rendered = render(face, SEARCH_SIZE, text)
        if rendered is None:
            continue
        score = _match(observed, rendered.mask, best[0] if best else 0.0)
        if best is None or score > best[0]:
            best = (score, face)
    return best


def fit_font(coverage: np.ndarray, text: str, faces: list[Face]) -> FontFit | None:
    """The face among `faces` whose rendering of `text` best matches `coverage` (the line's ink, cropped to it)."""
    text = text.strip()
    if not text or not faces or coverage.size == 0:
        return None
    best = best_face(coverage, text, faces)
    if best is None:
        return None
    score, face = best
    sized = size_at(face, text, *coverage.shape)
    if sized is None:
        return None
    return FontFit(face, score, sized[0])
