"""The plugin's network client under plain PyQt5 (Krita 5) and PyQt6 (Krita 6), no Krita, against the live server
(tests/qt_client.py runs it)."""

import json
import pathlib
import sys
import time
import urllib.request

import pytest

from proxies import AnswerDelayProxy
from qt_client import run_client, start_client

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "krita_plugin"))
from layerbridge import protocol  # noqa: E402

BINDINGS = [pytest.param("PyQt5", id="PyQt5"), pytest.param("PyQt6", id="PyQt6")]


def swapped(data: bytes) -> bytes:
    """rgba8 ↔ bgra8."""
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


def call(server, path: str, body: bytes | None = None, headers: dict | None = None, raw: bool = False):
    req = urllib.request.Request(server.url + path, data=body, headers={**server.headers(), **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
    return data if raw else json.loads(data)


def layer_rgba8(server, job: str, index: str, wait: bool = False) -> bytes:
    deadline = time.monotonic() + 120
    while wait and call(server, "/v1/jobs/%s" % job)["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return call(server, "/v1/jobs/%s/layers/%s" % (job, index), raw=True)


@pytest.mark.parametrize("binding", BINDINGS)
def test_job_and_status_through_qt_networking(binding, live_server):
    out = run_client(binding, live_server.url, live_server.token)
    assert out["ok"], out
    assert out["names"] == ["Background", "Layer 1"] and out["sizes"] == {"0": 24 * 16 * 4, "1": 24 * 16 * 4}
    assert any("Separating layers" in p for p in out["progress"])
    assert any(p.startswith("Uploading") for p in out["progress"]), out["progress"]
    assert out["status"][0] in ("ready", "busy")
    # Krita's own bgra8 both ways: the server took the bytes sent as bgra8, and the layers came back so
    sent = bytes((x * 10) % 256 for x in range(24 * 16 * 4))
    params = {"layers": 2, "steps": 2, "resolution": 640, "seed": 3, "prompt": "x", "name": "Qt", "width": 24, "height": 16,
              "name_layers": False}
    body, ctype = protocol.multipart(params, swapped(sent))
    again = call(live_server, "/v1/jobs", body, {"Content-Type": ctype})["job"]
    for index, hexed in out["layers"].items():
        layer = layer_rgba8(live_server, out["job"], index)
        assert bytes.fromhex(hexed) == swapped(layer) != layer
        assert layer_rgba8(live_server, again, index, wait=True) == layer


@pytest.mark.parametrize("binding", BINDINGS)
def test_quitting_after_the_upload_before_the_job_is_named_cancels_it(binding, live_server):
    proxy = AnswerDelayProxy(live_server.port, 1.5)
    try:
        out = run_client(binding, proxy.url, live_server.token, "quit")
    finally:
        proxy.close()
    assert out["quit_at"] > 0 and out["job_at_quit"] == "", out
    assert out["job"], "the upload's answer was not waited for"
    assert proxy.delayed == 1
    state = ""
    for _ in range(100):
        req = urllib.request.Request(live_server.url + "/v1/jobs/" + out["job"],
                                     headers={"Authorization": "Bearer " + live_server.token})
        with urllib.request.urlopen(req, timeout=10) as r:
            state = json.load(r)["state"]
        if state in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert state == "cancelled"


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_server_stopped_during_the_job_is_reported_at_once(binding, tiny_model, tmp_path):
    import signal

    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path)
    try:
        client = start_client(binding, server.url, server.token, "long")
        try:
            assert client.stdout.readline().strip() == "running"
            stopped = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            out = json.loads(client.communicate(timeout=60)[0].strip().splitlines()[-1])
        finally:
            client.kill()
    finally:
        stop_server(server)
    # said at once, not after three minutes of trying to reach the server again
    assert out.get("ok") is False and out["code"] == "server_stopped", out
    assert time.monotonic() - stopped < 20


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_killed_server_is_noticed_at_once_and_its_restart_ends_the_job(binding, tiny_model, tmp_path):
    """The server killed mid-job (no goodbye): the client says so within seconds instead of showing the last step.
    Started again on the same address, the server answers for the job of its previous run, and the client ends
    with that answer (`server_stopped`, "lost when the server stopped or restarted"; a server that does not know
    the job at all says `not_found`)."""
    import signal

    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path)
    again = None
    try:
        client = start_client(binding, server.url, server.token, "lost")
        try:
            assert client.stdout.readline().strip() == "running"
            killed = time.monotonic()
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            assert client.stdout.readline().strip() == "reconnecting"
            noticed = time.monotonic() - killed
            again = start_server(tiny_model, tmp_path, "--port", str(server.port))
            out = json.loads(client.communicate(timeout=60)[0].strip().splitlines()[-1])
        finally:
            client.kill()
        assert noticed < 5, noticed
        assert out["lost_text"].startswith("The server stopped answering"), out
        req = urllib.request.Request(again.url + "/v1/jobs/" + out["job"], headers={"Authorization": "Bearer " + again.token})
        try:
            urllib.request.urlopen(req, timeout=10)
            said = "ok"
        except urllib.error.HTTPError as e:
            said = json.loads(e.read())["code"]
        assert said in ("server_stopped", "not_found")
        assert out.get("ok") is False and out["code"] == said, out
    finally:
        if again is not None:
            stop_server(again)
        stop_server(server)
