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
