"""The launcher's supervisor with the real `layerbridge serve` on the tiny model: what a client sees when the
server is stopped during a job, and the server's log."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from backend.launcher.config import LaunchSettings, read_token
from backend.launcher.process import proc_alive
from backend.launcher.state import BUSY, NOT_LOADED, STOPPED
from backend.launcher.supervisor import Supervisor


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LAYERBRIDGE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LAYERBRIDGE_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path


def real_supervisor(sandbox: Path, model: Path, stop_timeout_s: float = 30.0) -> Supervisor:
    settings = LaunchSettings(port=0, model=str(model), load_model=False, start_timeout_s=120)
    return Supervisor(settings, logs=sandbox / "logs", status_interval_s=0.2, stop_timeout_s=stop_timeout_s)


def submit(url: str, token: str, steps: int) -> str:
    width, height = 64, 48
    params = {"width": width, "height": height, "layers": 2, "steps": steps, "prompt": "a card", "cfg_scale": 1.0}
    boundary = uuid.uuid4().hex
    body = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n'
        f"Content-Type: application/json\r\n\r\n{json.dumps(params)}\r\n".encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode(),
        bytes([200, 80, 40, 255]) * (width * height), f"\r\n--{boundary}--\r\n".encode()])
    req = urllib.request.Request(f"{url}/v1/jobs", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["job"]


def test_stop_during_a_job_closes_clients_with_going_away(sandbox, tiny_model, caplog):
    sup = real_supervisor(sandbox, tiny_model)
    sup.run()
    try:
        sup.start()
        sup.wait_for(lambda s: s.kind == NOT_LOADED, 120)
        server = sup.pid
        token = read_token()
        ws_url = sup.url.replace("http://", "ws://") + "/v1/ws"
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10) as ws:
            submit(sup.url, token, steps=100)
            busy = sup.wait_for(lambda s: s.kind == BUSY, 60)
            assert busy.words() == "Busy (1 job)"
            with caplog.at_level(logging.INFO, logger="layerbridge.launcher"):
                began = time.monotonic()
                sup.stop()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        ws.recv(timeout=30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away
                sup.wait_for(lambda s: s.kind == STOPPED, 40)
                took = time.monotonic() - began
        assert took < 30 and "killing it" not in caplog.text  # it ended by itself on SIGTERM
        assert not proc_alive(server)
        assert "shutting down" in (sandbox / "logs" / "server.log").read_text()
    finally:
        assert sup.shutdown(60)


def test_server_log_has_each_line_once(sandbox, tiny_model):
    sup = real_supervisor(sandbox, tiny_model)
    sup.run()
    try:
        sup.start()
        sup.wait_for(lambda s: s.kind == NOT_LOADED, 120)
    finally:
        assert sup.shutdown(60)
    lines = (sandbox / "logs" / "server.log").read_text().splitlines()
    listening = [line for line in lines if "listening on http://127.0.0.1:" in line]
    stopping = [line for line in lines if line.endswith("shutting down")]
    assert len(listening) == 1 and len(stopping) == 1, lines
    assert lines[0].startswith("---- ") and "starting: " in lines[0]  # the launcher's own line, in this folder
    assert [p.name for p in (sandbox / "logs").iterdir() if p.name.startswith("server.log.")] == []
