"""Accents the recogniser cannot write: its alphabet lacks ß, ñ, ç, â, ê, ô, ö, ... (German, French, Spanish).
Each letter of such a family is checked against the ink by rendering the letter and its neighbours with the fitted
face in every variant of the family; the variant whose glyphs match the ink best is kept."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .fonts import Face

FAMILIES = ["aàáâäã", "eèéêë", "iìíîïü", "oòóôöõ", "uùúûü", "nñ", "cç", "AÀÁÂÄ", "EÈÉÊË", "IÍÎÏ", "OÓÔÖ",
            "UÚÛÜ", "NÑ", "CÇ", "Bß", "βß", "Sß", "sß", "6óòöô", "0óòöô"]
MIN_SIZE = 20  # below this em size in pixels accents are too small to tell apart reliably
VARIANTS = {}
for _family in FAMILIES:
    for _c in _family:
        VARIANTS.setdefault(_c, [])
        VARIANTS[_c] += [v for v in _family if v != _c and v not in VARIANTS[_c]]
GAIN = 0.5  # a variant replaces the read letter only when it leaves at most this share of the mismatch


def _draw(shape: tuple[int, int], face: Face, size: int, text: str, x: float, baseline: float) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]))
    ImageDraw.Draw(canvas).text((x, baseline), text, font=face.font(size), fill=255, anchor="ls")
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _line_cost(text: str, coverage: np.ndarray, face: Face, size: float, pen_x: float, baseline: float) -> float:
    return float(np.abs(_draw(coverage.shape, face, round(size), text, pen_x, baseline) - coverage).sum())


def restore_accents(text: str, coverage: np.ndarray, face: Face, size: float, pen_x: float, baseline: float) -> str:
    """`text` with each accentable letter replaced by the variant its ink shows; a second pass when the first changed
    something, as each letter is judged beside its neighbours.

    Args:
        text: the line as read.
        coverage: the line's ink coverage (a crop of the image).
        face, size: the fitted face and em size.
        pen_x, baseline: where the line's pen starts and its baseline lies, in the crop's pixels.
    """
    for _ in range(2):
        restored = _restore_pass(text, coverage, face, size, pen_x, baseline)
        if restored == text:
            break
        text = restored
    return text


def _restore_pass(text: str, coverage: np.ndarray, face: Face, size: float, pen_x: float, baseline: float) -> str:
    if not any(c in VARIANTS for c in text) or size < MIN_SIZE:
        return text
    font = face.font(round(size))
    for pair in ("fs", "ss", "fB", "fS"):
        at = text.find(pair)
        while at > 0 and text[at - 1].islower():
            tried = text[:at] + "ß" + text[at + 2 :]
            if _line_cost(tried, coverage, face, size, pen_x, baseline) < GAIN * _line_cost(
                text, coverage, face, size, pen_x, baseline
            ):
                text = tried
            at = text.find(pair, at + 1)
    letters = list(text)
    cols = np.nonzero((coverage > 0.25).any(axis=0))[0]
    left_ink, _, right_ink, _ = font.getbbox(text, anchor="ls")
    # the fitted size is off by a percent or two: letters are placed along the ink's own width
    stretch = (cols[-1] + 1 - cols[0]) / max(1, right_ink - left_ink) if cols.size else 1.0
    for i, c in enumerate(letters):
        options = VARIANTS.get(c)
        if not options or (c in "BβSs60" and not (i > 0 and letters[i - 1].islower())):
            continue
        start = max(0, i - 1)
        x = pen_x + stretch * font.getlength("".join(letters[:start]))
        end_x = pen_x + stretch * font.getlength("".join(letters[: i + 2]))
        top = int(max(0, baseline - 1.2 * size))
        slack = 0.3 * size  # misread neighbours (B for ß, i for ü) move the letters: room to find them
        left, right = int(max(0, x - slack)), int(min(coverage.shape[1], end_x + slack))
        window = coverage[top : int(min(coverage.shape[0], baseline + 0.4 * size)), left:right]
        if window.size == 0:
            continue

        def piece(letter: str) -> str:
            return "".join(letters[start:i]) + letter + "".join(letters[i + 1 : i + 2])

        size_px, base = round(size), baseline - top
        reach = max(2, round(0.2 * size))
        drawn, found = {}, 0
        for v in [c] + [v for v in options if face.covers(v)]:
            wide = _draw((window.shape[0], window.shape[1] + 2 * reach), face, size_px, piece(v), x - left + reach, base)
            # the letters as read are placed where they match the ink best (a misread neighbour moves them); each
            # variant within two pixels of there, so that it cannot slide onto another letter's accent
            def misfit(dx: int) -> float:
                return float(np.abs(wide[:, reach - dx : reach - dx + window.shape[1]] - window).sum())

            if v == c:  # every other pixel first, then its neighbours
                coarse = min(range(-reach, reach + 1, 2), key=misfit)
                found = min((d for d in (coarse - 1, coarse, coarse + 1) if -reach <= d <= reach), key=misfit)
            dx = min(range(max(-reach, found - 2), min(reach, found + 2) + 1), key=misfit)
            drawn[v] = wide[:, reach - dx : reach - dx + window.shape[1]]
        # compared only where the variants differ: the accents, not the rest of the letters
        differs = np.zeros(window.shape, dtype=bool)
        for v, img in drawn.items():
            differs |= np.abs(img - drawn[c]) > 0.3
        if not differs.any():
            continue
        costs = {v: float(np.abs(img - window)[differs].sum()) for v, img in drawn.items()}
        best = min(costs, key=costs.get)
        if best != c and costs[best] < GAIN * costs[c]:
            letters[i] = best
    return "".join(letters)
