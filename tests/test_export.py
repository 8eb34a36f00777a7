"""The files `decompose` writes (backend/imaging/export.py), read back by psd-tools, Pillow, zipfile, a real Krita and GIMP."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from backend.imaging import export
from krita_reader import read_in_krita
from backend.core.errors import ErrorCode, LayerBridgeError
from backend.imaging.image import PlacedLayer, composite
from backend.imaging.metrics import recomposition

W, H = 64, 48
LONG = "long " * 80  # 400 characters


def _layer(name: str, x: int, y: int, w: int, h: int, seed: int) -> PlacedLayer:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
    a[0, 0, 3] = 0  # a fully transparent pixel, with colour
    return PlacedLayer(name, x, y, a)


@pytest.fixture()
def stack() -> list[PlacedLayer]:
    """Bottom to top: names Photoshop's legacy (Mac Roman) field cannot hold, an empty layer, a name too long."""
    return [
        _layer("Background", 0, 0, W, H, 1),
        _layer("文字 layer", 5, 6, 20, 10, 2),
        PlacedLayer("empty", 0, 0, np.zeros((0, 0, 4), np.uint8)),
        _layer("emoji 🎨 ünï", 30, 3, 7, 9, 3),
        _layer(LONG + "\x01", 50, 40, 3, 2, 4),
    ]


NAMES = ["Background", "文字 layer", "empty", "emoji 🎨 ünï", LONG.strip()[:255].rstrip()]


def test_names_no_format_can_store_are_cleaned_the_same_everywhere(tmp_path):
    from psd_tools import PSDImage

    undecodable = os.fsdecode(b"caf\xe9 \x07bell")  # a file name's stem that is not UTF-8 (restore takes stems)
    assert export.layer_name(undecodable) == "caf bell"
    assert export.layer_name("\x00 ") == "Layer" and len(export.layer_name("é" * 300)) == 255
    layers = [PlacedLayer(undecodable, 0, 0, np.full((2, 2, 4), 255, np.uint8))]
    for name in ("a.psd", "a.ora", "a"):
        export.write(tmp_path / name, layers, 2, 2)
    assert [layer.name for layer in PSDImage.open(tmp_path / "a.psd")] == ["caf bell"]
    with zipfile.ZipFile(tmp_path / "a.ora") as z:
        assert ET.fromstring(z.read("stack.xml")).find("./stack/layer").get("name") == "caf bell"
    assert export.read_folder(tmp_path / "a")[0][0].name == "caf bell"


# --- PSD ---------------------------------------------------------------------------------------------------------


def test_psd_reads_back_with_order_names_offsets_and_exact_pixels(stack, tmp_path):
    from psd_tools import PSDImage

    path = tmp_path / "out.psd"
    export.write_psd(path, stack, W, H)
    psd = PSDImage.open(path)
    assert (psd.width, psd.height, psd.depth, psd.version) == (W, H, 8, 1)
    assert [layer.name for layer in psd] == NAMES  # Unicode names ('luni'), bottom to top
    for layer, src in zip(psd, stack):
        if src.width:
            assert (layer.left, layer.top, layer.width, layer.height) == (src.x, src.y, src.width, src.height)
            assert np.array_equal(np.asarray(layer.topil(apply_icc=False)), src.pixels)  # alpha too
        else:  # a single transparent pixel
            assert (layer.width, layer.height) == (1, 1)
            assert np.asarray(layer.topil(apply_icc=False))[..., 3].max() == 0


def test_psd_is_tagged_srgb(stack, tmp_path):
    from psd_tools.constants import Resource
    from psd_tools import PSDImage

    path = tmp_path / "out.psd"
    export.write_psd(path, stack, W, H)
    icc = PSDImage.open(path).image_resources.get_data(Resource.ICC_PROFILE)
    assert icc, "no ICC profile"
    profile = ImageCms.ImageCmsProfile(__import__("io").BytesIO(icc))
    assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_psd_merged_image_is_the_composite_with_its_transparency(stack, tmp_path):
    """Viewers and thumbnailers read only the merged image: it must be the picture, transparency included."""
    from psd_tools import PSDImage

    path = tmp_path / "out.psd"
    export.write_psd(path, stack, W, H)
    expected = composite(stack, W, H)
    merged = np.asarray(PSDImage.open(path).topil(apply_icc=False))
    assert merged.shape == (H, W, 4)
    assert recomposition(stack, merged).max_error <= 2.5 / 255
    # Pillow reads the section as stored (over white): its alpha is the composite's, not blank
    stored = np.asarray(Image.open(path))
    assert stored.shape == (H, W, 4)
    assert np.abs(stored[..., 3].astype(int) - np.rint(expected[..., 3] * 255)).max() <= 1
    over_white = expected[..., :3] + (1 - expected[..., 3:])
    assert np.abs(stored[..., :3] / 255 - over_white).max() <= 2.5 / 255


def test_psd_wider_than_the_format_allows_is_refused_clearly(tmp_path):
    path = tmp_path / "wide.psd"
    layers = [PlacedLayer("a", 0, 0, np.full((1, 30_001, 4), 255, np.uint8))]
    with pytest.raises(LayerBridgeError) as err:
        export.write_psd(path, layers, 30_001, 1)
    assert err.value.code == ErrorCode.image_too_large and ".ora" in err.value.message
    assert list(tmp_path.iterdir()) == []


# --- OpenRaster --------------------------------------------------------------------------------------------------


def test_ora_follows_the_file_layout_and_stack_specs(stack, tmp_path):
    path = tmp_path / "out.ora"
    export.write_ora(path, stack, W, H)
    with zipfile.ZipFile(path) as z:
        first = z.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED and not first.extra
        assert z.read("mimetype") == b"image/openraster"
        raw = z.read("stack.xml")
        assert raw.startswith(b"<?xml") and b"encoding='UTF-8'" in raw
        image = ET.fromstring(raw)
        assert (image.get("w"), image.get("h")) == (str(W), str(H))
        layers = image.findall("./stack/layer")
        assert [layer.get("name") for layer in layers] == NAMES[::-1]  # top first
        names = set(z.namelist())
        for layer, src in zip(reversed(layers), stack):
            assert (int(layer.get("x")), int(layer.get("y"))) == (src.x, src.y)
            assert layer.get("composite-op") == "svg:src-over" and layer.get("visibility") == "visible"
            png = np.asarray(Image.open(z.open(layer.get("src"))))
            if src.width:
                assert np.array_equal(png, src.pixels)
            else:
                assert png.shape == (1, 1, 4) and png[..., 3].max() == 0
        data = {n for n in names if n.startswith("data/")}
        assert data == {layer.get("src") for layer in layers}  # every data file referenced, none missing

        merged = Image.open(z.open("mergedimage.png"))
        assert merged.size == (W, H) and merged.mode == "RGBA" and not merged.info.get("interlace")
        assert recomposition(stack, np.asarray(merged)).max_error <= 2.5 / 255
        thumb = Image.open(z.open("Thumbnails/thumbnail.png"))
        assert thumb.size == (W, H) and thumb.mode == "RGBA"  # small images are not upscaled


def test_ora_thumbnail_fits_256_and_keeps_the_aspect(tmp_path):
    path = tmp_path / "wide.ora"
    export.write_ora(path, [_layer("a", 0, 0, 1000, 300, 5)], 1000, 300)
    with zipfile.ZipFile(path) as z:
        assert Image.open(z.open("Thumbnails/thumbnail.png")).size == (256, 77)
        assert Image.open(z.open("mergedimage.png")).size == (1000, 300)


# --- folder ------------------------------------------------------------------------------------------------------

WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def test_folder_file_names_are_unique_and_safe_everywhere(tmp_path):
    names = ["Layer", "Layer", "layer", "CON", "aux.", "trailing dot.", "a/b\\c:d*?\"<>|", "文字", "🎨", "x" * 300,
             " "]
    layers = [_layer(name, i, 0, 2, 2, i) for i, name in enumerate(names)]
    out = tmp_path / "out"
    export.write_folder(out, layers, 20, 4)
    files = [entry["file"] for entry in json.loads((out / "layers.json").read_text(encoding="utf-8"))["layers"]]
    assert len(set(f.lower() for f in files)) == len(files)
    for file in files:
        stem = file[: -len(".png")]
        assert re.fullmatch(r"\d{2}-[a-z0-9]+(-[a-z0-9]+)*\.png", file), file
        assert len(file) <= 70 and stem.split(".")[0] not in WINDOWS_RESERVED
        assert (out / file).is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "layers.json"])


def test_folder_manifest_is_as_documented_and_round_trips(stack, tmp_path):
    out = tmp_path / "out"
    export.write_folder(out, stack, W, H, {"seed": 7, "caption": "a card"})
    manifest = json.loads((out / "layers.json").read_text(encoding="utf-8"))
    assert set(manifest) == {"canvas", "order", "layers", "seed", "caption"}
    assert manifest["canvas"] == {"width": W, "height": H} and manifest["order"] == "bottom_to_top"
    for i, (entry, src) in enumerate(zip(manifest["layers"], stack)):
        assert set(entry) == {"index", "name", "file", "group", "parent", "x", "y", "width", "height", "text"}
        assert entry["group"] is False and entry["parent"] is None
        assert (entry["index"], entry["x"], entry["y"], entry["width"], entry["height"]) == (
            i, src.x, src.y, src.width, src.height)
        assert (entry["file"] is None) == (src.width == 0)
    guide = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "layers.json" in guide and "bottom_to_top" in guide  # the format is described for users

    layers, w, h = export.read_folder(out)
    assert (w, h) == (W, H) and [layer.name for layer in layers] == NAMES
    for got, src in zip(layers, stack):
        assert (got.x, got.y) == (src.x, src.y) and np.array_equal(got.pixels, src.pixels)


def test_folder_into_an_existing_folder_keeps_the_users_other_files(stack, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    export.write_folder(out, stack, W, H)
    assert (out / "notes.txt").read_text() == "mine" and (out / "layers.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside it


# --- failures and size -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.psd", "out.ora", "out"])
def test_a_writer_failing_midway_leaves_nothing_behind(stack, tmp_path, monkeypatch, name):
    from psd_tools.api.layers import PixelLayer

    calls = []

    def fail_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    if name.endswith(".psd"):
        real = PixelLayer.frompil.__func__
        monkeypatch.setattr(PixelLayer, "frompil", classmethod(fail_on_the_third))
    else:
        real = Image.Image.save
        monkeypatch.setattr(Image.Image, "save", fail_on_the_third)
    with pytest.raises(OSError):
        export.write(tmp_path / name, stack, W, H)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_an_existing_target_as_it_was(stack, tmp_path, monkeypatch):
    path = tmp_path / "out.ora"
    path.write_bytes(b"the previous file")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError):
        export.write_ora(path, stack, W, H)
    assert path.read_bytes() == b"the previous file" and sorted(p.name for p in tmp_path.iterdir()) == ["out.ora"]


MEASURE = textwrap.dedent("""
    import resource, sys, time
    from pathlib import Path
    import numpy as np
    from backend.imaging import export
    from backend.imaging.image import PlacedLayer
    w, h = 4000, 3000
    full = np.zeros((h, w, 4), np.uint8)
    full[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    full[..., 3] = 255
    part = full[: h // 2, : w // 2].copy()
    part[::3, ::2, 3] = 100
    layers = [PlacedLayer("Background", 0, 0, full), PlacedLayer("Layer 1", 100, 50, part)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.monotonic()
    export.write(Path(sys.argv[1]), layers, w, h)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(grown / (w * h), time.monotonic() - started)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.parametrize("name", ["big.psd", "big.ora"])
def test_large_documents_are_written_without_whole_canvas_float_copies(tmp_path, name):
    """Peak memory per canvas pixel (the layers themselves excluded): a float64 composite alone is 32 B/px."""
    r = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / name)], capture_output=True, text=True,
                       timeout=300, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr
    bytes_per_px, seconds = map(float, r.stdout.split())
    assert bytes_per_px < 24, f"{bytes_per_px:.1f} B/px"


# --- a real Krita ------------------------------------------------------------------------------------------------

KRITA_SCRIPT = '''
import base64, json, os
from krita import Krita

def main(args):
    out = {}
    for path in os.environ["KR_FILES"].split(os.pathsep):
        doc = Krita.instance().openDocument(path)
        if doc is None:
            out[path] = None
            continue
        doc.waitForDone()
        layers = []
        for node in doc.rootNode().childNodes():
            b = node.bounds()
            px = bytes(node.pixelData(b.x(), b.y(), b.width(), b.height())) if b.width() > 0 else b""
            layers.append({"name": node.name(), "type": node.type(), "box": [b.x(), b.y(), b.width(), b.height()],
                           "pixels": base64.b64encode(px).decode()})
        out[path] = {"size": [doc.width(), doc.height()], "profile": doc.colorProfile(), "layers": layers}
        if path.endswith(".ora"):      # and as Krita's own file, for the server to read back
            doc.setBatchmode(True)
            out[path]["saved_kra"] = doc.saveAs(path[:-4] + ".kra")
        doc.close()
    with open(os.environ["KR_RESULTS"], "w") as f:
        json.dump(out, f)
'''


@pytest.mark.skipif(shutil.which("kritarunner") is None, reason="Krita is not installed")
def test_krita_opens_the_psd_and_the_ora_with_the_same_layers(stack, tmp_path):
    files = [tmp_path / "out.psd", tmp_path / "out.ora"]
    for path in files:
        export.write(path, stack, W, H)
    data = read_in_krita(KRITA_SCRIPT, files, tmp_path)
    for path in files:
        doc = data[str(path)]
        assert doc is not None, f"Krita could not open {path.name}"
        assert doc["size"] == [W, H]
        assert [layer["name"] for layer in doc["layers"]] == NAMES, path.name
        for layer, src in zip(doc["layers"], stack):
            assert layer["type"] == "paintlayer"
            if not src.width:
                assert base64.b64decode(layer["pixels"]).strip(b"\0") == b""
                continue
            assert layer["box"] == [src.x, src.y, src.width, src.height], (path.name, src.name)
            bgra = np.frombuffer(base64.b64decode(layer["pixels"]), np.uint8).reshape(src.height, src.width, 4)
            rgba = bgra[..., [2, 1, 0, 3]]
            seen = src.pixels[..., 3] > 0  # Krita may drop the colour of fully transparent pixels
            assert np.array_equal(rgba[..., 3], src.pixels[..., 3]), (path.name, src.name)
            assert np.array_equal(rgba[seen], src.pixels[seen]), (path.name, src.name)
    assert "sRGB" in data[str(files[0])]["profile"]
    # the .kra Krita saved reads as its merged image, which is the stack's composite
    assert data[str(files[1])]["saved_kra"], log[-3000:]
    from backend.imaging.image import decode

    merged = decode((tmp_path / "out.kra").read_bytes(), 10**8)
    composite = np.asarray(export.flatten(stack, W, H))
    assert merged.shape == composite.shape and np.array_equal(merged[..., 3], composite[..., 3])
    seen = composite[..., 3] > 0
    assert np.abs(merged[seen].astype(int) - composite[seen]).max() <= 1


# --- a real GIMP -------------------------------------------------------------------------------------------------

GIMP_SCRIPT = """
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE {psd} {psd})))
       (port (open-output-file {report})))
  (define (say first . rest)
    (display first port)
    (for-each (lambda (item) (display " " port) (display item port)) rest)
    (newline port))
  (say (car (gimp-image-width image)) (car (gimp-image-height image)))
  (apply say (vector->list (cadr (gimp-image-get-color-profile image))))
  (let loop ((layers (vector->list (cadr (gimp-image-get-layers image)))) (i 0))
    (if (pair? layers)
        (let* ((layer (car layers))
               (offsets (gimp-drawable-offsets layer))
               (mode (car (gimp-layer-get-mode layer)))
               (png (string-append {out} "/" (number->string i) ".png")))
          (say (car offsets) (cadr offsets) (car (gimp-drawable-width layer)) (car (gimp-drawable-height layer))
               (car (gimp-layer-get-opacity layer)) (car (gimp-item-get-visible layer))
               (if (= mode LAYER-MODE-NORMAL) "normal" mode) (car (gimp-item-get-name layer)))
          (file-png-save2 RUN-NONINTERACTIVE image layer png png 0 1 0 0 0 0 0 0 1)
          (loop (cdr layers) (+ i 1)))))
  (close-output-port port))
"""


def _scheme(path: Path) -> str:
    return json.dumps(str(path), ensure_ascii=False)


def _run_gimp(script: str, home: Path, timeout: float = 120) -> str:
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local/share"), XDG_CACHE_HOME=str(home / ".cache"))
    args = ["gimp", "--no-interface", "--no-data", "--no-fonts", "-b", script, "-b", "(gimp-quit 0)"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.communicate(timeout=timeout)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        return proc.communicate()[0].decode(errors="replace")


def test_gimp_opens_the_psd_with_the_same_layers(stack, tmp_path):
    from psd_tools import PSDImage
    from psd_tools.constants import Resource

    assert shutil.which("gimp"), "GIMP is not installed (scripts/apt-packages-test.txt)"
    psd, out = tmp_path / "out.psd", tmp_path / "gimp"
    export.write_psd(psd, stack, W, H)
    out.mkdir()
    report = out / "report.txt"
    log = _run_gimp(GIMP_SCRIPT.format(psd=_scheme(psd), out=_scheme(out), report=_scheme(report)), tmp_path / "home")
    lines = report.read_text(encoding="utf-8").splitlines() if report.is_file() else []
    assert len(lines) == 2 + len(stack), log[-3000:]
    assert lines[0] == f"{W} {H}"
    icc = PSDImage.open(psd).image_resources.get_data(Resource.ICC_PROFILE)
    assert bytes(map(int, lines[1].split())) == icc  # kept as it is, not converted
    layers = [(line.split(" ", 7), np.asarray(Image.open(out / f"{i}.png").convert("RGBA")))
              for i, line in enumerate(lines[2:])][::-1]  # GIMP lists them top first
    assert [fields[7] for fields, _ in layers] == NAMES
    for (fields, rgba), src in zip(layers, stack):
        x, y, w, h = map(int, fields[:4])
        assert fields[4:7] == ["100.0", "1", "normal"], src.name
        if not src.width:  # a single transparent pixel
            assert (w, h) == (1, 1) and rgba[..., 3].max() == 0
            continue
        assert (x, y, w, h) == (src.x, src.y, src.width, src.height), src.name
        seen = src.pixels[..., 3] > 0
        assert np.array_equal(rgba[..., 3], src.pixels[..., 3]), src.name
        assert np.array_equal(rgba[seen], src.pixels[seen]), src.name
