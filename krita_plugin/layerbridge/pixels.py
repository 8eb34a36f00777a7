"""Pixel layouts and where the result's layers go, without Krita."""

from typing import Dict, List, NamedTuple, Optional


def swap_red_blue(data: bytes) -> bytearray:
    """BGRA ↔ RGBA (Krita's 8-bit RGBA stores blue first; the protocol sends red first).
    Returns a new buffer; slicing keeps it fast and at one extra copy."""
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return out


bgra_to_rgba = swap_red_blue
rgba_to_bgra = swap_red_blue


class Region(NamedTuple):
    x: int
    y: int
    width: int
    height: int


class Placement(NamedTuple):
    index: int
    name: str
    x: int          # document coordinates
    y: int
    width: int
    height: int


def plan(result: dict, origin: Region) -> List[Placement]:
    """Layers bottom to top, placed in the document: the result's offsets are relative to
    the image that was sent, which sat at `origin`. Empty layers are kept (as empty layers)."""
    canvas = result.get("canvas") or {}
    if (canvas.get("width"), canvas.get("height")) != (origin.width, origin.height):
        raise ValueError("the result's canvas %sx%s is not the size that was sent (%dx%d)"
                         % (canvas.get("width"), canvas.get("height"), origin.width, origin.height))
    out = []
    for layer in sorted(result.get("layers") or [], key=lambda l: int(l["index"])):
        out.append(Placement(int(layer["index"]), str(layer.get("name") or "Layer %d" % layer["index"]),
                             origin.x + int(layer.get("x", 0)), origin.y + int(layer.get("y", 0)),
                             int(layer.get("width", 0)), int(layer.get("height", 0))))
    return out


def group_name(result: dict, source_name: str) -> str:
    return str(result.get("name") or source_name or "Decomposition")


SUPPORTED = ("RGBA", "U8")


def colour_problem(model: str, depth: str) -> Optional[str]:
    """None when the document can be sent as is, else why not, in words."""
    if (model, depth) == SUPPORTED:
        return None
    names = {"GRAYA": "grayscale", "CMYKA": "CMYK", "LABA": "L*a*b*", "XYZA": "XYZ", "YCbCrA": "YCbCr"}
    depths = {"U16": "16-bit", "F16": "16-bit float", "F32": "32-bit float"}
    what = " ".join(x for x in (depths.get(depth, "" if depth == "U8" else depth),
                                names.get(model, "" if model == "RGBA" else model)) if x)
    return ("This document is %s. Layer decomposition works on RGB 8-bit images: use "
            "Image › Convert Image Color Space… (RGB/Alpha, 8-bit integer), or decompose a copy." % what)


def size_problem(region: Region, max_pixels: Optional[int]) -> Optional[str]:
    if region.width <= 0 or region.height <= 0:
        return "The area to decompose is empty."
    if max_pixels and region.width * region.height > max_pixels:
        return ("The area is %d × %d = %.1f megapixels; the server accepts at most %.0f megapixels. "
                "Select a smaller area or scale the image down."
                % (region.width, region.height, region.width * region.height / 1e6, max_pixels / 1e6))
    return None


def summary(placements: List[Placement]) -> Dict[str, object]:
    return {"layers": [p._asdict() for p in placements]}
