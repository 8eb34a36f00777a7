"""The plugin inside a real Krita (kritarunner, offscreen), against the real server on the tiny model."""

import json
import pathlib
import socket
import threading
import urllib.request

import pytest

from kritaharness import needs_krita

pytestmark = needs_krita


def test_refuses_deep_colour_and_survives_a_half_built_group(krita):
    res = krita.run(["colour", "halfbuilt"], timeout=120)
    colour = res["colour"]
    assert colour["ok"] is False and colour["code"] == "unsupported_document"
    assert "16-bit" in colour["text"] and "8-bit" in colour["text"] and colour["unchanged"]
    half = res["halfbuilt"]
    assert half["raised"] and half["unchanged"], half


def test_stopped_server_gives_words_not_a_crash(krita):
    with socket.socket() as s:          # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    res = krita.run(["stopped"], timeout=120, LB_DEAD_URL=dead, LB_URL=dead)
    out = res["stopped"]
    assert out["ok"] is False and out["code"] == "unreachable", out
    assert "not running" in out["text"] and out["unchanged"]
    assert dead in out["details"]


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
        res = krita.run(["image", "selection", "layer", "cancel", "badtoken", "dropped"], timeout=300,
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


def test_dropped_connection_recovers_the_result(server_run, live_server):
    assert server_run["proxy_drops"] >= 1
    check_against_server(live_server, server_run["dropped"], (96, 64))


class DropProxy:
    """A TCP proxy to the server that cuts the first event stream after its first bytes."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.drops = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.open = False
        self.sock.close()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target), timeout=60)
        client.settimeout(60)
        drop = [False]

        def pump(src, dst, watch):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if watch and b"/events " in data and self.drops == 0:
                        drop[0] = True
                    dst.sendall(data)
                    if not watch and drop[0]:
                        self.drops += 1
                        break
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(client, upstream, True), daemon=True)
        t.start()
        pump(upstream, client, False)
        t.join(5)
        client.close()
        upstream.close()
