"""What the launcher asks over the network: a server's JSON answers, and whether a port is taken and by whom."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from typing import Any

from ..core.settings import config_dir
from .config import SETTINGS_FILE


def client_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def http_json(url: str, token: str | None = None, method: str = "GET", timeout: float = 2.0) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on host:port (a bind test, as the server would do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def describe_port_owner(host: str, port: int) -> str:
    try:
        health = http_json(f"http://{client_host(host)}:{port}/health", timeout=1.0)
    except Exception:
        health = None
    if isinstance(health, dict) and health.get("service") == "layerbridge":
        return (f"port {port} is used by a LayerBridge server this launcher did not start; "
                f"stop it or set another port in {config_dir() / SETTINGS_FILE}")
    return f"port {port} is already used by another program; set another port in {config_dir() / SETTINGS_FILE}"
