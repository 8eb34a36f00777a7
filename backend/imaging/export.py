"""Writing a layer stack to disk: PSD (psd-tools), OpenRaster, or a folder of PNGs with layers.json. A stack is a
job's flat list, bottom to top; its group entries (element split, docs/elements.md) become PSD groups, OpenRaster
stacks, and entries with `children` in layers.json.

Every writer builds its output under a temporary name beside the target and moves it into place at the end, so a
failure part way leaves nothing at the target (and nothing half-written beside it)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageCms

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.layer import PlacedLayer

LAYERS_JSON = "layers.json"
PSD_MAX_SIDE = 30_000  # the PSD format's limit; only PSB goes further
MAX_NAME = 255  # characters: Photoshop's limit for a layer name
TEXT_NAME = 60  # characters of its words that name a layer holding text
THUMBNAIL_SIDE = 256  # OpenRaster: Thumbnails/thumbnail.png is at most 256×256
_SLUG_MAX = 60  # keeps file names, with the folder's path, well inside Windows' and macOS's limits
# Characters XML 1.0 cannot hold (most C0 controls), lone surrogates (an undecodable file name's stem) and
# non-characters: none of the three formats can store them.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def layer_name(name: str) -> str:
    """A layer's name as every format stores it: without unstorable characters, at most 255 characters."""
    clean = _UNSTORABLE.sub("", name).strip()[:MAX_NAME].rstrip()
    return clean or "Layer"


def shown_name(layer: PlacedLayer) -> str:
    """A layer's name in PSD and OpenRaster: the words it holds when it holds text (docs/text.md), else its name."""
    words = " ".join(" ".join(block["text"].split()) for block in layer.text)
    return layer_name(words[:TEXT_NAME] if words else layer.name)


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower())[:_SLUG_MAX].strip("-") or "layer"


def layer_file(index: int, name: str) -> str:
    """`NN-slug.png`: unique by its index, ASCII, and no reserved or over-long name on any system."""
    return f"{index:02d}-{_slug(name)}.png"


def _pil(layer: PlacedLayer) -> Image.Image:
    if layer.width == 0:
        return Image.new("RGBA", (1, 1), (0, 0, 0, 0))  # formats and apps want at least one pixel per layer
    return Image.fromarray(np.ascontiguousarray(layer.pixels), "RGBA")


def flatten(layers: Sequence[PlacedLayer], width: int, height: int) -> Image.Image:
    """The layers composited bottom to top with normal blending, as straight-alpha RGBA (8-bit, in Pillow)."""
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for layer in layers:
        if layer.width:
            canvas.alpha_composite(_pil(layer), (layer.x, layer.y))
    return canvas


def _beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, moved onto it once the block succeeds and removed if it fails."""
    tmp = _beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@lru_cache(maxsize=1)
def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _psd_merged_planes(merged: Image.Image) -> list[bytes]:
    """The merged image section's R, G, B and transparency planes. Photoshop stores that image matted on white
    (premultiplied colour + 1 − alpha) and its readers, psd-tools included, take the white out again."""
    r, g, b, alpha = merged.convert("RGBa").split()
    white = ImageChops.invert(alpha)
    return [ImageChops.add(c, white).tobytes() for c in (r, g, b)] + [alpha.tobytes()]


def write_psd(path: Path, layers: Sequence[PlacedLayer], width: int, height: int) -> None:
    """8-bit RGB PSD tagged sRGB: one pixel layer per layer (bottom to top, named, at its offset), a group (folder)
    per group entry holding its children, and the merged image filled in with its transparency, for viewers and
    thumbnailers that read only that."""
    from psd_tools import PSDImage
    from psd_tools.api.layers import Group, PixelLayer
    from psd_tools.constants import Compression, Resource
    from psd_tools.psd.image_data import ImageData
    from psd_tools.psd.image_resources import ImageResource

    if width > PSD_MAX_SIDE or height > PSD_MAX_SIDE:
        raise LayerBridgeError(
            ErrorCode.image_too_large,
            f"a PSD holds at most {PSD_MAX_SIDE} px a side and this image is {width}×{height}: "
            "write an OpenRaster file (.ora) or a folder instead",
        )
    psd = PSDImage.new("RGBA", (width, height))
    psd.image_resources[Resource.ICC_PROFILE] = ImageResource(key=Resource.ICC_PROFILE, data=_srgb_icc())
    groups: dict[int, Group] = {}
    for i, layer in enumerate(layers):
        parent = psd if layer.parent is None else groups[layer.parent]
        if layer.group:
            groups[i] = Group.new(parent, layer_name(layer.name))
            continue
        added = PixelLayer.frompil(_pil(layer), parent, "Layer", top=layer.y, left=layer.x)
        added.name = shown_name(layer)  # the setter also writes the Unicode name ('luni') that apps show
    # PSDImage.save() would render the merged image again, in float over the whole canvas (gigabytes for a large
    # document): it is set here from Pillow's 8-bit composite and the document's record written as it stands.
    record = psd._record
    # A negative layer count tells readers that the merged image's fourth channel is its transparency. A group
    # counts twice: its folder's record and the divider that closes it.
    layer_info = record.layer_and_mask_information.layer_info
    layer_info.layer_count = -len(layer_info.layer_records)
    record.image_data = ImageData(compression=Compression.RLE)
    record.image_data.set_data(_psd_merged_planes(flatten(layers, width, height)), record.header)
    with _replacing(path) as tmp, open(tmp, "xb") as f:
        record.write(f)


def _png(image: Image.Image, f: IO[bytes] | Path) -> None:
    image.save(f, "PNG", compress_level=1)  # 2-3× faster than the default on photos, ~14% larger


def write_ora(path: Path, layers: Sequence[PlacedLayer], width: int, height: int) -> None:
    """OpenRaster: a zip with an uncompressed `mimetype` first, stack.xml (top layer first; a group entry is a nested
    `stack` holding its children), one PNG per pixel layer, the merged image and a thumbnail of at most 256×256."""
    root = ET.Element("image", {"version": "0.0.5", "w": str(width), "h": str(height), "xres": "72", "yres": "72"})
    top = ET.SubElement(root, "stack")
    sources = {i: f"data/{layer_file(i, layer.name)}" for i, layer in enumerate(layers) if not layer.group}
    stacks: dict[int, ET.Element] = {}
    for i, layer in enumerate(layers):  # each element is inserted first in its stack: top first
        stack = top if layer.parent is None else stacks[layer.parent]
        attributes = {"name": shown_name(layer), "x": str(layer.x), "y": str(layer.y), "opacity": "1.0",
                      "visibility": "visible", "composite-op": "svg:src-over"}
        if layer.group:
            # no x, y: a stack's offset would move its children, whose places are on the canvas already
            del attributes["x"], attributes["y"]
            attributes.update(name=layer_name(layer.name), isolation="auto")
            stacks[i] = element = ET.Element("stack", attributes)
        else:
            element = ET.Element("layer", {"name": attributes.pop("name"), "src": sources[i], **attributes})
        stack.insert(0, element)
    merged = flatten(layers, width, height)
    scale = min(1.0, THUMBNAIL_SIDE / width, THUMBNAIL_SIDE / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    thumb = merged if size == merged.size else merged.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    with _replacing(path) as tmp, zipfile.ZipFile(tmp, "x") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "image/openraster", compress_type=zipfile.ZIP_STORED)
        z.writestr("stack.xml", ET.tostring(root, encoding="UTF-8", xml_declaration=True),
                   compress_type=zipfile.ZIP_DEFLATED)
        # PNG data is compressed already: stored, and streamed into the zip one image at a time.
        for i, src in sources.items():
            layer = layers[i]
            with z.open(src, "w", force_zip64=layer.pixels.nbytes > 2**30) as f:
                _png(_pil(layer), f)
        with z.open("mergedimage.png", "w", force_zip64=width * height * 4 > 2**30) as f:
            _png(merged, f)
        with z.open("Thumbnails/thumbnail.png", "w") as f:
            _png(thumb, f)


def write_folder(path: Path, layers: Sequence[PlacedLayer], width: int, height: int, extra: dict | None = None) -> None:
    """One PNG per pixel layer and layers.json (order bottom to top, names, offsets, canvas size, the hierarchy's
    `group`, `parent` and `children`; see docs/cli.md). Built in a folder beside `path`, then moved into place; into
    an existing folder, only files of the same names are replaced, layers.json last."""
    tmp = _beside(path)
    os.mkdir(tmp)
    try:
        entries = []
        for i, layer in enumerate(layers):
            file = layer_file(i, layer.name) if layer.width else None
            if file:
                _png(_pil(layer), tmp / file)
            x, y, w, h = layer.box
            entry = {"index": i, "name": layer_name(layer.name), "file": file, "group": layer.group}
            if layer.group:
                entry["children"] = list(layer.children or ())
            entry.update({"parent": layer.parent, "x": x, "y": y, "width": w, "height": h, "text": layer.text})
            entries.append(entry)
        manifest = {"canvas": {"width": width, "height": height}, "order": "bottom_to_top", "layers": entries}
        manifest.update(extra or {})
        (tmp / LAYERS_JSON).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if path.is_dir():
            for item in sorted(tmp.iterdir(), key=lambda item: item.name == LAYERS_JSON):
                os.replace(item, path / item.name)
            tmp.rmdir()
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_folder(path: Path) -> tuple[list[PlacedLayer], int, int]:
    manifest = json.loads((path / LAYERS_JSON).read_text(encoding="utf-8"))
    layers = []
    for entry in manifest["layers"]:
        if entry["file"]:
            pixels = np.asarray(Image.open(path / entry["file"]).convert("RGBA"))
        else:
            pixels = np.zeros((0, 0, 4), np.uint8)
        layers.append(PlacedLayer.from_entry(entry, pixels))
    return layers, manifest["canvas"]["width"], manifest["canvas"]["height"]


def write(path: Path, layers: Sequence[PlacedLayer], width: int, height: int, extra: dict | None = None) -> str:
    """Write by the output's extension: .psd, .ora, else a folder. Returns the format written."""
    suffix = path.suffix.lower()
    if suffix == ".psd":
        write_psd(path, layers, width, height)
        return "psd"
    if suffix == ".ora":
        write_ora(path, layers, width, height)
        return "ora"
    write_folder(path, layers, width, height, extra)
    return "folder"
