"""The plugin's logic that needs no Krita: settings, protocol parsing, pixel layouts, layer plan, words."""

import ast
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "krita_plugin"))

from layerbridge import pixels, protocol, settings  # noqa: E402
from layerbridge.pixels import Region  # noqa: E402


# -- settings -------------------------------------------------------------------------------------
def test_defaults_and_clamping():
    s = settings.normalize({})
    assert s["url"] == "http://127.0.0.1:7860" and s["layers"] == 4 and s["resolution"] == 640
    s = settings.normalize({"layers": 12, "resolution": 777, "steps": 1, "seed": -5, "cfg_scale": "x",
                            "preset": "nope", "url": " http://h:1/ ", "restore": "false", "bogus": 1})
    assert (s["layers"], s["resolution"], s["steps"], s["seed"], s["cfg_scale"]) == (10, 640, 0, -1, 4.0)
    assert s["preset"] == "best" and s["url"] == "http://h:1" and s["restore"] is False and "bogus" not in s
    assert settings.normalize({"steps": 250})["steps"] == 100 and settings.normalize({"steps": 2})["steps"] == 2


def test_steps_on_auto_leave_the_count_to_the_preset():
    assert settings.normalize({})["steps"] == 0
    p = settings.job_params(settings.normalize({"preset": "fast"}), "Poster")
    assert p["steps"] is None and p["preset"] == "fast"
    assert settings.job_params(settings.normalize({"preset": "fast", "steps": 12}), "")["steps"] == 12
    # settings saved before auto existed hold the old default, 50, whatever the user chose: read as auto;
    # a count the user set is kept, and auto survives a save
    old = {"settings": json.dumps({"steps": 50, "preset": "fast", "layers": 5})}
    assert settings.load(lambda g, k: old.get(k, ""))["steps"] == 0
    old = {"settings": json.dumps({"steps": 30, "preset": "fast"})}
    assert settings.load(lambda g, k: old.get(k, ""))["steps"] == 30
    store = {}
    settings.save(lambda g, k, v: store.__setitem__(k, v), {"steps": 50})
    assert settings.load(lambda g, k: store.get(k, ""))["steps"] == 50


def test_settings_round_trip_through_a_string_store():
    store = {}
    settings.save(lambda g, k, v: store.__setitem__((g, k), v), {"layers": 7, "prompt": "a cat", "seed": 42})
    loaded = settings.load(lambda g, k: store.get((g, k), ""))
    assert (loaded["layers"], loaded["prompt"], loaded["seed"]) == (7, "a cat", 42)
    assert settings.load(lambda g, k: "{not json")["layers"] == 4


def test_job_params():
    p = settings.job_params(settings.normalize({"layers": 3, "seed": -1, "prompt": "x", "steps": 2}), "Poster")
    assert p["layers"] == 3 and p["seed"] is None and p["name"] == "Poster" and p["steps"] == 2
    assert set(p) <= {"layers", "resolution", "steps", "cfg_scale", "cfg_normalize", "prompt",
                      "caption_language", "seed", "preset", "restore", "name", "text_layers", "split_elements"}
    assert settings.job_params(settings.normalize({"seed": 7}), "")["seed"] == 7
    # the two docker options: on by default, remembered as set
    assert p["text_layers"] is True and p["split_elements"] is True
    off = settings.job_params(settings.normalize({"text_layers": "false", "split_elements": False}), "")
    assert off["text_layers"] is False and off["split_elements"] is False


def test_optional_params_go_only_to_a_server_that_announces_them():
    params = settings.job_params(settings.normalize({}), "Poster")
    old = protocol.supported_params(params, {"capabilities": ["http", "bgra8"]})
    assert "text_layers" not in old and "split_elements" not in old and old["name"] == "Poster"
    new = protocol.supported_params(params, {"capabilities": ["bgra8", "text_layers", "split_elements"]})
    assert new == params
    assert set(protocol.supported_params(params, None)) == set(params) - {"text_layers", "split_elements"}
    assert protocol.features({"capabilities": "text_layers"}) == {"text_layers": False, "split_elements": False}
    assert protocol.split_params("x" * 300, False) == {"name": "x" * 200, "text_layers": False}


@pytest.mark.parametrize("platform,env,expected", [
    ("linux", {"HOME": "/h"}, "/h/.config/layerbridge"),
    ("linux", {"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, "/x/layerbridge"),
    ("darwin", {"HOME": "/h"}, "/h/Library/Application Support/layerbridge"),
    ("win32", {"HOME": "C:/u", "LOCALAPPDATA": "C:/u/AppData/Local"}, os.path.join("C:/u/AppData/Local", "layerbridge")),
    ("linux", {"HOME": "/h", "LAYERBRIDGE_CONFIG_DIR": "/c"}, "/c"),
])
def test_config_dir(platform, env, expected):
    assert settings.config_dir(env, platform) == expected


def test_token_local_and_remote(tmp_path):
    (tmp_path / "token").write_text("secret\n")
    env = {"LAYERBRIDGE_CONFIG_DIR": str(tmp_path), "HOME": "/nonexistent"}
    assert settings.local_token(env) == "secret"
    assert settings.effective_token({"url": "http://127.0.0.1:7860"}, env) == "secret"
    assert settings.effective_token({"url": "http://localhost:9"}, env) == "secret"
    assert settings.effective_token({"url": "http://gpu-box:7860"}, env) == ""
    assert settings.effective_token({"url": "http://gpu-box:7860", "token": "pasted"}, env) == "pasted"
    assert settings.local_token({"LAYERBRIDGE_CONFIG_DIR": str(tmp_path / "missing")}) == ""


# -- protocol -------------------------------------------------------------------------------------
def test_multipart_body_parses_as_form_data():
    from email.parser import BytesParser
    from email.policy import HTTP
    rgba = bytes(range(256)) * 3
    body, ctype = protocol.multipart({"width": 8, "height": 24, "layers": 2}, rgba, boundary="XyZ")
    assert ctype == "multipart/form-data; boundary=XyZ"
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
    assert json.loads(parts["params"].get_content()) == {"width": 8, "height": 24, "layers": 2}
    assert parts["image"].get_content_type() == "application/octet-stream"
    assert parts["image"].get_payload(decode=True) == rgba


def test_ndjson_split_anywhere():
    stream = (b'{"type":"progress","state":"running","step":1}\n{"type":"keepalive"}\n\n'
              b'{"type":"progress","state":"done"}\n')
    for cut in range(len(stream)):
        buf = protocol.LineBuffer()
        got = buf.feed(stream[:cut]) + buf.feed(stream[cut:])
        assert [g["state"] for g in got] == ["running", "done"]
    assert protocol.LineBuffer().feed(b"garbage\n{\"state\":\"x\"}\n") == [{"state": "x"}]


def test_progress_words():
    s = {"state": "running", "stage": "denoising", "step": 12, "total": 50, "eta_s": 31.5}
    assert protocol.describe_progress(s) == "Separating layers 12/50 — about 32 s left"
    assert protocol.progress_fraction(s) == pytest.approx(0.24)
    q = {"state": "queued", "stage": "queued", "position": 2, "eta_s": None}
    assert protocol.describe_progress(q) == "Waiting in the queue (position 2)"
    assert protocol.progress_fraction(q) is None
    assert protocol.format_duration(125) == "2 min 05 s"
    assert protocol.describe_progress({"state": "done", "stage": "done", "eta_s": 0}) == "Done"
    naming = {"state": "running", "stage": "finishing", "message": "Naming layers", "eta_s": 2.2}
    assert protocol.describe_progress(naming) == "Naming layers — about 2 s left"
    assert protocol.describe_progress(dict(naming, message="")) == "Finishing — about 2 s left"
    # the client's own upload stage: a percentage of the bytes sent
    u = {"state": "uploading", "stage": "uploading", "sent": 45, "bytes": 100}
    assert protocol.describe_progress(u) == "Uploading 45%"
    assert protocol.progress_fraction(u) == pytest.approx(0.45)


def test_status_words():
    st = {"model": {"state": "downloading", "bytes_done": 1.2e9, "bytes_total": 57e9}, "queue": {}}
    kind, text = protocol.describe_status(st)
    assert kind == "downloading" and "1.2 GB of 57.0 GB" in text and "(2%)" in text
    assert protocol.describe_status({"model": {"state": "ready"}, "queue": {"length": 0, "running": None}})[0] == "ready"
    kind, text = protocol.describe_status({"model": {"state": "ready"}, "queue": {"length": 3, "running": "j"}})
    assert (kind, text) == ("busy", "Busy: 3 jobs waiting")
    assert protocol.describe_status({"model": {"state": "ready"}, "queue": {"length": 0, "running": "j"}}) == \
        ("busy", "Busy: running a job")
    assert protocol.describe_status({"model": {"state": "loading"}})[0] == "loading"
    kind, text = protocol.describe_status({"model": {"state": "failed", "error": "disk full"}})
    assert kind == "failed" and "disk full" in text


def test_error_words():
    assert protocol.error_from_body(401, b'{"type":"error","code":"unauthorized","message":"no"}') == ("unauthorized", "no")
    assert protocol.error_from_body(502, b"<html>bad gateway</html>")[0] == "bad_response"
    assert protocol.error_from_body(507, b"")[0] == "out_of_memory"
    title, advice = protocol.friendly("out_of_memory", "CUDA OOM")
    assert "memory" in title and "640" in advice
    assert "not running" in protocol.friendly("unreachable")[0]
    assert protocol.friendly("model_unavailable", "no disk space")[1] == "no disk space"
    strip = "image is 3000×1; its long side may be at most 100 times its short side"
    assert protocol.friendly("invalid_image", strip) == ("The server refused the image.", strip)
    assert "weird_code" in protocol.friendly("weird_code")[0]


def test_hello_versions():
    hello = {"type": "hello", "server": "layerbridge", "protocol": 1, "min_protocol": 1, "capabilities": ["rgba8", "bgra8"]}
    assert protocol.check_hello(hello) is None
    code, msg = protocol.check_hello(dict(hello, capabilities=["rgba8"]))
    assert code == "protocol_mismatch" and "update the LayerBridge server" in msg
    code, msg = protocol.check_hello({"type": "hello", "server": "layerbridge", "protocol": 3, "min_protocol": 2})
    assert code == "protocol_mismatch" and "Krita plugin" in msg
    code, msg = protocol.check_hello({"type": "hello", "server": "layerbridge", "protocol": 0, "min_protocol": 0})
    assert code == "protocol_mismatch" and "server" in msg
    assert protocol.check_hello({"hello": 1})[0] == "bad_response"


# -- pixels ---------------------------------------------------------------------------------------
def test_plan_offsets_and_order():
    result = {"canvas": {"width": 100, "height": 50}, "layers": [
        {"index": 1, "name": "Cat", "x": 10, "y": 5, "width": 20, "height": 30},
        {"index": 0, "name": "Background", "x": 0, "y": 0, "width": 100, "height": 50},
        {"index": 2, "name": "Empty", "x": 0, "y": 0, "width": 0, "height": 0}]}
    got = pixels.plan(result, Region(200, 300, 100, 50))
    assert [p.name for p in got] == ["Background", "Cat", "Empty"]
    assert got[1][2:6] == (210, 305, 20, 30) and got[0][2:4] == (200, 300)
    assert [(p.group, p.parent) for p in got] == [(False, None)] * 3
    with pytest.raises(ValueError):
        pixels.plan(result, Region(0, 0, 99, 50))
    assert pixels.group_name({"name": ""}, "Poster") == "Poster"
    assert pixels.group_name({"name": "Srv"}, "Poster") == "Srv"


def test_plan_of_a_hierarchy_and_its_text():
    """docs/protocol.md Result with split_elements: a group entry (no pixels) directly followed by its children;
    text boxes and baselines move with the sent image's place in the document."""
    block = {"text": "Sale", "box": {"x": 12, "y": 6, "width": 30, "height": 10}, "size": 12.0, "editable": True,
             "lines": [{"text": "Sale", "box": {"x": 12, "y": 6, "width": 30, "height": 10}, "baseline": 16}]}
    result = {"canvas": {"width": 100, "height": 50}, "layers": [
        {"index": 0, "name": "Background", "x": 0, "y": 0, "width": 100, "height": 50, "group": False, "parent": None},
        {"index": 1, "name": "Shapes", "x": 10, "y": 5, "width": 60, "height": 30, "group": True, "parent": None,
         "children": [2, 3], "bytes": 0},
        {"index": 2, "name": "Shapes 1", "x": 10, "y": 5, "width": 8, "height": 8, "group": False, "parent": 1},
        {"index": 3, "name": "Sale", "x": 11, "y": 5, "width": 59, "height": 30, "group": False, "parent": 1,
         "text": [block]}]}
    got = pixels.plan(result, Region(200, 300, 100, 50))
    assert [(p.index, p.group, p.parent) for p in got] == [(0, False, None), (1, True, None), (2, False, 1), (3, False, 1)]
    assert got[1].width * got[1].height == 0        # a group has no pixels of its own
    moved = got[3].text[0]
    assert moved["box"] == {"x": 212, "y": 306, "width": 30, "height": 10} and moved["lines"][0]["baseline"] == 316
    assert block["box"]["x"] == 12          # the result is left as it was
    assert [protocol.has_pixels(l) for l in result["layers"]] == [True, False, True, True]
    bad = {"canvas": result["canvas"], "layers": [dict(result["layers"][2], parent=7)]}
    with pytest.raises(ValueError):
        pixels.plan(bad, Region(0, 0, 100, 50))
    assert pixels.group_name({"name": "Srv"}, "Poster") == "Srv"


def test_colour_spaces():
    # every colour model and depth Krita ships is converted, none refused; only RGB 8-bit goes as it is
    for model in ("RGBA", "GRAYA", "CMYKA", "LABA", "XYZA", "YCbCrA"):
        for depth in ("U8", "U16", "F16", "F32"):
            assert pixels.colour_problem(model, depth) is None
            assert pixels.needs_conversion(model, depth) is ((model, depth) != ("RGBA", "U8"))
    assert [pixels.pixel_size(*s) for s in (("RGBA", "U8"), ("RGBA", "U16"), ("RGBA", "F32"), ("GRAYA", "U8"),
                                            ("GRAYA", "F16"), ("CMYKA", "U8"), ("CMYKA", "U16"))] == [4, 8, 16, 2, 4, 5, 10]
    assert pixels.SRGB == ("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")
    # integer RGB keeps its profile (only the depth changes); linear, float and other models go through sRGB
    assert pixels.wire_space("RGBA", "U16", "ProPhoto-elle-V2-g18.icc") == ("RGBA", "U8", "ProPhoto-elle-V2-g18.icc")
    assert pixels.wire_space("RGBA", "U8", "Rec2020-elle-V4-rec709.icc") == ("RGBA", "U8", "Rec2020-elle-V4-rec709.icc")
    for space in (("RGBA", "U16", "sRGB-elle-V2-g10.icc"), ("RGBA", "U16", "scRGB (linear)"), ("RGBA", "F32", "x.icc"),
                  ("RGBA", "F16", "sRGB-elle-V2-srgbtrc.icc"), ("CMYKA", "U16", "Chemical proof"), ("GRAYA", "U8", "")):
        assert pixels.wire_space(*space) == pixels.SRGB, space
    # a colour space the plugin does not know is refused in words, with what to do
    msg = pixels.colour_problem("HSVA", "U16")
    assert msg and "16-bit HSVA" in msg and "Convert Image Color Space" in msg
    assert pixels.pixel_size("HSVA", "U8") is None and pixels.pixel_size("RGBA", "U32") is None
    assert pixels.describe_colour("CMYKA", "F32") == "32-bit float CMYK"
    msg = pixels.conversion_problem("LABA", "U16", "Lab identity built-in")
    assert "16-bit L*a*b*" in msg and "Lab identity built-in" in msg


def test_size_checks():
    limits = {"max_pixels": 100 * 10**6, "max_side": 30000, "max_aspect": 100}
    assert pixels.size_problem(Region(0, 0, 10, 10), limits) is None
    assert "megapixels" in pixels.size_problem(Region(0, 0, 20000, 10000), limits)
    assert "30000 pixels a side" in pixels.size_problem(Region(0, 0, 30001, 3000), limits)
    assert "100 times" in pixels.size_problem(Region(0, 0, 20000, 150), limits)
    assert pixels.size_problem(Region(0, 0, 20000, 200), limits) is None
    assert pixels.size_problem(Region(0, 0, 0, 5), None)
    assert pixels.size_problem(Region(0, 0, 30001, 3000), {"max_pixels": 100 * 10**6}) is None  # an older server


# -- packaging and syntax -------------------------------------------------------------------------
def test_plugin_is_python_310_syntax():
    for path in (ROOT / "krita_plugin" / "layerbridge").glob("*.py"):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))


def test_zip_layout_imports(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_krita_zip.py"), "--dest", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
    # Krita's importer looks for the folder entry of the module named in the .desktop file
    assert {"layerbridge.desktop", "layerbridge/", "layerbridge/__init__.py"} <= set(names)
    sys.path.insert(0, str(HERE))
    from kritaharness import install_zip
    install_zip(pathlib.Path(out), tmp_path)
    desktop = (tmp_path / "pykrita" / "layerbridge.desktop").read_text()
    assert "X-KDE-Library=layerbridge" in desktop and "ServiceTypes=Krita/PythonPlugin" in desktop
    code = ("import sys; sys.path.insert(0, %r); import layerbridge, layerbridge.settings, layerbridge.protocol, "
            "layerbridge.pixels; print(layerbridge.__file__)" % str(tmp_path / "pykrita"))
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "pykrita") in got


# -- the job options the server announces ----------------------------------------------------------
ANNOUNCED = {"presets": [{"name": "best", "label": "Best", "steps": 50, "cfg_until": 1.0, "caption_tokens": 512,
                          "name_layers": True, "summary": "50 steps"},
                         {"name": "draft", "label": "Draft", "steps": 8, "summary": "8 steps, rough"}],
             "preset": "draft", "layers": {"min": 3, "max": 6, "default": 5},
             "resolution": {"choices": [512, 640], "default": 512},
             "steps": {"min": 4, "max": 60, "default": None}, "cfg_scale": {"min": 1.0, "max": 8.0, "default": 3.0},
             "caption_language": {"choices": ["en", "de"], "default": "de"}}


def test_job_options_come_from_the_hello_with_todays_values_as_fallback():
    opts = protocol.job_options({"server": "layerbridge", "job_options": ANNOUNCED})
    assert [p["name"] for p in opts["presets"]] == ["best", "draft"] and opts["preset"] == "draft"
    assert opts["presets"][1]["label"] == "Draft" and opts["presets"][1]["summary"] == "8 steps, rough"
    assert opts["layers"] == {"min": 3, "max": 6, "default": 5}
    assert opts["resolution"] == {"choices": [512, 640], "default": 512}
    assert opts["steps"] == {"min": 4, "max": 60, "default": None}
    assert opts["cfg_scale"] == {"min": 1.0, "max": 8.0, "default": 3.0}
    assert opts["caption_language"] == {"choices": ["en", "de"], "default": "de"}
    # an older server announces nothing: today's controls
    old = protocol.job_options({"server": "layerbridge"})
    assert old == protocol.job_options(None) == protocol.FALLBACK_JOB_OPTIONS
    assert [p["name"] for p in old["presets"]] == ["best", "balanced", "fast"]
    assert old["layers"] == {"min": 2, "max": 10, "default": 4} and old["resolution"]["choices"] == [640, 1024]
    # a malformed part falls back on its own, the rest is kept
    bad = protocol.job_options({"job_options": dict(ANNOUNCED, layers={"min": 9, "max": 2}, presets="x",
                                                    resolution={"choices": []}, preset="nope")})
    assert bad["layers"] == old["layers"] and bad["presets"] == old["presets"] and bad["preset"] == "best"
    assert bad["resolution"] == old["resolution"] and bad["cfg_scale"]["max"] == 8.0


def test_settings_are_normalised_against_the_servers_options():
    opts = protocol.job_options({"job_options": ANNOUNCED})
    s = settings.normalize({"layers": 9, "resolution": 1024, "preset": "fast", "caption_language": "zh",
                            "cfg_scale": 12, "steps": 3}, opts)
    assert (s["layers"], s["resolution"], s["preset"], s["caption_language"]) == (6, 512, "draft", "de")
    assert s["cfg_scale"] == 8.0 and s["steps"] == 0          # below the server's fewest steps: auto
    assert settings.normalize({"layers": 9, "preset": "draft", "resolution": 640}, opts)["preset"] == "draft"
    # without options, today's
    assert settings.normalize({"layers": 9, "preset": "draft"})["layers"] == 9
    assert settings.normalize({"preset": "draft"})["preset"] == "best"


def test_a_lost_server_and_a_lost_job_in_words():
    text = protocol.describe_progress({"state": "reconnecting", "stage": "reconnecting", "lost_s": 3.2})
    assert text == "The server stopped answering 3 s ago. Trying to reach it again…"
    assert protocol.progress_fraction({"state": "reconnecting", "stage": "reconnecting"}) is None
    # a restarted server answers server_stopped for a job of its previous run: lost, not expired
    assert "lost" in protocol.friendly("server_stopped")[0] and "restarted" in protocol.friendly("server_stopped")[0]
    assert "an hour" in protocol.friendly("not_found")[1]
