"""The real Krita GUI under Xvfb, on results made here (no model, whose test weights give noise): Decompose layer
hides its source while its result stands in for it, live text over hidden pixels, nested element groups; each against
Krita's own Undo and Redo (kritarunner has no actions, and Krita 5.1 adds SVG shapes only with a document shown)."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import os

from kritaharness import ROOT
from test_krita_gui import run_gui

pytestmark = [pytest.mark.skipif(shutil.which("krita") is None or shutil.which("xvfb-run") is None,
                                 reason="Krita or Xvfb is not installed"),
              pytest.mark.xdist_group("krita")]

FONTS = pathlib.Path("/usr/share/fonts/truetype")
W, H = 900, 500


def bgra(image: Image.Image) -> bytes:
    r, g, b, a = image.convert("RGBA").split()
    return Image.merge("RGBA", (b, g, r, a)).tobytes()


def rgba(path: str, size, depth: str = "U8") -> np.ndarray:
    """A bgra file from Krita as RGBA 0..255 (a 16-bit one rounded from v × 257)."""
    kind = np.uint16 if depth == "U16" else np.uint8
    data = np.frombuffer(pathlib.Path(path).read_bytes(), kind).reshape(size[1], size[0], 4).astype(int)
    if depth == "U16":
        data = (data + 128) // 257
    return data[..., [2, 1, 0, 3]]


def poster(folder: pathlib.Path) -> dict:
    """A white poster with text in DejaVu Sans (bold and regular) and Liberation Serif, on a layer of its own; the
    result a decomposition gives for it: the white background and the text layer, with the server's own reading of
    its text (backend.text.reading.read_text)."""
    from backend.text.reading import read_text

    text = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(text)
    d.text((60, 60), "Summer Sale", font=ImageFont.truetype(str(FONTS / "dejavu/DejaVuSans-Bold.ttf"), 72),
           fill=(200, 30, 40, 255))
    d.text((W / 2, 250), "Fresh bread daily", anchor="ms",
           font=ImageFont.truetype(str(FONTS / "liberation/LiberationSerif-Regular.ttf"), 44), fill=(20, 20, 20, 255))
    small = ImageFont.truetype(str(FONTS / "dejavu/DejaVuSans.ttf"), 32)
    d.text((60, 370), "Open every day", font=small, fill=(20, 40, 90, 255), anchor="ls")
    d.text((60, 415), "all year round", font=small, fill=(20, 40, 90, 255), anchor="ls")
    white = Image.new("RGBA", (W, H), (255, 255, 255, 255))
    whole = Image.alpha_composite(white, text)
    x0, y0, x1, y1 = text.getbbox()
    crop = text.crop((x0, y0, x1, y1))
    blocks = read_text(text).to_dict()["blocks"]
    result = {"name": "Poster", "canvas": {"width": W, "height": H}, "layers": [
        {"index": 0, "name": "Background", "x": 0, "y": 0, "width": W, "height": H, "group": False, "parent": None,
         "text": []},
        {"index": 1, "name": "Text", "x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "group": False,
         "parent": None, "text": blocks}]}
    (folder / "poster.bgra").write_bytes(bgra(whole))
    (folder / "layer0.bgra").write_bytes(bgra(white))
    (folder / "layer1.bgra").write_bytes(bgra(crop))
    (folder / "poster.json").write_text(json.dumps({"width": W, "height": H, "result": result}))
    return {"whole": np.asarray(whole).astype(int), "blocks": blocks}


def ink(image: np.ndarray) -> np.ndarray:
    """Where glyphs are on the white poster: at least half-way from white."""
    return (255 - image[..., :3]).max(axis=2) > 110


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


@pytest.fixture(scope="module")
def gui(plugin_dir, krita_homes, tmp_path_factory, live_server):
    work = tmp_path_factory.mktemp("gui_results")
    truth = poster(work)
    data = run_gui(plugin_dir, krita_homes, work, live_server.url, timeout=300, LB_GUI_MODE="results",
                   LB_POSTER=str(work), LB_WORKDIR=str(work), LAYERBRIDGE_CONFIG_DIR=str(live_server.config_dir),
                   LB_SHOT_DIR=str(work))
    data["work"] = work
    data["truth"] = truth
    return data


def test_decompose_layer_hides_its_source_and_one_undo_brings_it_back(gui):
    out = gui["standin"]
    assert out["state"] == {"ok": True}, out
    names = [(n["name"], n["type"], n["visible"]) for n in out["after"]]
    assert names == [("Background", "paintlayer", True), ("Sticker", "paintlayer", False),
                     ("Sticker", "grouplayer", True)], names
    # the halves composite to the semi-transparent sticker: with the source hidden, the canvas is the original's
    before = rgba(out["before_image"], (120, 80))
    assert np.abs(rgba(out["after_image"], (120, 80)) - before).max() <= 1
    # one undo: the group gone and the source shown again; redo: the group back and the source hidden
    assert out["undone"] == out["before"], out["undone"]
    assert np.abs(rgba(out["undone_image"], (120, 80)) - before).max() <= 1
    assert [(n["name"], n["visible"]) for n in out["redone"]] == [("Background", True), ("Sticker", False),
                                                                   ("Sticker", True)], out["redone"]
    assert np.abs(rgba(out["redone_image"], (120, 80)) - before).max() <= 1


@pytest.mark.parametrize("tag,depth", [("text", "U8"), ("textdeep", "U16")])
def test_text_comes_back_as_live_text_over_its_hidden_pixels(gui, tag, depth):
    out, truth = gui[tag], gui["truth"]
    assert out["state"] == {"ok": True}, out
    assert out["notes"] == [], out["notes"]
    group = out["after"][-1]
    assert group["name"] == "Poster" and out["after"][:-1] == out["before"]
    stack = [(n["name"], n["type"], n["visible"]) for n in group["children"]]
    blocks = truth["blocks"]
    assert len(blocks) == 3 and all(b["editable"] for b in blocks), blocks
    expected = [("Background", "paintlayer", True)]
    for b in blocks:
        name = " ".join(b["text"].split())
        expected += [(name + " (pixels)", "paintlayer", False), (name, "vectorlayer", True)]
    assert stack == expected, stack
    # each text layer holds one SVG text in its font, size and colour
    assert len(out["svg"]) == 3
    for svg, b in zip(out["svg"], blocks):
        assert "<text" in svg and b["font"]["family"] in svg and b["color"] in svg, svg
    # the live text's glyphs cover the original's: over the poster (glyph-mask IoU), and line by line their ink sits
    # where the original's does (its centre within a pixel and a half; thin serif strokes anti-aliased a little
    # differently by Krita's text engine keep a single small line's IoU lower, so each line is held to 0.6)
    shown, whole = rgba(out["after_image"], (W, H), depth), truth["whole"]
    assert iou(ink(shown), ink(whole)) >= 0.8, iou(ink(shown), ink(whole))
    for b in blocks:
        for line in b["lines"]:
            box, pad = line["box"], 6
            y0, x0 = box["y"] - pad, box["x"] - pad
            got, want = ink(shown[y0:y0 + box["height"] + 2 * pad, x0:x0 + box["width"] + 2 * pad]), \
                ink(whole[y0:y0 + box["height"] + 2 * pad, x0:x0 + box["width"] + 2 * pad])
            assert iou(got, want) >= 0.6, (line["text"], iou(got, want))
            for axis in (0, 1):
                centre = lambda m: float((np.nonzero(m)[axis]).mean())
                assert abs(centre(got) - centre(want)) <= 1.5, (line["text"], axis, centre(got), centre(want))
    # the text hidden and its pixels shown give back the exact composite
    assert np.abs(rgba(out["pixels_image"], (W, H), depth) - truth["whole"]).max() <= 1
    # and one undo removes it all
    assert out["undone"] == out["before"]


def test_text_option_off_gives_pixel_layers_only(gui):
    out = gui["textoff"]
    assert out["state"] == {"ok": True}, out
    group = out["after"][-1]
    assert [(n["name"], n["type"]) for n in group["children"]] == [("Background", "paintlayer"), ("Text", "paintlayer")]
    assert np.abs(rgba(out["after_image"], (W, H)) - gui["truth"]["whole"]).max() <= 1


def test_nested_groups_from_a_result_with_elements(gui):
    out = gui["nested"]
    assert out["state"] == {"ok": True}, out
    group = out["after"][-1]
    shape = [(n["name"], n["type"], [c["name"] for c in n.get("children", [])]) for n in group["children"]]
    assert shape == [("Background", "paintlayer", []), ("Icons", "grouplayer", ["Icons 1", "Icons 2"]),
                     ("Logo", "paintlayer", [])], shape
    assert out["undone"] == out["before"]


def test_split_layer_gives_a_group_of_its_elements_and_one_undo_restores_it(gui):
    out = gui["split"]
    assert out["error"] == "" and out["active"] == "Shapes", out
    assert out["split_started"] and out["model_running_at_press"] and out["model_running_after"], out
    assert out["stage"].startswith("Split"), out["stage"]
    names = [(n["name"], n["type"], n["visible"]) for n in out["after"]]
    assert names == [("Background", "paintlayer", True), ("Shapes", "paintlayer", False),
                     ("Shapes", "grouplayer", True)], names
    group = out["after"][-1]
    assert [c["type"] for c in group["children"]] == ["paintlayer"] * 3
    # each element at its shape's place (Krita's exact bounds), in some order
    assert sorted(out["bounds"]) == sorted(list(b) for b in out["boxes"]), out["bounds"]
    before = rgba(out["before_image"], (160, 100))
    assert np.abs(rgba(out["after_image"], (160, 100)) - before).max() <= 1
    assert out["undone"] == out["before"]
    assert np.abs(rgba(out["undone_image"], (160, 100)) - before).max() <= 1


def test_screenshots_of_the_layer_stack(gui):
    """The window and the Layers docker with live text over hidden pixels and a group of elements (with
    LB_SAVE_SCREENSHOT set, into docs/images for the docs)."""
    out = gui["shot"]
    assert out["window"] and out["layers"], out
    group = out["tree"][-1]
    assert [n["type"] for n in group["children"]] == ["paintlayer"] + ["paintlayer", "vectorlayer"] * 3 + ["grouplayer"]
    for name in ("krita-text-layers.png", "krita-layers-docker.png"):
        assert (gui["work"] / name).stat().st_size > 5000
        if os.environ.get("LB_SAVE_SCREENSHOT"):
            shutil.copy(gui["work"] / name, ROOT / "docs" / "images" / name)
