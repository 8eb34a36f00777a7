"""The fonts installed on this machine (fontconfig's list): family, weight, slant, generic class, PostScript name."""

from __future__ import annotations

import bisect
import functools
import shutil
import subprocess
from dataclasses import dataclass

from PIL import ImageFont

SYMBOL_FAMILIES = ("Standard Symbols PS", "D050000L", "DejaVu Math TeX Gyre")
FC_FORMAT = "%{file}|%{index}|%{family}|%{postscriptname}|%{weight}|%{slant}|%{spacing}|%{charset}\\n"
BOLD_WEIGHT = 180  # fontconfig's DemiBold and heavier; URW Bookman's and URW Gothic's bold is "Demi"


@dataclass(frozen=True)
class Face:
    path: str
    index: int
    family: str
    postscript: str
    bold: bool
    italic: bool
    font_class: str
    cjk: bool  # a CJK face (Noto CJK): a candidate for Chinese lines only
    charset: tuple[tuple[int, int], ...] = ()  # the code point ranges fontconfig says the face covers

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        return _font(self.path, self.index, max(1, int(size)))

    def covers(self, text: str) -> bool:
        return all(_in_ranges(ord(c), self.charset) for c in text if not c.isspace())


def _in_ranges(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    at = bisect.bisect_right(ranges, (code, 0x10FFFF + 1)) - 1
    return at >= 0 and ranges[at][0] <= code <= ranges[at][1]


def _charset(text: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for part in text.split():
        lo, _, hi = part.partition("-")
        try:
            ranges.append((int(lo, 16), int(hi or lo, 16)))
        except ValueError:
            continue
    return tuple(sorted(ranges))


@functools.lru_cache(maxsize=512)
def _font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


def _font_class(family: str, spacing: str, path: str, index: int) -> str:
    if spacing in ("100", "90"):  # fontconfig's mono and dual-width
        return "monospace"
    words = family.lower()
    if "mono" in words:
        return "monospace"
    if "sans" in words or "gothic" in words:
        return "sans-serif"
    if "serif" in words or "roman" in words:
        return "serif"
    try:
        from fontTools.ttLib import TTFont

        with TTFont(path, fontNumber=index, lazy=True) as font:
            panose = font["OS/2"].panose
        if panose.bFamilyType == 3:
            return "script"
        if panose.bFamilyType == 4:
            return "display"
        return "sans-serif" if panose.bSerifStyle in (11, 12, 13, 14, 15) else "serif"
    except Exception:  # a face fontTools cannot read: the commonest class
        return "sans-serif"


@functools.lru_cache(maxsize=1)
def installed_faces() -> tuple[Face, ...]:
    """Every usable outline face fontconfig lists (Type 1 duplicates, symbol fonts and CJK language variants other
    than Simplified Chinese left out), read once per process."""
    if not shutil.which("fc-list"):
        return ()
    out = subprocess.run(["fc-list", "--format", FC_FORMAT], capture_output=True, text=True, timeout=30).stdout
    faces: dict[str, Face] = {}
    for row in sorted(out.splitlines()):
        parts = row.split("|")
        if len(parts) != 8:
            continue
        path, index, families, postscript, weight, slant, spacing, charset = parts
        if not path.lower().endswith((".ttf", ".otf", ".ttc")) or not postscript:
            continue
        family = families.split(",")[-1].strip()  # the most specific name ("DejaVu Sans Condensed")
        if family in SYMBOL_FAMILIES:
            continue
        cjk = "CJK" in family
        if cjk and (not family.endswith(" SC") or "Mono" in family):
            continue
        try:
            face = Face(
                path=path,
                index=int(index or 0),
                family=family,
                postscript=postscript,
                bold=float(weight or 80) >= BOLD_WEIGHT,
                italic=float(slant or 0) > 0,
                font_class="",
                cjk=cjk,
                charset=_charset(charset),
            )
        except ValueError:
            continue
        if postscript not in faces:
            faces[postscript] = face
    italic_only = {f.family for f in faces.values()} - {f.family for f in faces.values() if not f.italic}
    return tuple(
        Face(**{**f.__dict__, "font_class": "script" if f.family in italic_only else _font_class(f.family, "", f.path, f.index)})
        for f in faces.values()
    )


def faces_for(text: str) -> list[Face]:
    """The installed faces that can set this text: CJK faces for text with CJK characters, the others otherwise."""
    wants_cjk = any(_is_cjk(c) for c in text)
    return [f for f in installed_faces() if f.cjk == wants_cjk and f.covers(text)]


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return 0x3000 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF
