"""Decoding what users send: sizes refused by the header with the server's own limit, phone photos upright,
and aspect ratios the model can work on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backend.errors import ErrorCode, LayerBridgeError
from backend.image import MAX_ASPECT, decode, from_raw_rgba


def png(width: int, height: int, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("width, height", [(12_000, 9_000), (15_000, 14_000)])
def test_too_many_pixels_is_refused_with_the_servers_limit(width, height):
    with pytest.raises(LayerBridgeError) as info:
        decode(png(width, height), 100_000_000)
    assert info.value.code == ErrorCode.image_too_large
    assert info.value.message == f"image is {width * height / 1e6:.1f} megapixels; this server accepts at most 100.0"


def test_a_phone_photo_comes_upright():
    # 200×100 as stored, with EXIF orientation 6 (rotate 90° clockwise to view): viewers show it 100 wide, 200 high
    stored = np.zeros((100, 200, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # the stored left edge, which is the top once upright
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    out = decode(buf.getvalue(), 10**8)
    assert out.shape == (200, 100, 4)
    assert out[:15, :, 0].mean() > 200 and out[-100:, :, 0].mean() < 30


@pytest.mark.parametrize("width, height", [(3000, 1), (1, 3000), (MAX_ASPECT * 7 + 1, 7)])
def test_a_strip_too_thin_for_the_model_is_refused_up_front(width, height):
    for read in (lambda: decode(png(width, height), 10**8),
                 lambda: from_raw_rgba(bytes(width * height * 4), width, height, 10**8)):
        with pytest.raises(LayerBridgeError) as info:
            read()
        assert info.value.code == ErrorCode.invalid_image
        assert f"at most {MAX_ASPECT} times its short side" in info.value.message


def test_the_widest_accepted_strip_has_a_bucket_the_model_can_use():
    from backend.engine import bucket_size

    for resolution in (640, 1024):
        w, h = bucket_size(MAX_ASPECT * 7, 7, resolution)
        assert w > 0 and h >= 32, (resolution, w, h)
    assert decode(png(MAX_ASPECT * 7, 7), 10**8).shape == (7, MAX_ASPECT * 7, 4)


def linear_profile(space: str = "RGB ") -> bytes:
    """A minimal ICC v2 display profile with gamma 1.0 (linear light): sRGB primaries for RGB, a kTRC for gray."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    name = b"linear test profile\0"
    tags = {
        b"desc": b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(4 + 4 + 2 + 1 + 67),
        b"cprt": b"text" + bytes(4) + b"none\0",
        b"wtpt": xyz(0.9642, 1.0, 0.8249),
    }
    gamma_one = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0100) + bytes(2)
    if space == "GRAY":
        tags[b"kTRC"] = gamma_one
    else:
        tags.update({b"rXYZ": xyz(0.4361, 0.2225, 0.0139), b"gXYZ": xyz(0.3851, 0.7169, 0.0971),
                     b"bXYZ": xyz(0.1431, 0.0606, 0.7141), b"rTRC": gamma_one, b"gTRC": gamma_one, b"bTRC": gamma_one})
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags.items():
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntr" + space.ljust(4).encode()
              + b"XYZ " + bytes(12) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4) + s15(0.9642) + s15(1.0) + s15(0.8249)
              + bytes(4 + 16 + 28))
    assert len(header) == 128
    return header + table + data


def encoded(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **options)
    return buf.getvalue()


# Linear light 128/255 is sRGB 188/255: a profile that was ignored leaves 128.
LINEAR_MID, SRGB_MID = 128, 188


def test_a_profiled_image_is_converted_to_srgb_with_its_alpha_kept():
    rgba = Image.new("RGBA", (8, 4), (LINEAR_MID, LINEAR_MID, LINEAR_MID, 77))
    out = decode(encoded(rgba, icc_profile=linear_profile()), 10**8)
    assert np.abs(out[..., :3].astype(int) - SRGB_MID).max() <= 1
    assert (out[..., 3] == 77).all()

    gray = Image.new("LA", (8, 4), (LINEAR_MID, 200))
    out = decode(encoded(gray, icc_profile=linear_profile("GRAY")), 10**8)
    assert np.abs(out[..., :3].astype(int) - SRGB_MID).max() <= 1
    assert (out[..., 3] == 200).all()


def test_a_profiled_palette_keeps_its_transparent_entry():
    img = Image.new("P", (4, 2))
    img.putpalette([LINEAR_MID] * 3 + [0, 0, 0] * 255)
    img.putpixel((0, 0), 1)
    out = decode(encoded(img, icc_profile=linear_profile(), transparency=1), 10**8)
    assert out[0, 0, 3] == 0
    assert out[1, 1, 3] == 255 and abs(int(out[1, 1, 0]) - SRGB_MID) <= 1


def test_srgb_unprofiled_and_unusable_profiles_leave_the_pixels_as_they_are():
    from PIL import ImageCms

    pixels = np.random.default_rng(3).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGBA")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for options in ({}, {"icc_profile": srgb}, {"icc_profile": b"not a profile"},
                    {"icc_profile": linear_profile("GRAY")}):  # a gray profile on RGB pixels does not apply
        assert (decode(encoded(img, **options), 10**8) == pixels).all(), options
