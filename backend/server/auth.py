"""The install's access token and the request rules that keep other sites and machines out (protocol §1)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from pathlib import Path

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.settings import LOOPBACK_HOSTS, config_dir

TOKEN_FILE = "token"
log = logging.getLogger("layerbridge.auth")


def token_path(directory: Path | None = None) -> Path:
    return (directory or config_dir()) / TOKEN_FILE


def load_or_create_token(directory: Path | None = None) -> str:
    path = token_path(directory)
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    return rotate_token(directory)


def rotate_token(directory: Path | None = None) -> str:
    """Write a new random token, readable by this user only."""
    path = token_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token


def token_matches(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def _host_name(host_header: str) -> str:
    host = host_header.strip()
    if host.startswith("["):  # [::1]:7860
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.lower()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestRules:
    """Host, Origin and Sec-Fetch-Site checks. Token checks are done by the app, since WebSocket has three ways."""

    def __init__(self, port: int, extra_origins: list[str], extra_hosts: list[str]):
        self.extra_hosts = {h.lower() for h in extra_hosts}
        self.origins = {o.rstrip("/").lower() for o in extra_origins}
        self.port = port

    def set_port(self, port: int) -> None:
        self.port = port

    def own_origins(self) -> set[str]:
        return {f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}", f"http://[::1]:{self.port}"}

    def origin_allowed(self, origin: str) -> bool:
        o = origin.rstrip("/").lower()
        if o in self.origins or o in self.own_origins():
            return True
        # Photoshop UXP panels (protocol §6): no web page can send these; browsers send `null` for file pages.
        return o.startswith("uxp://") or o == "file:"  # `file://` once its trailing slashes are stripped

    def check(self, host: str | None, origin: str | None, fetch_site: str | None) -> None:
        """Raise forbidden_host / forbidden_origin, or return."""
        name = _host_name(host or "")
        # An IP literal cannot be rebound by DNS; names must be loopback or configured.
        if not (name in LOOPBACK_HOSTS or name in self.extra_hosts or _is_ip(name)):
            log.warning("refused a request for Host %r; allow it with --allowed-host %s", name, name)
            raise LayerBridgeError(
                ErrorCode.forbidden_host,
                f"requests for host {name!r} are refused; start the server with --allowed-host {name} to allow it",
            )
        if origin is not None and not self.origin_allowed(origin):
            log.warning("refused a request with Origin %r; allow it with --allowed-origin %s", origin, origin)
            raise LayerBridgeError(
                ErrorCode.forbidden_origin,
                f"requests from origin {origin!r} are refused; start the server with --allowed-origin {origin} to allow it",
            )
        if origin is None and (fetch_site or "").lower() == "cross-site":
            raise LayerBridgeError(ErrorCode.forbidden_origin, "cross-site requests are refused")
