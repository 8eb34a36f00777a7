"""A real LayerBridge server process on a free loopback port, for tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LAYERBRIDGE = [sys.executable, "-m", "backend.cli.main"]


@dataclass
class LiveServer:
    url: str
    port: int
    token: str
    config_dir: Path
    proc: subprocess.Popen
    log_path: Path

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def get_json(self, path: str, timeout: float = 10) -> Any:
        req = urllib.request.Request(self.url + path, headers=self.headers())
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_server(model: Path, workdir: Path, *extra: str, timeout: float = 90.0,
                 launcher: list[str] = LAYERBRIDGE) -> LiveServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "port"
    port_file.unlink(missing_ok=True)
    env = dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(workdir / "config"), LAYERBRIDGE_LOG_DIR=str(workdir / "log"))
    log_path = workdir / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*launcher, "serve", "--port", "0", "--port-file", str(port_file), "--model", str(model), *extra],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        if port_file.is_file() and port_file.read_text().strip():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"server did not start within {timeout} s:\n{log_path.read_text()}")
    port = int(port_file.read_text())
    token = (workdir / "config" / "token").read_text().strip()
    return LiveServer(f"http://127.0.0.1:{port}", port, token, workdir / "config", proc, log_path)


def stop_server(server: LiveServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)
