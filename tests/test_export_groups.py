"""A layer hierarchy (element split, docs/elements.md) in the files `decompose` writes: PSD groups read back by
psd-tools and a real Krita, OpenRaster nested stacks (Krita too), layers.json's group/parent/children; and
`decompose --split-elements`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.core.layer import PlacedLayer
from backend.imaging import export
from krita_reader import read_in_krita
from backend.imaging.image import composite
from backend.imaging.metrics import recomposition
from backend.imaging.split import split_stack

W, H = 120, 80


def shapes(seed: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Noise colour, opaque (or half transparent) only inside `boxes` (x, y, w, h)."""
    a = np.random.default_rng(seed).integers(0, 256, (H, W, 4), dtype=np.uint8)
    alpha = np.zeros((H, W), np.uint8)
    for k, (x, y, w, h) in enumerate(boxes):
        alpha[y:y + h, x:x + w] = 255 if k % 2 == 0 else 170
    a[..., 3] = alpha
    return a


@pytest.fixture()
def hierarchy() -> list[PlacedLayer]:
    """Background; "Icons" (three elements, a group); "Bar" (one element, plain); "Dots" (two elements, a group)."""
    flat = [
        PlacedLayer("Background", 0, 0, np.random.default_rng(0).integers(0, 256, (H, W, 4), dtype=np.uint8)),
        PlacedLayer("Icons", 0, 0, shapes(1, [(5, 5, 20, 20), (40, 8, 12, 12), (80, 50, 30, 20)])),
        PlacedLayer("Bar", 0, 0, shapes(2, [(10, 60, 60, 8)])),
        PlacedLayer("Dots", 0, 0, shapes(3, [(60, 20, 6, 6), (100, 5, 9, 9)])),
    ]
    for layer in flat[1:]:  # cropped to their content, as a job returns them
        ys, xs = np.nonzero(layer.pixels[..., 3])
        layer.pixels = layer.pixels[ys.min():ys.max() + 1, xs.min():xs.max() + 1].copy()
        layer.x, layer.y = int(xs.min()), int(ys.min())
    stack = split_stack(flat)
    assert [(layer.name, layer.parent, layer.children) for layer in stack] == [
        ("Background", None, None), ("Icons", None, [2, 3, 4]), ("Icons 1", 1, None), ("Icons 2", 1, None),
        ("Icons 3", 1, None), ("Bar", None, None), ("Dots", None, [7, 8]), ("Dots 1", 6, None), ("Dots 2", 6, None)]
    return stack


def pixel_layers(stack: list[PlacedLayer]) -> list[PlacedLayer]:
    return [layer for layer in stack if not layer.group]


def test_psd_holds_a_group_per_group_entry_with_its_elements_exact(hierarchy, tmp_path):
    from psd_tools import PSDImage

    path = tmp_path / "out.psd"
    export.write_psd(path, hierarchy, W, H)
    psd = PSDImage.open(path)
    assert [(layer.name, layer.is_group()) for layer in psd] == [
        ("Background", False), ("Icons", True), ("Bar", False), ("Dots", True)]  # bottom to top
    assert [layer.name for layer in psd[1]] == ["Icons 1", "Icons 2", "Icons 3"]
    assert [layer.name for layer in psd[3]] == ["Dots 1", "Dots 2"]
    read = [psd[0], *psd[1], psd[2], *psd[3]]
    for got, src in zip(read, pixel_layers(hierarchy), strict=True):
        assert (got.name, got.left, got.top, got.width, got.height) == (src.name, src.x, src.y, src.width, src.height)
        assert np.array_equal(np.asarray(got.topil(apply_icc=False)), src.pixels)
    merged = np.asarray(psd.topil(apply_icc=False))  # stored matted on white: within the rounding of that
    assert recomposition(pixel_layers(hierarchy), merged).max_error <= 2.5 / 255


def test_ora_nests_a_stack_per_group_entry(hierarchy, tmp_path):
    path = tmp_path / "out.ora"
    export.write_ora(path, hierarchy, W, H)
    with zipfile.ZipFile(path) as z:
        root = ET.fromstring(z.read("stack.xml")).find("stack")
        top = [(child.tag, child.get("name")) for child in root]
        assert top == [("stack", "Dots"), ("layer", "Bar"), ("stack", "Icons"), ("layer", "Background")]  # top first
        icons, dots = root[2], root[0]
        assert [layer.get("name") for layer in icons] == ["Icons 3", "Icons 2", "Icons 1"]
        assert [layer.get("name") for layer in dots] == ["Dots 2", "Dots 1"]
        assert icons.get("x") is None and icons.get("isolation") == "auto"  # children placed on the canvas
        assert icons.get("composite-op") == "svg:src-over" and icons.get("visibility") == "visible"
        layers = [root[3], *reversed(list(icons)), root[1], *reversed(list(dots))]
        sources = pixel_layers(hierarchy)
        for element, src in zip(layers, sources, strict=True):
            assert element.tag == "layer" and (int(element.get("x")), int(element.get("y"))) == (src.x, src.y)
            assert np.array_equal(np.asarray(Image.open(z.open(element.get("src")))), src.pixels)
        assert {n for n in z.namelist() if n.startswith("data/")} == {e.get("src") for e in layers}
        placed = [PlacedLayer(e.get("name"), int(e.get("x")), int(e.get("y")),
                              np.asarray(Image.open(z.open(e.get("src"))))) for e in layers]
        assert np.array_equal(composite(placed, W, H), composite(sources, W, H))
        merged = np.asarray(Image.open(z.open("mergedimage.png")))
        assert np.array_equal(merged, np.asarray(export.flatten(hierarchy, W, H)))


def test_folder_manifest_gives_the_hierarchy_and_reads_back(hierarchy, tmp_path):
    out = tmp_path / "out"
    export.write_folder(out, hierarchy, W, H)
    entries = json.loads((out / "layers.json").read_text(encoding="utf-8"))["layers"]
    icons = entries[1]
    assert icons == {"index": 1, "name": "Icons", "file": None, "group": True, "children": [2, 3, 4], "parent": None,
                     "x": hierarchy[1].x, "y": hierarchy[1].y, "width": hierarchy[1].box[2],
                     "height": hierarchy[1].box[3], "text": []}
    assert icons["x"] == 5 and icons["y"] == 5 and icons["width"] == 105 and icons["height"] == 65
    assert [(e["group"], e["parent"], "children" in e) for e in entries[2:6]] == [
        (False, 1, False), (False, 1, False), (False, 1, False), (False, None, False)]
    assert all(e["file"] for e in entries if not e["group"])
    assert sorted(p.name for p in out.iterdir()) == sorted(["layers.json", *(e["file"] for e in entries if e["file"])])

    layers, w, h = export.read_folder(out)
    assert (w, h) == (W, H)
    assert [(la.name, la.parent, la.children, la.box) for la in layers] == [
        (lb.name, lb.parent, lb.children, lb.box) for lb in hierarchy]
    assert np.array_equal(composite(pixel_layers(layers), W, H), composite(pixel_layers(hierarchy), W, H))


JOB = ["--layers", "2", "--steps", "2", "--seed", "5", "--prompt", "a card", "--no-name-layers", "--split-elements"]


def two_shapes(tmp_path: Path) -> Path:
    source = np.random.default_rng(4).integers(0, 256, (61, 97, 4), dtype=np.uint8)
    source[..., 3] = 0
    source[5:25, 5:30, 3] = 255
    source[35:55, 60:90, 3] = 255
    image = tmp_path / "shapes.png"
    Image.fromarray(source, "RGBA").save(image)
    return image


def decompose(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", "decompose", *args, *JOB], capture_output=True, text=True,
                          timeout=600, env=env)


def test_decompose_split_elements_writes_groups(tiny_model, tmp_path):
    env = dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(tmp_path / "config"), LAYERBRIDGE_LOG_DIR=str(tmp_path / "log"))
    out = tmp_path / "out"
    r = decompose(str(two_shapes(tmp_path)), "--out", str(out), "--model", str(tiny_model), "--in-process", env=env)
    assert r.returncode == 0, r.stderr
    assert "3 layers in 1 group" in r.stderr
    manifest = json.loads((out / "layers.json").read_text(encoding="utf-8"))
    assert [(e["name"], e["group"], e["parent"]) for e in manifest["layers"]] == [
        ("Background", False, None), ("Layer 1", True, None), ("Layer 1 1", False, 1), ("Layer 1 2", False, 1)]
    assert manifest["layers"][1]["children"] == [2, 3]


def test_decompose_split_elements_through_a_running_server_writes_groups(live_server, tmp_path):
    env = dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(live_server.config_dir))
    out = tmp_path / "out.ora"
    r = decompose(str(two_shapes(tmp_path)), "--out", str(out), "--server", live_server.url, env=env)
    assert r.returncode == 0, r.stderr
    assert "using the LayerBridge server" in r.stderr and "3 layers in 1 group" in r.stderr
    with zipfile.ZipFile(out) as z:
        root = ET.fromstring(z.read("stack.xml")).find("stack")
        assert [(child.tag, child.get("name")) for child in root] == [("stack", "Layer 1"), ("layer", "Background")]
        assert [layer.get("name") for layer in root[0]] == ["Layer 1 2", "Layer 1 1"]


KRITA_SCRIPT = '''
import base64, json, os
from krita import Krita

def tree(node):
    out = []
    for child in node.childNodes():
        b = child.bounds()
        entry = {"name": child.name(), "type": child.type(), "box": [b.x(), b.y(), b.width(), b.height()]}
        if child.type() == "grouplayer":
            entry["children"] = tree(child)
        elif b.width() > 0:
            entry["pixels"] = base64.b64encode(bytes(child.pixelData(b.x(), b.y(), b.width(), b.height()))).decode()
        out.append(entry)
    return out

def main(args):
    out = {}
    for path in os.environ["KR_FILES"].split(os.pathsep):
        doc = Krita.instance().openDocument(path)
        if doc is None:
            out[path] = None
            continue
        doc.waitForDone()
        out[path] = tree(doc.rootNode())
        doc.close()
    with open(os.environ["KR_RESULTS"], "w") as f:
        json.dump(out, f)
'''


@pytest.mark.skipif(shutil.which("kritarunner") is None, reason="Krita is not installed")
def test_krita_opens_the_psd_and_the_ora_with_their_groups(hierarchy, tmp_path):
    files = [tmp_path / "out.psd", tmp_path / "out.ora"]
    for path in files:
        export.write(path, hierarchy, W, H)
    data = read_in_krita(KRITA_SCRIPT, files, tmp_path)
    sources = {layer.name: layer for layer in pixel_layers(hierarchy)}
    for path in files:
        nodes = data[str(path)]
        assert nodes is not None, f"Krita could not open {path.name}"
        assert [(n["name"], n["type"]) for n in nodes] == [
            ("Background", "paintlayer"), ("Icons", "grouplayer"), ("Bar", "paintlayer"), ("Dots", "grouplayer")]
        assert [n["name"] for n in nodes[1]["children"]] == ["Icons 1", "Icons 2", "Icons 3"], path.name
        assert [n["name"] for n in nodes[3]["children"]] == ["Dots 1", "Dots 2"], path.name
        for node in [nodes[0], *nodes[1]["children"], nodes[2], *nodes[3]["children"]]:
            src = sources[node["name"]]
            assert node["box"] == [src.x, src.y, src.width, src.height], (path.name, src.name)
            bgra = np.frombuffer(base64.b64decode(node["pixels"]), np.uint8)
            rgba = bgra.reshape(src.height, src.width, 4)[..., [2, 1, 0, 3]]
            seen = src.pixels[..., 3] > 0  # Krita may drop the colour of fully transparent pixels
            assert np.array_equal(rgba[..., 3], src.pixels[..., 3]), (path.name, src.name)
            assert np.array_equal(rgba[seen], src.pixels[seen]), (path.name, src.name)
