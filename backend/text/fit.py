"""Fitting a line's font: each candidate face renders the words, and the face whose glyph mask best matches the
line's ink gives the family, weight and slant; the ink's height and width at that face give the size in pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .fonts import Face

SEARCH_SIZE = 40  # the size faces are compared at


@dataclass
class Rendered:
    mask: np.ndarray  # float32 coverage cropped to the ink
    baseline: int  # the baseline's row in the mask
    left: float  # ink's left edge relative to the pen's starting point


def render(face: Face, size: int, text: str) -> Rendered | None:
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
    return Rendered(mask, int(1 - t - top), float(left - (1 - l)))


def _similarity(observed: np.ndarray, rendered: np.ndarray) -> float:
    h, w = rendered.shape
    scaled = np.asarray(Image.fromarray(observed).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    union = np.maximum(scaled, rendered).sum()
    return float(np.minimum(scaled, rendered).sum() / union) if union > 0 else 0.0


def _pieces(mask: np.ndarray) -> list[tuple[int, int]]:
    """Column ranges of the mask's words: runs of ink split at gaps wider than a fifth of its height."""
    inked = (mask > 0.3).any(axis=0)
    min_gap = max(2, int(0.2 * mask.shape[0]))
    pieces, start, gap = [], None, 0
    for x, on in enumerate(inked):
        if on:
            if start is None:
                start = x
            elif gap >= min_gap:
                pieces.append((start, x - gap))
                start = x
            gap = 0
        elif start is not None:
            gap += 1
    if start is not None:
        pieces.append((start, len(inked) - gap))
    return pieces


def _match(observed: np.ndarray, rendered: np.ndarray) -> float:
    """How well a face's rendering matches the ink: soft IoU, less for another width. Word by word where both split
    into as many words, so a misread letter shifts only its own word."""
    h, w = observed.shape
    rh, rw = rendered.shape
    whole = _similarity(observed, rendered) * float(np.exp(-2.0 * abs(np.log((w / h) / (rw / rh)))))
    ours, theirs = _pieces(observed), _pieces(rendered)
    if len(ours) < 2 or len(ours) != len(theirs):
        return whole
    scale = rh / h
    total = weight = 0.0
    for (a, b), (c, d) in zip(ours, theirs):
        word, their_word = observed[:, a:b], rendered[:, c:d]
        expected = (b - a) * scale
        score = _similarity(word, their_word) * float(np.exp(-2.0 * abs(np.log(expected / max(1, d - c)))))
        total += score * (d - c)
        weight += d - c
    return max(whole, total / weight)


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


def rank_faces(coverage: np.ndarray, text: str, faces: list[Face]) -> list[tuple[float, Face]]:
    """(match, face) for each face that can render `text`, best first; `coverage` is the line's ink, cropped to it."""
    scored = []
    for face in faces:
        rendered = render(face, SEARCH_SIZE, text)
        if rendered is not None:
            scored.append((_match(coverage, rendered.mask), face))
    scored.sort(key=lambda pair: -pair[0])
    return scored


def fit_font(coverage: np.ndarray, text: str, faces: list[Face]) -> FontFit | None:
    """The face among `faces` whose rendering of `text` best matches `coverage` (the line's ink, cropped to it)."""
    text = text.strip()
    if not text or not faces or coverage.size == 0:
        return None
    ranked = rank_faces(coverage, text, faces)
    if not ranked:
        return None
    score, face = ranked[0]
    sized = size_at(face, text, *coverage.shape)
    if sized is None:
        return None
    return FontFit(face, score, sized[0])
