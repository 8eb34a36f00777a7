"""Decoding what users send: sizes refused by the header with the server's own limit, phone photos upright,
and aspect ratios the model can work on."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from backend.core.errors import ErrorCode, LayerBridgeError
from backend.imaging.image import MAX_ASPECT, decode, from_raw


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
                 lambda: from_raw(bytes(width * height * 4), width, height, 10**8)):
        with pytest.raises(LayerBridgeError) as info:
            read()
        assert info.value.code == ErrorCode.invalid_image
        assert f"at most {MAX_ASPECT} times its short side" in info.value.message


def test_the_widest_accepted_strip_has_a_bucket_the_model_can_use():
    from backend.model.inputs import bucket_size

    for resolution in (640, 1024):
        w, h = bucket_size(MAX_ASPECT * 7, 7, resolution)
        assert w > 0 and h >= 32, (resolution, w, h)
    assert decode(png(MAX_ASPECT * 7, 7), 10**8).shape == (7, MAX_ASPECT * 7, 4)


def linear_profile(space: str = "RGB ") -> bytes:
    """A minimal ICC v2 display profile with gamma 1.0 (linear light): sRGB primaries for RGB, a kTRC for gray."""

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


def photoshop_file(planes: list[bytes], width: int, height: int, depth: int = 8, version: int = 1,
                   icc: bytes = b"", mode: int = 3) -> bytes:
    """A flat Photoshop file (RGB unless `mode` says: 1 grayscale, 4 CMYK, 9 Lab) as Adobe's file format
    specification lays it out: header, colour mode data, image resources (the ICC profile, resource 1039), an empty
    layer and mask section, then the raw merged image planes. Version 2 is the large document format (PSB), whose
    section lengths are 8 bytes."""

    header = b"8BPS" + struct.pack(">H6xHIIHH", version, len(planes), height, width, depth, mode)
    resources = b""
    if icc:
        resources = b"8BIM" + struct.pack(">H", 1039) + b"\0\0" + struct.pack(">I", len(icc)) + icc + bytes(len(icc) % 2)
    layers = struct.pack(">I" if version == 1 else ">Q", 0)
    return (header + struct.pack(">I", 0) + struct.pack(">I", len(resources)) + resources + layers
            + struct.pack(">H", 0) + b"".join(planes))


def test_a_transparent_photoshop_file_reads_as_photoshop_shows_it(tmp_path):
    from backend.imaging.export import flatten, write_psd
    from backend.imaging.image import PlacedLayer

    red = np.zeros((20, 30, 4), np.uint8)
    red[..., 0], red[..., 3] = 255, 128
    ramp = np.zeros((10, 40, 4), np.uint8)
    ramp[..., 1], ramp[..., 2], ramp[..., 3] = 90, 200, np.arange(40, dtype=np.uint8) * 6
    stack = [PlacedLayer("Red", 10, 5, red), PlacedLayer("Ramp", 0, 30, ramp)]
    write_psd(tmp_path / "t.psd", stack, 80, 50)
    out = decode((tmp_path / "t.psd").read_bytes(), 10**8)
    expected = np.asarray(flatten(stack, 80, 50))
    assert (out[..., 3] == expected[..., 3]).all()
    # The merged image is stored matted on white in 8 bits: read raw, the half-transparent red would be
    # (255, 127, 127); taken off again, each colour is as close as the matted byte allows (±255 / alpha / 2).
    assert tuple(out[10, 20]) == (255, 0, 0, 128)
    seen = expected[..., 3] > 0
    error = np.abs(out[seen][:, :3].astype(int) - expected[seen][:, :3]).max(axis=1)
    assert (error <= 1 + 255 / 2 / expected[seen][:, 3]).all()


@pytest.mark.parametrize("depth, sample, expected", [(8, b"\x9c", 156), (16, (40000).to_bytes(2, "big"), 156)])
def test_photoshop_files_of_8_and_16_bits_and_large_documents_are_read(depth, sample, expected):
    w, h = 6, 4
    for version in (1, 2):
        out = decode(photoshop_file([sample * (w * h)] * 3, w, h, depth, version), 10**8)
        assert out.shape == (h, w, 4)
        assert (out[..., :3] == expected).all() and (out[..., 3] == 255).all()


def test_a_photoshop_files_profile_is_honoured():
    w, h = 5, 3
    out = decode(photoshop_file([bytes([LINEAR_MID]) * (w * h)] * 3, w, h, icc=linear_profile()), 10**8)
    assert np.abs(out[..., :3].astype(int) - SRGB_MID).max() <= 1


def test_a_photoshop_file_too_large_is_refused_from_its_header():
    header_only = photoshop_file([], 40_000, 10)
    with pytest.raises(LayerBridgeError) as err:
        decode(header_only, 10**9)
    assert err.value.code == ErrorCode.image_too_large and "40000×10" in err.value.message
    with pytest.raises(LayerBridgeError) as err:
        decode(b"8BPS\0\1", 10**9)
    assert err.value.code == ErrorCode.invalid_image


def test_a_32_bit_photoshop_file_is_refused_with_what_to_do():
    with pytest.raises(LayerBridgeError) as err:
        decode(photoshop_file([struct.pack(">f", 0.5)] * 3, 1, 1, depth=32), 10**9)
    assert err.value.code == ErrorCode.unsupported_image and "16 Bits/Channel" in err.value.message


def without_merged_image(psd: bytes) -> bytes:
    """The file as Photoshop saves it with "Maximize compatibility" off: the version info resource (1057) says it
    has no real merged image, and the merged image section holds white."""
    at = 26
    channels, height, width = struct.unpack(">HII", psd[12:22])
    colour_mode_end = at + 4 + struct.unpack(">I", psd[at:at + 4])[0]
    resources_length = struct.unpack(">I", psd[colour_mode_end:colour_mode_end + 4])[0]
    resources = psd[colour_mode_end + 4:colour_mode_end + 4 + resources_length]
    layers_at = colour_mode_end + 4 + resources_length
    layers_end = layers_at + 4 + struct.unpack(">I", psd[layers_at:layers_at + 4])[0]

    def unicode(text: str) -> bytes:
        return struct.pack(">I", len(text)) + text.encode("utf-16-be")

    info = struct.pack(">I", 1) + b"\0" + unicode("Adobe Photoshop") + unicode("Adobe Photoshop 2024") + struct.pack(">I", 1)
    block = b"8BIM" + struct.pack(">H", 1057) + b"\0\0" + struct.pack(">I", len(info)) + info + bytes(len(info) % 2)
    resources += block
    white = struct.pack(">H", 0) + b"\xff" * (width * height * channels)
    return psd[:colour_mode_end] + struct.pack(">I", len(resources)) + resources + psd[layers_at:layers_end] + white


def test_a_photoshop_file_without_its_merged_image_has_its_layers_composited(tmp_path):
    from backend.imaging.export import flatten, write_psd
    from backend.imaging.image import PlacedLayer

    rng = np.random.default_rng(4)
    back = np.concatenate([rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), np.full((40, 60, 1), 255, np.uint8)], 2)
    spot = np.zeros((10, 12, 4), np.uint8)
    spot[...] = (20, 200, 40, 255)
    stack = [PlacedLayer("Back", 0, 0, back), PlacedLayer("Spot", 7, 9, spot)]
    write_psd(tmp_path / "t.psd", stack, 60, 40)
    out = decode(without_merged_image((tmp_path / "t.psd").read_bytes()), 10**8)
    assert (out == np.asarray(flatten(stack, 60, 40))).all()


def zipped(entries: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in entries.items():
            z.writestr(name, content)
    return buf.getvalue()


def test_an_openraster_file_reads_as_its_merged_image(tmp_path):
    from backend.imaging.export import flatten, write_ora
    from backend.imaging.image import PlacedLayer

    spot = np.zeros((10, 12, 4), np.uint8)
    spot[...] = (20, 200, 40, 150)
    stack = [PlacedLayer("Spot", 7, 9, spot)]
    write_ora(tmp_path / "t.ora", stack, 60, 40)
    assert (decode((tmp_path / "t.ora").read_bytes(), 10**8) == np.asarray(flatten(stack, 60, 40))).all()


def test_zip_files_other_than_ora_and_kra_or_without_a_merged_image_are_refused_clearly():
    cases = [
        (zipped({"a.txt": b"x"}), ErrorCode.invalid_image, "OpenRaster (.ora) or Krita (.kra)"),
        (zipped({"mimetype": b"application/x-krita", "maindoc.xml": b"<x/>"}), ErrorCode.invalid_image, "no merged image"),
        (b"PK\3\4 cut short", ErrorCode.invalid_image, "zip file could not be read"),
        # a merged image that would unpack past what the pixel limit allows, refused before it is unpacked
        (zipped({"mimetype": b"image/openraster", "mergedimage.png": bytes(9 * 1000 + (1 << 20))}),
         ErrorCode.image_too_large, "too large"),
    ]
    for data, code, words in cases:
        with pytest.raises(LayerBridgeError) as err:
            decode(data, 1000)
        assert err.value.code == code and words in err.value.message, err.value.message


def test_lab_images_are_converted_to_srgb():
    """L*a*b* Photoshop files (and Pillow's LAB images, as from CIELAB TIFFs) were relabelled, not converted: any
    colour came out as transparent noise."""
    w, h = 3, 1
    # 8-bit Lab as Photoshop stores it: L * 255 / 100, a + 128, b + 128; white, mid gray (L 50), sRGB red
    planes = [bytes([255, 128, 136]), bytes([128, 128, 208]), bytes([128, 128, 195])]
    out = decode(photoshop_file(planes, w, h, mode=9), 10**8)
    assert (out[..., 3] == 255).all()
    assert np.abs(out[0, 0, :3].astype(int) - 255).max() <= 1
    assert np.abs(out[0, 1, :3].astype(int) - 119).max() <= 1
    assert out[0, 2, 0] >= 250 and out[0, 2, 1:3].max() <= 12, out[0, 2]


def test_a_heic_photo_is_read(tmp_path):
    """HEIC, as phones save photos (written here by ImageMagick through libheif; read through pi-heif)."""
    import subprocess

    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:, :32] = (220, 30, 30)
    picture[:, 32:] = (30, 30, 220)
    Image.fromarray(picture).save(tmp_path / "photo.png")
    subprocess.run(["convert", str(tmp_path / "photo.png"), "-quality", "95", str(tmp_path / "photo.heic")], check=True)
    data = (tmp_path / "photo.heic").read_bytes()
    assert data[4:12] == b"ftypheic"
    out = decode(data, 10**8)
    assert out.shape == (48, 64, 4) and (out[..., 3] == 255).all()
    assert np.abs(out[8:40, 4:28, :3].astype(int) - (220, 30, 30)).max() <= 8  # lossy: within a few levels
    assert np.abs(out[8:40, 36:60, :3].astype(int) - (30, 30, 220)).max() <= 8


def test_a_photoshop_file_whose_layers_hold_more_than_max_pixels_is_refused_before_compositing(tmp_path):
    """A 64×64 canvas holding one layer of 1200×1200 and no merged image: compositing would decode the whole layer,
    so it counts against max_pixels, not only the canvas of the header."""
    from backend.imaging.export import write_psd
    from backend.imaging.image import PlacedLayer

    big = np.zeros((1200, 1200, 4), np.uint8)
    big[...] = (30, 60, 90, 255)
    write_psd(tmp_path / "t.psd", [PlacedLayer("Huge", 0, 0, big)], 64, 64)
    bomb = without_merged_image((tmp_path / "t.psd").read_bytes())
    with pytest.raises(LayerBridgeError) as err:
        decode(bomb, 1_000_000)
    assert err.value.code == ErrorCode.image_too_large and "1.4 megapixels" in err.value.message
    assert decode(bomb, 2_000_000).shape == (64, 64, 4)  # within the limit, it is composited
