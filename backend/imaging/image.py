"""Pixels: decoding uploads, premultiplied resampling, cropping layers to their content."""

from __future__ import annotations

import functools
import io
import struct
from typing import Sequence

import numpy as np
from PIL import Image, ImageCms, ImageOps

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.layer import PlacedLayer
from ..core.protocol import MAX_ASPECT, MAX_SIDE



def check_size(width: int, height: int, max_pixels: int, max_aspect: int | None = MAX_ASPECT) -> None:
    """Refuses (with a code) an image with no pixels, a side over MAX_SIDE, more than `max_pixels` pixels, or a long
    side over `max_aspect` times the short (the model's limit; None: no limit, for work without the model)."""
    if width <= 0 or height <= 0:
        raise LayerBridgeError(ErrorCode.invalid_image, f"image has no pixels ({width}×{height})")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise LayerBridgeError(
            ErrorCode.image_too_large, f"image is {width}×{height}; each side must be at most {MAX_SIDE} px"
        )
    if width * height > max_pixels:
        raise LayerBridgeError(
            ErrorCode.image_too_large,
            f"image is {width * height / 1e6:.1f} megapixels; this server accepts at most {max_pixels / 1e6:.1f}",
        )
    if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
        raise LayerBridgeError(
            ErrorCode.invalid_image,
            f"image is {width}×{height}; its long side may be at most {max_aspect} times its short side",
        )


# The raw pixel layouts a client may send and fetch (docs/protocol.md): the protocol's own, and the same with blue
# first, as Krita, Qt and Windows keep 8-bit colour in memory, so such a client sends its pixels as they are.
def swap_red_blue(pixels: np.ndarray) -> np.ndarray:
    """rgba8 ↔ bgra8 of an (h, w, 4) array, as a new array."""
    return pixels[..., [2, 1, 0, 3]]


def from_raw(data: bytes, width: int, height: int, max_pixels: int, pixel_format: str = "rgba8",
             max_aspect: int | None = MAX_ASPECT) -> np.ndarray:
    """Raw `rgba8` or `bgra8` bytes (see docs/protocol.md) to an (h, w, 4) uint8 RGBA array."""
    check_size(width, height, max_pixels, max_aspect)
    expected = width * height * 4
    if len(data) != expected:
        raise LayerBridgeError(
            ErrorCode.invalid_image, f"a raw {pixel_format} image of {width}×{height} needs {expected} bytes, got {len(data)}"
        )
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 4)
    return swap_red_blue(pixels) if pixel_format == "bgra8" else pixels.copy()


def decode(data: bytes, max_pixels: int, max_aspect: int | None = MAX_ASPECT) -> np.ndarray:
    """Any image file Pillow reads to an (h, w, 4) uint8 straight-alpha RGBA array (sizes as check_size checks)."""
    if not data:
        raise LayerBridgeError(ErrorCode.invalid_image, "the image is empty")
    try:
        # Pillow's own decompression-bomb check is off: check_size refuses from the header, before any pixel is
        # decoded, with this server's limit in words.
        Image.MAX_IMAGE_PIXELS = None
        if data[:4] == b"8BPS":
            img = _psd_composite(data, max_pixels, max_aspect)
        else:
            _read_heif()
            img = Image.open(io.BytesIO(_merged_image(data, max_pixels) if data[:2] == b"PK" else data))
            check_size(img.width, img.height, max_pixels, max_aspect)
        img.load()
        # As viewers show it: a phone's photo stored sideways, with an EXIF orientation, is turned upright.
        ImageOps.exif_transpose(img, in_place=True)  # no copy of a large image without an orientation
        img = to_srgb(img)
    except LayerBridgeError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise LayerBridgeError(
            ErrorCode.invalid_image,
            "the image is in no format the server reads (PNG, JPEG, TIFF, WebP, HEIC, PSD…); raw rgba8 pixels are sent with "
            "Content-Type application/octet-stream and width and height in params",
        ) from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise LayerBridgeError(ErrorCode.invalid_image, f"the image could not be decoded: {exc}") from exc
    return to_rgba8(img)


@functools.lru_cache(maxsize=None)
def _read_heif() -> None:
    """Pillow reads HEIC/HEIF (what phones save photos as) once pi-heif has registered its opener. pi-heif applies the
    file's rotation itself and resets the EXIF orientation, so exif_transpose does not turn the picture twice."""
    from pi_heif import register_heif_opener

    register_heif_opener()


# The zip-based layered formats that carry their flattened image as mergedimage.png, by their mimetype entry.
_MERGED_IMAGE_FORMATS = {b"image/openraster": "OpenRaster", b"application/x-krita": "Krita"}


def _merged_image(data: bytes, max_pixels: int) -> bytes:
    """The flattened image an OpenRaster (.ora) or Krita (.kra) file carries, as PNG bytes. Its unpacked size is
    checked before it is unpacked: a PNG of `max_pixels` takes at most 8 bytes a pixel (16-bit RGBA) and a little."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            kind = _MERGED_IMAGE_FORMATS.get(archive.read("mimetype").strip()) if "mimetype" in archive.namelist() else None
            if kind is None:
                raise LayerBridgeError(
                    ErrorCode.invalid_image, "a zip file is read only as an OpenRaster (.ora) or Krita (.kra) document"
                )
            if "mergedimage.png" not in archive.namelist():
                raise LayerBridgeError(ErrorCode.invalid_image, f"this {kind} file has no merged image (mergedimage.png)")
            if archive.getinfo("mergedimage.png").file_size > 8 * max_pixels + (1 << 20):
                raise LayerBridgeError(ErrorCode.image_too_large, f"this {kind} file's merged image is too large")
            return archive.read("mergedimage.png")
    except zipfile.BadZipFile as exc:
        raise LayerBridgeError(ErrorCode.invalid_image, f"the zip file could not be read: {exc}") from exc


def _psd_composite(data: bytes, max_pixels: int, max_aspect: int | None = MAX_ASPECT) -> Image.Image:
    """A Photoshop file (PSD, or PSB for large documents; 8 or 16 bits) as Photoshop shows it. psd-tools reads
    it rather than Pillow, which reads neither 16-bit files nor PSB, and gives the merged image as stored: matted on
    white, so semi-transparent edges come out pale. A file saved without "Maximize compatibility" has no merged
    image: its layers are composited. The embedded profile goes on to to_srgb."""
    from psd_tools import PSDImage
    from psd_tools.constants import Resource

    if len(data) < 26:
        raise LayerBridgeError(ErrorCode.invalid_image, "the Photoshop file is cut short")
    height, width, depth = struct.unpack(">IIH", data[14:24])
    check_size(width, height, max_pixels, max_aspect)  # from the header, before any pixel is decoded
    if depth == 32:
        # linear-light floats, which Photoshop tone-maps for display: no plain reading gives what it shows
        raise LayerBridgeError(
            ErrorCode.unsupported_image,
            "32-bit Photoshop files are not read: save a copy at 16 bits (Image > Mode > 16 Bits/Channel)",
        )
    psd = PSDImage.open(io.BytesIO(data))
    if not psd.has_preview():
        _check_composited_layers(psd, max_pixels)
    img = psd.composite(apply_icc=False)
    icc = psd.image_resources.get_data(Resource.ICC_PROFILE)
    if icc:
        img.info["icc_profile"] = icc
    return img


def _check_composited_layers(psd, max_pixels: int) -> None:
    """Compositing decodes every visible layer (and its mask) whole, whatever part of it lies on the canvas: their
    pixels together count against max_pixels, from the layer records, before any is decoded."""
    total = 0
    for layer in psd.descendants():
        if layer.is_group() or not layer.is_visible():
            continue
        total += max(0, layer.width) * max(0, layer.height)
        mask = layer.mask
        if mask is not None:
            total += max(0, mask.width) * max(0, mask.height)
    if total > max_pixels:
        raise LayerBridgeError(
            ErrorCode.image_too_large,
            f"this Photoshop file has no merged image, and its layers hold {total / 1e6:.1f} megapixels to composite; "
            f"this server accepts at most {max_pixels / 1e6:.1f}: save it with Maximize compatibility on",
        )


# The ICC colour space of a profile → the Pillow mode its pixels are transformed from.
_PROFILE_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}


def to_srgb(img: Image.Image) -> Image.Image:
    """Pixels with an embedded colour profile other than sRGB (a Display P3 screenshot, an Adobe RGB photo, a CMYK
    print file) converted to sRGB, as the model, the plugins and the written layers all read sRGB: relative
    colorimetric with black point compensation, Photoshop's default. Alpha is kept as it is. An image without a
    profile, with an sRGB one, or with one that cannot be read or does not match its pixels is returned unchanged."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = source.profile.xcolor_space.strip()
        description = ImageCms.getProfileDescription(source)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img
    mode = _PROFILE_MODES.get(space)
    if mode is None or "srgb" in description.lower().replace(" ", ""):
        return img
    colour_modes = {"RGB": ("RGB", "RGBA", "RGBX", "P", "PA"), "L": ("L", "LA", "1"), "CMYK": ("CMYK",)}[mode]
    if img.mode not in colour_modes:
        return img
    if img.mode in ("P", "PA") or "transparency" in img.info:
        img = img.convert("LA" if mode == "L" else "RGBA")  # a palette's or tRNS chunk's transparency as alpha
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
    base = img if img.mode == mode else img.convert(mode)
    srgb = ImageCms.profileToProfile(
        base,
        source,
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        outputMode="RGB",
        flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
    )
    if alpha is not None:
        srgb.putalpha(alpha)
    return srgb


def to_rgba8(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGBA 8-bit, or refuse clearly."""
    mode = img.mode
    if mode == "RGBA":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "F":
        raise LayerBridgeError(
            ErrorCode.unsupported_image, "32-bit float images are not supported: convert the document to 8 or 16 bits"
        )
    if mode == "LAB":  # Photoshop's and TIFF's CIELAB (D50): Pillow's own conversion only relabels the bytes
        srgb = ImageCms.profileToProfile(
            img,
            ImageCms.createProfile("LAB"),
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode="RGB",
        )
        return np.asarray(srgb.convert("RGBA"), dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        alpha = np.full_like(gray, 255)
        return np.dstack([gray, gray, gray, alpha])
    try:
        return np.asarray(img.convert("RGBA"), dtype=np.uint8).copy()
    except Exception as exc:
        raise LayerBridgeError(ErrorCode.unsupported_image, f"images in mode {mode} are not supported") from exc


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """uint8 straight RGBA to float32 premultiplied RGBA in 0..1."""
    f = rgba.astype(np.float32) / 255.0
    f[..., :3] *= f[..., 3:4]
    return f


def unpremultiply(f: np.ndarray) -> np.ndarray:
    """float32 premultiplied RGBA in 0..1 to uint8 straight RGBA."""
    alpha = np.clip(f[..., 3:4], 0.0, 1.0)
    rgb = np.where(alpha > 1e-6, f[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    out = np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=-1)
    return np.rint(out * 255.0).astype(np.uint8)


def resize_premultiplied(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample straight RGBA with premultiplied alpha (Lanczos), so edges get no dark fringes."""
    if rgba.shape[1] == width and rgba.shape[0] == height:
        return rgba.copy()
    pre = premultiply(rgba)
    channels = [
        np.asarray(Image.fromarray(pre[..., c], "F").resize((width, height), Image.LANCZOS)) for c in range(4)
    ]
    return unpremultiply(np.stack(channels, axis=-1))


def crop_to_content(name: str, full: np.ndarray) -> PlacedLayer:
    """Crop a full-canvas layer to its non-transparent bounds."""
    alpha = full[..., 3]
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return PlacedLayer(name, 0, 0, np.zeros((0, 0, 4), dtype=np.uint8))
    cols = np.flatnonzero(alpha.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return PlacedLayer(name, x0, y0, np.ascontiguousarray(full[y0:y1, x0:x1]))


def resample_layers(source: np.ndarray, layers: Sequence[np.ndarray], names: Sequence[str]) -> list[PlacedLayer]:
    """Plain restoration: each model layer resampled to the source's size (premultiplied), then cropped."""
    height, width = source.shape[:2]
    return [crop_to_content(name, resize_premultiplied(layer, width, height)) for name, layer in zip(names, layers)]


def composite(layers: Sequence[PlacedLayer], width: int, height: int) -> np.ndarray:
    """Normal 'over' blending, bottom to top, in float; returns premultiplied float RGBA (h, w, 4)."""
    out = np.zeros((height, width, 4), dtype=np.float64)
    for layer in layers:
        if layer.width == 0:
            continue
        f = layer.pixels.astype(np.float64) / 255.0
        a = f[..., 3:4]
        src = np.concatenate([f[..., :3] * a, a], axis=-1)
        region = out[layer.y : layer.y + layer.height, layer.x : layer.x + layer.width]
        region[...] = src + region * (1.0 - a)
    return out
