"""Token, Host, Origin and cross-site rules (protocol §1), on a real server."""

from __future__ import annotations

import json
import os
import stat

import pytest
from websockets.exceptions import InvalidStatus

from .wire import WS, request


def code(body: bytes) -> str:
    return json.loads(body)["code"]


def test_token_file_is_private(live_server):
    mode = stat.S_IMODE(os.stat(live_server.config_dir / "token").st_mode)
    assert mode == 0o600
    assert len(live_server.token) >= 32


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc", "Bearer "])
def test_every_route_but_health_needs_the_token(live_server, auth):
    headers = {"Authorization": auth} if auth else {}
    for method, path in [("GET", "/v1/info"), ("GET", "/v1/status"), ("POST", "/v1/model/load"),
                         ("GET", "/v1/jobs/j_x"), ("POST", "/v1/jobs/j_x/cancel")]:
        status, _, body = request(live_server, method, path, headers=headers, token=False, body=b"" if method == "POST" else None)
        assert status == 401 and code(body) == "unauthorized", path
    assert request(live_server, "GET", "/health", headers=headers, token=False)[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "attacker.localhost.example:7860", "127.0.0.1.nip.io"])
def test_forged_host_is_refused(live_server, host):
    status, _, body = request(live_server, "GET", "/v1/status", headers={"Host": host})
    assert status == 403 and code(body) == "forbidden_host"
    assert request(live_server, "GET", "/health", headers={"Host": host}, token=False)[0] == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:1234", "[::1]:7860", "192.168.1.20:7860"])
def test_loopback_and_ip_hosts_pass(live_server, host):
    assert request(live_server, "GET", "/v1/status", headers={"Host": host})[0] == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost:1"])
def test_cross_site_origin_is_refused(live_server, origin):
    status, headers, body = request(live_server, "GET", "/v1/status", headers={"Origin": origin})
    assert status == 403 and code(body) == "forbidden_origin"
    assert headers.get("Access-Control-Allow-Origin") is None


def test_sec_fetch_site_cross_site_is_refused(live_server):
    status, _, body = request(live_server, "GET", "/v1/status", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and code(body) == "forbidden_origin"


def test_own_and_uxp_origins_pass_and_are_echoed_never_star(live_server):
    for origin in (f"http://127.0.0.1:{live_server.port}", "uxp://com.layerbridge.photoshop", "file://"):
        status, headers, _ = request(live_server, "GET", "/v1/status", headers={"Origin": origin})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
    status, headers, _ = request(live_server, "GET", "/v1/status")
    assert "Access-Control-Allow-Origin" not in headers


def test_websocket_without_or_with_wrong_token(live_server):
    with pytest.raises(InvalidStatus) as info:
        WS(live_server, token=None, hello=False, additional_headers={"Authorization": "Bearer nope"})
    assert info.value.response.status_code == 401
    ws = WS(live_server, token=None, hello=False)
    ws.send({"type": "hello", "protocol": 1})
    assert ws.recv()["code"] == "unauthorized"
    ws.close()
    ws = WS(live_server, token=None, hello=False)
    ws.send({"type": "auth", "token": "wrong"})
    assert ws.recv()["code"] == "unauthorized"
    ws.close()


def test_websocket_from_a_web_page_is_refused(live_server):
    with pytest.raises(InvalidStatus) as info:
        WS(live_server, hello=False, origin="https://evil.example")
    assert info.value.response.status_code == 403


def test_protocol_mismatch_says_what_to_update(live_server):
    ws = WS(live_server, protocol=99, hello=False)
    ws.send({"type": "hello", "protocol": 99})
    err = ws.recv()
    assert err["code"] == "protocol_mismatch" and "update the LayerBridge server" in err["message"]
    ws.close()
    ws = WS(live_server, hello=False)
    ws.send({"type": "hello", "protocol": 0})
    err = ws.recv()
    assert err["code"] == "protocol_mismatch" and "update the plugin" in err["message"]
    ws.close()
    status, _, body = request(live_server, "GET", "/v1/info", headers={"X-LayerBridge-Protocol": "7"})
    assert status == 426 and code(body) == "protocol_mismatch"


def test_token_rotation_cli(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(tmp_path))
    first = subprocess.run([sys.executable, "-m", "backend.cli.main", "token"], env=env, capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-m", "backend.cli.main", "token"], env=env, capture_output=True, text=True, check=True)
    rotated = subprocess.run([sys.executable, "-m", "backend.cli.main", "token", "--rotate"], env=env, capture_output=True, text=True, check=True)
    assert first.stdout == again.stdout != rotated.stdout
    assert (tmp_path / "token").read_text().strip() == rotated.stdout.strip()


def test_listening_beyond_loopback_says_so_and_still_needs_the_token(tiny_model, tmp_path):
    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path, "--host", "0.0.0.0")
    try:
        assert request(server, "GET", "/v1/status", token=False)[0] == 401
        assert request(server, "GET", "/v1/status")[0] == 200
        assert "reachable from other machines" in server.log()
    finally:
        stop_server(server)
