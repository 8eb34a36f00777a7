"""Writing a layer stack to disk: PSD (psd-tools), OpenRaster, or a folder of PNGs with layers.json."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image

from .image import PlacedLayer, composite, unpremultiply

LAYERS_JSON = "layers.json"


def flatten(layers: Sequence[PlacedLayer], width: int, height: int) -> Image.Image:
    return Image.fromarray(unpremultiply(composite(layers, width, height).astype(np.float32)), "RGBA")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "layer"


def write_psd(path: Path, layers: Sequence[PlacedLayer], width: int, height: int) -> None:
    from psd_tools import PSDImage
    from psd_tools.api.layers import PixelLayer

    psd = PSDImage.new("RGBA", (width, height))
    for layer in layers:
        if layer.width == 0:
            pil = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
        else:
            pil = Image.fromarray(layer.pixels, "RGBA")
        psd.append(PixelLayer.frompil(pil, psd, layer.name, top=layer.y, left=layer.x))
    psd.save(str(path))


def write_ora(path: Path, layers: Sequence[PlacedLayer], width: int, height: int) -> None:
    """OpenRaster: a zip with an uncompressed `mimetype` first, stack.xml (top layer first), PNGs, a merged image."""
    stack = [f'<image version="0.0.3" w="{width}" h="{height}" xres="72" yres="72"><stack>']
    files: list[tuple[str, bytes]] = []
    for i, layer in reversed(list(enumerate(layers))):
        src = f"data/{i:02d}-{_slug(layer.name)}.png"
        pixels = layer.pixels if layer.width else np.zeros((1, 1, 4), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGBA").save(buf, "PNG")
        files.append((src, buf.getvalue()))
        stack.append(
            f'<layer name={quoteattr(layer.name)} src="{src}" x="{layer.x}" y="{layer.y}" opacity="1.0" '
            f'visibility="visible" composite-op="svg:src-over"/>'
        )
    stack.append("</stack></image>")
    merged = flatten(layers, width, height)
    merged_png = io.BytesIO()
    merged.save(merged_png, "PNG")
    thumb = merged.copy()
    thumb.thumbnail((256, 256))
    thumb_png = io.BytesIO()
    thumb.save(thumb_png, "PNG")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "image/openraster", compress_type=zipfile.ZIP_STORED)
        z.writestr("stack.xml", "".join(stack), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in files:
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        z.writestr("mergedimage.png", merged_png.getvalue(), compress_type=zipfile.ZIP_STORED)
        z.writestr("Thumbnails/thumbnail.png", thumb_png.getvalue(), compress_type=zipfile.ZIP_STORED)


def write_folder(path: Path, layers: Sequence[PlacedLayer], width: int, height: int, extra: dict | None = None) -> None:
    """One PNG per layer and layers.json (order bottom to top, names, offsets, canvas size)."""
    path.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, layer in enumerate(layers):
        file = f"{i:02d}-{_slug(layer.name)}.png"
        if layer.width:
            Image.fromarray(layer.pixels, "RGBA").save(path / file, "PNG")
        else:
            file = None
        entries.append(
            {"index": i, "name": layer.name, "file": file, "x": layer.x, "y": layer.y, "width": layer.width, "height": layer.height}
        )
    manifest = {"canvas": {"width": width, "height": height}, "order": "bottom_to_top", "layers": entries}
    manifest.update(extra or {})
    (path / LAYERS_JSON).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_folder(path: Path) -> tuple[list[PlacedLayer], int, int]:
    manifest = json.loads((path / LAYERS_JSON).read_text(encoding="utf-8"))
    layers = []
    for entry in manifest["layers"]:
        if entry["file"]:
            pixels = np.asarray(Image.open(path / entry["file"]).convert("RGBA"))
        else:
            pixels = np.zeros((0, 0, 4), np.uint8)
        layers.append(PlacedLayer(entry["name"], entry["x"], entry["y"], pixels))
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
