"""The plugin inside a real Krita (kritarunner, offscreen), against the real server on the tiny model."""

import json
import pathlib
import socket
import struct
import sys
import time
import urllib.request

import pytest

from kritaharness import needs_krita
from proxies import DropProxy, StallProxy

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "krita_plugin"))
from layerbridge import protocol, settings  # noqa: E402

# one worker, in order: the module's Krita runs are shared fixtures, and the Krita home is one folder
pytestmark = [needs_krita, pytest.mark.xdist_group("krita")]


def pattern(n):
    """The pixels of lb_headless.pattern."""
    return [((i * 7) % 256, 255 - i % 256, i % 256, 255 if i % 3 else i % 256) for i in range(n)]


def flat(px):
    return [v for p in px for v in p]


def srgb_encode(c):
    c = min(1.0, max(0.0, c))
    return 255 * (c * 12.92 if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055)


def srgb_decode(v):
    c = v / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def rgba_to_u16(rgba):
    """8-bit RGBA as Krita's RGBA U16 holds it: blue first, v*257."""
    out = []
    for i in range(0, len(rgba), 4):
        r, g, b, a = rgba[i:i + 4]
        out += [b * 257, g * 257, r * 257, a * 257]
    return out


@pytest.fixture(scope="module")
def offline_run(krita):
    return krita.run(["deep16", "deep16wide", "float", "roundtrip", "halfbuilt"], timeout=180)


@pytest.mark.parametrize("run, profile", [("deep16", "sRGB-elle-V2-srgbtrc.icc"),
                                          ("deep16wide", "WideRGB-elle-V2-g22.icc")])
def test_16bit_document_is_read_and_written_exactly(offline_run, run, profile):
    # a wide-gamut document too: its own profile is kept (no clipping to sRGB), only the depth changes
    out = offline_run[run]
    assert out["space"] == ["RGBA", "U16", profile]
    # v*257 in the document is read as v, whole image, a layer alone and a selection
    assert out["image"] == out["expected"] and out["layer"] == out["expected"]
    assert out["selection_region"] == [4, 5, 6, 7]
    now = out["image_now"]         # with the group on top
    assert out["selection"] == [v for y in range(5, 12) for v in now[(y * 16 + 4) * 4:(y * 16 + 10) * 4]]
    assert out["selection"] != [v for y in range(5, 12) for v in now[(y * 16 + 5) * 4:(y * 16 + 11) * 4]]
    # the layers land as 16-bit layers of the document's profile, v → v*257 exactly
    assert [c["name"] for c in out["children"]] == ["Background", "Patch"]
    for child, key in zip(out["children"], ("0", "1")):
        assert child["space"] == out["space"]
        assert struct.unpack("<%dH" % (len(child["raw"]) // 2), bytes(child["raw"])) == tuple(rgba_to_u16(out["sent"][key]))
    top = out["tree"][-1]
    assert top["type"] == "grouplayer" and top["name"] == "Deep U16" and len(top["children"]) == 2
    assert [n["name"] for n in out["tree"]] == ["Background", "Deep U16"]
    assert out["own_layers_unchanged"] and out["space_unchanged"] and out["bg_unchanged"], out
    assert out["docs_unchanged"], ("a conversion document was left open", out.get("docs"))


def test_float_document_round_trips_within_a_step(offline_run):
    out = offline_run["float"]
    assert out["space"][:2] == ["RGBA", "F32"] and "g10" in out["space"][2]       # linear light
    got, want = out["image"], out["expected"]
    assert max(abs(a - b) for a, b in zip(got, want)) <= 1
    assert got[3::4] == want[3::4]                                                   # alpha exact
    assert max(abs(a - b) for a, b in zip(out["layer"], want)) <= 1
    for child, key in zip(out["children"], ("0", "1")):
        assert child["space"] == out["space"]
        floats = struct.unpack("<%df" % (len(child["raw"]) // 4), bytes(child["raw"]))  # red first, linear
        sent = out["sent"][key]
        assert len(floats) == len(sent)
        for i in range(0, len(sent), 4):
            r, g, b, a = floats[i:i + 4]
            assert abs(a * 255 - sent[i + 3]) < 0.01
            for got_c, want_c in zip((r, g, b), sent[i:i + 3]):
                assert abs(got_c - srgb_decode(want_c)) < 0.002 and abs(srgb_encode(got_c) - want_c) <= 1
    assert out["own_layers_unchanged"] and out["space_unchanged"] and out["bg_unchanged"], out
    assert out["docs_unchanged"], ("a conversion document was left open", out.get("docs"))


# 8-bit L*a*b* and YCbCr hold sRGB only approximately: the tolerances are Krita 5.1's own conversions, measured
# (mean over all four channels, alpha exact: 0.57 and 8.6 levels; docs/krita.md, Colours and sizes)
@pytest.mark.parametrize("model,depth,tolerance,mean", [("LABA", "U16", 0, 0), ("XYZA", "F32", 0, 0),
                                                        ("LABA", "U8", 10, 0.6), ("YCbCrA", "U8", 62, 8.6)])
def test_lab_xyz_and_ycbcr_documents_round_trip(offline_run, model, depth, tolerance, mean):
    out = offline_run["roundtrip"][model + depth]
    assert out["space"][:2] == [model, depth] and out["child"] == out["space"]
    assert out["len"] == 16 * 16 * 4 and out["max_diff"] <= tolerance, (out["max_diff"], out["mean_diff"], out["space"])
    assert out["mean_diff"] <= mean
    assert out["docs_unchanged"], out


def test_a_half_built_group_leaves_the_document_as_it_was(offline_run):
    for tag in ("rgba8", "u16"):
        half = offline_run["halfbuilt"][tag]
        assert half["raised"] and half["unchanged"] and half["docs_unchanged"], (tag, half)


def test_stopped_server_gives_words_not_a_crash(krita):
    with socket.socket() as s:          # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    res = krita.run(["stopped"], timeout=120, LB_DEAD_URL=dead, LB_URL=dead)
    out = res["stopped"]
    assert out["ok"] is False and out["code"] == "unreachable", out
    assert "not running" in out["text"] and out["unchanged"]
    assert dead in out["details"]


def test_too_large_area_is_refused_before_reading_it(krita):
    for mode, out in krita.run(["toolarge"], timeout=120)["toolarge"].items():
        assert out["code"] == "image_too_large", (mode, out)
        assert "too large" in out["text"] and "smaller area" in out["text"] and "96 × 64" in out["text"], out["text"]
        assert not out["read"] and not out["job"] and "progress" not in out, (mode, out)


# -- against the live server ---------------------------------------------------------------------
def get(server, path):
    req = urllib.request.Request(server.url + path, headers={"Authorization": "Bearer " + server.token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read(), dict(r.headers)


def check_against_server(server, out, canvas):
    """Names, sizes, offsets and the exact pixel bytes match what the server returns over HTTP."""
    assert out["ok"], out
    result = json.loads(get(server, "/v1/jobs/%s/result" % out["job"])[0])
    assert (result["canvas"]["width"], result["canvas"]["height"]) == canvas
    assert out["group"] == result["name"]
    ox, oy = out["region"][:2]
    assert [c["name"] for c in out["children"]] == [l["name"] for l in result["layers"]]
    for child, layer in zip(out["children"], result["layers"]):
        assert child["place"] == [ox + layer["x"], oy + layer["y"], layer["width"], layer["height"]]
        data = pathlib.Path(child["file"]).read_bytes()
        if layer["width"] * layer["height"]:
            pixels, headers = get(server, "/v1/jobs/%s/layers/%d" % (out["job"], layer["index"]))
            assert (int(headers["X-Layer-X"]), int(headers["X-Layer-Y"])) == (layer["x"], layer["y"])
            assert data == pixels, "layer %d pixels differ" % layer["index"]
            # Krita's exact bounds are the non-transparent area, inside the placement
            bx, by, bw, bh = child["bounds"]
            px, py, pw, ph = child["place"]
            assert px <= bx and py <= by and bx + bw <= px + pw and by + bh <= py + ph
    return result


@pytest.fixture(scope="module")
def server_run(krita, live_server):
    proxy = DropProxy(live_server.port)
    try:
        res = krita.run(["image", "selection", "layer", "cancel", "badtoken", "dropped", "u16", "gray", "cmyk"],
                        timeout=420,
                        LB_URL=live_server.url, LB_TOKEN=live_server.token, LB_PROXY_URL=proxy.url)
    finally:
        proxy.close()
    res["proxy_drops"] = proxy.drops
    return res


def test_decompose_image(server_run, live_server):
    out = server_run["image"]
    result = check_against_server(live_server, out, (96, 64))
    assert len(result["layers"]) == 2 and out["group"] == "Poster"
    tree = out["tree"]
    assert [n["name"] for n in tree] == ["Background", "Poster"]           # group above the source
    assert tree[0]["bounds"] == [0, 0, 96, 64]                             # source untouched
    assert [c["name"] for c in tree[1]["children"]] == [l["name"] for l in result["layers"]]
    texts = [p[0] for p in out["progress"]]
    assert any("Separating layers" in t and "/2" in t for t in texts), texts


def poster_rgba8(w: int = 96, h: int = 64) -> bytes:
    """lb_headless.make_doc's picture in the protocol's rgba8: blue across, green down, a red square."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            px += bytes([0, (y * 255) // (h - 1), (x * 255) // (w - 1), 255])
    for y in range(h // 4, h // 2):
        for x in range(w // 4, w // 2):
            px[4 * (y * w + x):4 * (y * w + x) + 4] = bytes([255, 0, 0, 255])
    return bytes(px)


def test_the_server_decomposed_the_documents_own_colours(server_run, live_server):
    """The document's pixels went as Krita holds them (bgra8) and the server read them right: the same
    picture sent as rgba8 with the same parameters gives the same layers, byte for byte."""
    out = server_run["image"]
    params = settings.job_params(settings.normalize({"layers": 2, "steps": 2, "resolution": 640, "seed": 7,
                                                     "prompt": "a test picture"}), "Poster")
    body, ctype = protocol.multipart(dict(params, width=96, height=64), poster_rgba8())
    req = urllib.request.Request(live_server.url + "/v1/jobs", data=body,
                                 headers=live_server.headers(**{"Content-Type": ctype}))
    with urllib.request.urlopen(req, timeout=30) as r:
        job = json.loads(r.read())["job"]
    deadline = time.monotonic() + 120
    while live_server.get_json("/v1/jobs/" + job)["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for child in out["children"]:
        if child["place"][2] * child["place"][3]:
            assert get(live_server, "/v1/jobs/%s/layers/%d" % (job, child["index"]))[0] == \
                pathlib.Path(child["file"]).read_bytes()


def test_saved_kra_rereads_the_same_layers(server_run):
    out = server_run["image"]
    assert out["saved"] and out["reopened"] == out["tree"] and out["reopened_pixels_equal"]


def test_decompose_selection_lands_at_its_offset(server_run, live_server):
    out = server_run["selection"]
    assert out["region"] == [20, 10, 40, 30]
    check_against_server(live_server, out, (40, 30))
    assert out["group"] == "Sel (selection)"


def test_decompose_layer_goes_right_above_it(server_run, live_server):
    out = server_run["layer"]
    assert out["region"] == [50, 30, 30, 20] and out["source_unchanged"]
    check_against_server(live_server, out, (30, 20))
    assert [n["name"] for n in out["tree"]] == ["Background", "Sticker", "Sticker"]
    assert out["tree"][2]["type"] == "grouplayer" and out["group"] == "Sticker"


def test_cancel_leaves_the_document_unchanged(server_run):
    out = server_run["cancel"]
    assert out["ok"] is False and out["code"] == "cancelled", out
    assert out["unchanged"] and out["job"]


def test_bad_token_is_explained(server_run):
    out = server_run["badtoken"]
    assert out["ok"] is False and out["code"] == "unauthorized"
    assert "token" in out["text"]
    assert "wrong-token" not in out["details"] and "wrong-token" not in out["text"]     # Copy details


def test_dropped_connection_recovers_the_result(server_run, live_server):
    assert server_run["proxy_drops"] >= 1
    check_against_server(live_server, server_run["dropped"], (96, 64))


def test_16bit_document_gets_the_servers_layers_as_v_times_257(server_run, live_server):
    out = server_run["u16"]
    assert out["ok"], out
    result = json.loads(get(live_server, "/v1/jobs/%s/result" % out["job"])[0])
    assert [c["name"] for c in out["children"]] == [l["name"] for l in result["layers"]]
    assert out["docs_unchanged"] and out["own_layers_unchanged"], out
    for child, layer in zip(out["children"], result["layers"]):
        assert child["space"] == ["RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc"]
        if layer["width"] * layer["height"]:
            sent = get(live_server, "/v1/jobs/%s/layers/%d" % (out["job"], layer["index"]))[0]
            raw = pathlib.Path(child["file"]).read_bytes()
            assert struct.unpack("<%dH" % (len(raw) // 2), raw) == tuple(rgba_to_u16(sent))


@pytest.mark.parametrize("tag,model,size", [("gray", "GRAYA", 2), ("cmyk", "CMYKA", 5)])
def test_grayscale_and_cmyk_documents_get_layers_in_their_own_space(server_run, live_server, tag, model, size):
    out = server_run[tag]
    assert out["ok"], out
    assert out["space"][:2] == [model, "U8"]
    assert out["space_unchanged"] and out["bg_unchanged"] and out["own_layers_unchanged"], out
    assert out["docs_unchanged"], ("a conversion document was left open", out.get("docs"))
    result = json.loads(get(live_server, "/v1/jobs/%s/result" % out["job"])[0])
    assert out["tree"][-1]["type"] == "grouplayer" and out["group"] == result["name"]
    assert [c["name"] for c in out["children"]] == [l["name"] for l in result["layers"]]
    checked = 0
    for child, layer in zip(out["children"], result["layers"]):
        assert child["space"] == out["space"]
        if not layer["width"] * layer["height"]:
            continue
        sent = get(live_server, "/v1/jobs/%s/layers/%d" % (out["job"], layer["index"]))[0]
        raw = pathlib.Path(child["file"]).read_bytes()
        assert len(raw) == layer["width"] * layer["height"] * size
        assert raw[size - 1::size] == sent[3::4]                 # alpha carried over exactly, pixel for pixel
        if model == "GRAYA":
            # colour-managed: the grey is the sRGB colour's luminance (D50), not one of its channels
            for i in range(0, len(sent), 4 * 7):
                r, g, b, a = sent[i:i + 4]
                if a:
                    y = 0.2225 * srgb_decode(r) + 0.7169 * srgb_decode(g) + 0.0606 * srgb_decode(b)
                    assert abs(raw[i // 2] - srgb_encode(y)) <= 2, (i, sent[i:i + 4], raw[i // 2])
                    checked += 1
        else:
            assert len(set(raw[j:j + 4] for j in range(0, len(raw), 5))) > 1      # real colours, not a fill
            checked += 1
    assert checked


@pytest.fixture(scope="module")
def busy_user_run(krita, live_server):
    """Scenarios where the user keeps working (or cancels) while the server works."""
    proxy = StallProxy(live_server.port, 8)  # the scenario cancels 2 s into the upload: held well past that
    try:
        res = krita.run(["closed", "moved", "orphaned", "offsets", "cancel_insert", "cancel_upload"], timeout=420,
                        LB_URL=live_server.url, LB_TOKEN=live_server.token, LB_STALL_URL=proxy.url)
    finally:
        proxy.close()
    res["stalls"] = proxy.stalls
    return res


def test_closing_the_source_document_keeps_the_result_in_a_new_one(busy_user_run, live_server):
    out = busy_user_run["closed"]
    assert "Closed" in out["docs_before"], out
    check_against_server(live_server, out, (96, 64))
    target = out["target"]
    assert target["name"] == "Closed (layers)" and "Closed (layers)" in out["docs_after"]
    assert "Closed" not in out["docs_after"]
    # the same canvas, so the layers sit where they were; nothing but the group in it
    assert target["size"] == [96, 64] and target["space"][:2] == ["RGBA", "U8"]
    assert [n["type"] for n in target["tree"]] == ["grouplayer"] and target["tree"][0]["name"] == out["group"]
    assert "was closed" in out["note"] and "Closed (layers)" in out["note"]


def test_a_source_layer_moved_during_the_job_gets_the_group_right_above_it(busy_user_run, live_server):
    out = busy_user_run["moved"]
    assert out["ok"], out
    assert [n["name"] for n in out["moved_tree"]] == ["Background", "Folder"]
    names = [(n["name"], n["type"]) for n in out["tree"]]
    assert names == [("Background", "paintlayer"), ("Folder", "grouplayer")], names
    inside = [(n["name"], n["type"]) for n in out["tree"][1]["children"]]
    assert inside == [("Sticker", "paintlayer"), ("Sticker", "grouplayer"), ("Over", "paintlayer")], inside


def test_a_source_layer_deleted_during_the_job_gets_the_group_on_top(busy_user_run):
    out = busy_user_run["orphaned"]
    assert out["ok"] and out["group_attached"], out
    assert [(n["name"], n["type"]) for n in out["tree"]] == [("Background", "paintlayer"), ("Inner", "grouplayer")]


def test_odd_selection_and_negative_layer_bounds_land_exactly(busy_user_run, live_server):
    odd = busy_user_run["odd"]
    assert odd["region"] == [13, 7, 41, 29]
    check_against_server(live_server, odd, (41, 29))
    off = busy_user_run["off"]
    assert off["region"] == [-11, -5, 30, 20]
    result = check_against_server(live_server, off, (30, 20))
    assert [c["place"][:2] for c in off["children"]] == [[-11 + l["x"], -5 + l["y"]] for l in result["layers"]]
    assert [n["name"] for n in off["tree"]] == ["Background", "Off", "Off"]


def test_cancel_while_adding_layers_leaves_the_document_unchanged(busy_user_run):
    out = busy_user_run["cancel_insert"]
    assert any(t.startswith("Adding layers") for t in out["texts"]), out["texts"]
    assert out["ok"] is False and out["code"] == "cancelled", out
    assert out["unchanged"]


def test_cancel_during_upload_cancels_on_the_server(busy_user_run, live_server):
    assert busy_user_run["stalls"] >= 2
    # all bytes sent, the server still reading them: the job is cancelled as soon as it has an id
    sent = busy_user_run["cancel_upload_sent"]
    assert sent["ok"] is False and sent["code"] == "cancelled" and sent["unchanged"], sent
    assert sent["job"], "the job was left running on the server"
    assert json.loads(get(live_server, "/v1/jobs/%s" % sent["job"])[0])["state"] == "cancelled"
    # still sending: the upload stops at once and no job is made
    sending = busy_user_run["cancel_upload_sending"]
    assert sending["ok"] is False and sending["code"] == "cancelled" and sending["unchanged"], sending
    assert sending["job"] == "" and sending["after_cancel_s"] < 3, sending


def test_adding_a_large_result_keeps_krita_responsive(krita):
    out = krita.run(["responsive"], timeout=180)["responsive"]
    assert out["ok"], out
    assert out["group"] == ["Large", ["Layer 0", "Layer 1", "Layer 2"]]
    assert out["pixel"] == [80, 100, 160, 255]              # the top layer's last pixel, in Krita's BGRA
    assert out["max_gap_s"] < 1.0, out


def test_jobs_and_status_polls_survive_constant_garbage_collection(krita, live_server):
    """A timer collects Python's garbage every 20 ms while jobs run and the status is polled back to back:
    Krita neither crashes nor loses an answer."""
    res = krita.run(["gcstress"], timeout=600, LB_URL=live_server.url, LB_TOKEN=live_server.token, LB_GC_JOBS="3")
    out = res["gcstress"]
    assert res["_exit"]["code"] == 0 and not res["_exit"]["timed_out"], (res["_exit"], out)
    assert [j["ok"] for j in out["jobs"]] == [True] * 3, out["jobs"]
    assert out["probes"] >= 20 and set(out["probe_kinds"]) <= {"ready", "busy", "loading"}, out
