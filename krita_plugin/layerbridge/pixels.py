"""Pixel layouts and where the result's layers go, without Krita."""

from typing import Dict, List, NamedTuple, Optional, Tuple


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
    group: bool = False             # a group entry: no pixels, its children follow it (docs/protocol.md, Result)
    parent: Optional[int] = None    # the index of the group entry it is in, None at the top of the result
    text: tuple = ()                # its text blocks (docs/text.md), in document coordinates


def plan(result: dict, origin: Region) -> List[Placement]:
    """Layers bottom to top, placed in the document: the result's offsets are relative to
    the image that was sent, which sat at `origin`. Empty layers are kept (as empty layers)."""
    canvas = result.get("canvas") or {}
    if (canvas.get("width"), canvas.get("height")) != (origin.width, origin.height):
        raise ValueError("the result's canvas %sx%s is not the size that was sent (%dx%d)"
                         % (canvas.get("width"), canvas.get("height"), origin.width, origin.height))
    out = []
    groups = set()
    for layer in sorted(result.get("layers") or [], key=lambda l: int(l["index"])):
        index = int(layer["index"])
        parent = layer.get("parent")
        parent = int(parent) if isinstance(parent, int) and not isinstance(parent, bool) else None
        if parent is not None and parent not in groups:
            raise ValueError("layer %d is in %d, which is not a group listed before it" % (index, parent))
        group = layer.get("group") is True
        if group:
            groups.add(index)
        blocks = () if group else tuple(moved_block(b, origin.x, origin.y) for b in layer.get("text") or ()
                                        if isinstance(b, dict))
        out.append(Placement(index, str(layer.get("name") or "Layer %d" % index),
                             origin.x + int(layer.get("x", 0)), origin.y + int(layer.get("y", 0)),
                             0 if group else int(layer.get("width", 0)), 0 if group else int(layer.get("height", 0)),
                             group, parent, blocks))
    return out


def _moved_box(box: object, dx: int, dy: int) -> dict:
    box = box if isinstance(box, dict) else {}
    return {"x": int(box.get("x", 0)) + dx, "y": int(box.get("y", 0)) + dy,
            "width": int(box.get("width", 0)), "height": int(box.get("height", 0))}


def moved_block(block: dict, dx: int, dy: int) -> dict:
    """A text block (docs/text.md) with its boxes and baselines moved by (dx, dy): from the sent image's pixels to
    the document's."""
    out = dict(block)
    out["box"] = _moved_box(block.get("box"), dx, dy)
    out["lines"] = [dict(line, box=_moved_box(line.get("box"), dx, dy),
                         baseline=float(line.get("baseline", 0)) + dy)
                    for line in block.get("lines") or () if isinstance(line, dict)]
    return out


def group_name(result: dict, source_name: str) -> str:
    return str(result.get("name") or source_name or "Decomposition")


NATIVE = ("RGBA", "U8")                                  # sent and inserted as they are
SRGB = ("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")        # the protocol's rgba8, as a Krita colour space
CHANNELS = {"RGBA": 4, "GRAYA": 2, "CMYKA": 5, "LABA": 4, "XYZA": 4, "YCbCrA": 4}
DEPTH_BYTES = {"U8": 1, "U16": 2, "F16": 2, "F32": 4}
MODEL_WORDS = {"GRAYA": "grayscale", "CMYKA": "CMYK", "LABA": "L*a*b*", "XYZA": "XYZ", "YCbCrA": "YCbCr"}
DEPTH_WORDS = {"U16": "16-bit", "F16": "16-bit float", "F32": "32-bit float"}


def needs_conversion(model: str, depth: str) -> bool:
    """False for RGBA 8-bit (any profile: its bytes are sent and inserted as they are), True for the rest."""
    return (model, depth) != NATIVE


def wire_space(model: str, depth: str, profile: str) -> Tuple[str, str, str]:
    """The 8-bit RGBA colour space a document's pixels are sent in and its layers come back in. A 16-bit
    integer RGB document keeps its own profile, as an 8-bit one does: only the depth changes, so colours outside
    sRGB (Adobe RGB, ProPhoto, Rec. 2020) come back as they were instead of clipped. Everything else goes
    through sRGB: other colour models, float depths (scene-linear), and linear-light integer profiles (Krita
    names them "…-g10" or "linear"), which 8 bits would band and the model would read as far too dark."""
    lowered = profile.lower()
    if model == "RGBA" and depth in ("U8", "U16") and profile and "g10" not in lowered and "linear" not in lowered:
        return ("RGBA", "U8", profile)
    return SRGB


def pixel_size(model: str, depth: str) -> Optional[int]:
    """Bytes per pixel of Krita's pixelData in this colour space; None for one the plugin does not know."""
    if model not in CHANNELS or depth not in DEPTH_BYTES:
        return None
    return CHANNELS[model] * DEPTH_BYTES[depth]


def describe_colour(model: str, depth: str) -> str:
    """In words: 16-bit float CMYK, 8-bit RGB…"""
    return "%s %s" % (DEPTH_WORDS.get(depth, "8-bit" if depth == "U8" else depth),
                      MODEL_WORDS.get(model, "RGB" if model == "RGBA" else model))


def colour_problem(model: str, depth: str) -> Optional[str]:
    """None when the plugin can read and write this colour space (itself or through Krita's colour
    management), else why not, in words."""
    if pixel_size(model, depth) is not None:
        return None
    return ("This document is %s, a colour format the plugin cannot convert. Use Image › Convert Image "
            "Color Space… (for example RGB/Alpha, 16-bit integer) on a copy, and decompose that."
            % describe_colour(model, depth))


def conversion_problem(model: str, depth: str, profile: str) -> str:
    """Words for when Krita could not convert between this colour space and sRGB."""
    return ("Krita could not convert this %s document (profile “%s”) to or from sRGB. Use Image › Convert "
            "Image Color Space… (RGB/Alpha) on a copy, and decompose that." % (describe_colour(model, depth), profile))


def size_problem(region: Region, limits: Optional[dict]) -> Optional[str]:
    """Why the server would refuse an area this size, from its limits (GET /v1/info), or None."""
    w, h = region.width, region.height
    if w <= 0 or h <= 0:
        return "The area to decompose is empty."
    limits = limits or {}
    max_pixels, max_side, max_aspect = (limits.get(k) for k in ("max_pixels", "max_side", "max_aspect"))
    if max_pixels and w * h > max_pixels:
        return ("The area is %d × %d = %.1f megapixels; the server accepts at most %.0f megapixels. "
                "Select a smaller area or scale the image down." % (w, h, w * h / 1e6, max_pixels / 1e6))
    if max_side and max(w, h) > max_side:
        return ("The area is %d × %d; the server accepts at most %d pixels a side. "
                "Select a smaller area or scale the image down." % (w, h, max_side))
    if max_aspect and max(w, h) > max_aspect * min(w, h):
        return ("The area is %d × %d: its long side may be at most %d times its short side. "
                "Select a less elongated area." % (w, h, max_aspect))
    return None


def summary(placements: List[Placement]) -> Dict[str, object]:
    return {"layers": [p._asdict() for p in placements]}
