"""Small synchronous clients of the protocol for tests: HTTP with urllib, WebSocket with websockets.sync."""

from __future__ import annotations

import io
import json
import struct
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import numpy as np
from PIL import Image
from websockets.sync.client import connect

FRAME = struct.Struct("<4sII")
FAST = {"layers": 2, "steps": 2, "prompt": "a test card", "cfg_scale": 1.0, "seed": 7}


def image(width: int, height: int, seed: int = 0, alpha: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if not alpha:
        a[..., 3] = 255
    return a


def png_bytes(a: np.ndarray, mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").convert(mode).save(buf, "PNG")
    return buf.getvalue()


def multipart(params: Any, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    if params is not None:
        body = params if isinstance(params, (bytes, str)) else json.dumps(params)
        body = body.encode() if isinstance(body, str) else body
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'.encode()
            + body + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            token: bool = True, timeout: float = 30) -> tuple[int, dict, bytes]:
    h = dict(headers or {})
    if token:
        h.setdefault("Authorization", f"Bearer {server.token}")
    req = urllib.request.Request(server.url + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def submit_http(server, a: np.ndarray | None = None, params: Any = None, raw: bool = True, **kw) -> tuple[int, dict]:
    a = image(97, 61) if a is None else a
    params = dict(FAST) if params is None else params
    if raw:
        p = {"width": a.shape[1], "height": a.shape[0], **params} if isinstance(params, dict) else params
        body, ctype = multipart(p, a.tobytes(), "application/octet-stream")
    else:
        body, ctype = multipart(params, png_bytes(a), "image/png")
    status, _, data = request(server, "POST", "/v1/jobs", body, {"Content-Type": ctype}, **kw)
    return status, json.loads(data)


def wait_state(server, job: str, states=("done", "failed", "cancelled"), timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, data = request(server, "GET", f"/v1/jobs/{job}")
        state = json.loads(data)
        if state.get("state") in states:
            return state
        time.sleep(0.1)
    raise TimeoutError(f"job {job} did not reach {states}")


class WS:
    """One WebSocket connection speaking the protocol."""

    def __init__(self, server, token: str | None = "header", protocol: int = 1, hello: bool = True, **kw):
        url = server.url.replace("http://", "ws://") + "/v1/ws"
        headers = kw.pop("additional_headers", {})
        if token == "header":
            headers["Authorization"] = f"Bearer {server.token}"
        elif token == "query":
            url += f"?token={server.token}"
        self._cm = connect(url, additional_headers=headers, max_size=8 * 1024 * 1024, open_timeout=10, **kw)
        self.ws = self._cm.__enter__()
        self.frames: dict[int, bytearray] = {}
        if token == "message":
            self.send({"type": "auth", "token": server.token})
        if hello:
            self.send({"type": "hello", "protocol": protocol, "client": "tests"})
            self.hello = self.recv()

    def send(self, msg: dict) -> None:
        self.ws.send(json.dumps(msg))

    def _read(self, timeout: float) -> dict | None:
        """One message: JSON is returned, a binary frame is stored by its transfer (None)."""
        raw = self.ws.recv(timeout=timeout)
        if isinstance(raw, str):
            return json.loads(raw)
        magic, transfer, offset = FRAME.unpack_from(raw)
        assert magic == b"LBPX"
        buf = self.frames.setdefault(transfer, bytearray())
        chunk = raw[FRAME.size:]
        if len(buf) < offset + len(chunk):
            buf.extend(b"\0" * (offset + len(chunk) - len(buf)))
        buf[offset:offset + len(chunk)] = chunk
        return None

    def recv(self, timeout: float = 120) -> dict:
        """The next JSON message; binary frames met on the way are stored."""
        while True:
            msg = self._read(timeout)
            if msg is not None:
                return msg

    def submit(self, a: np.ndarray, params: dict | None = None, transfer: int = 1, ref: str = "r1",
               chunk: int = 4 * 1024 * 1024, pixel_format: str = "rgba8") -> None:
        data = (a[..., [2, 1, 0, 3]] if pixel_format == "bgra8" else a).tobytes()
        self.send({"type": "submit", "ref": ref, "params": dict(FAST) if params is None else params,
                   "image": {"format": pixel_format, "width": a.shape[1], "height": a.shape[0], "bytes": len(data), "transfer": transfer}})
        for off in range(0, len(data), chunk):
            self.ws.send(FRAME.pack(b"LBPX", transfer, off) + data[off:off + chunk])

    def until(self, kind: str, timeout: float = 180, **match) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(timeout=max(0.1, deadline - time.monotonic()))
            if msg.get("type") == kind and all(msg.get(k) == v for k, v in match.items()):
                return msg

    def layers(self, result: dict) -> list[np.ndarray]:
        out = []
        for e in result["layers"]:
            if e["bytes"]:
                deadline = time.monotonic() + 60
                while len(self.frames.get(e["transfer"], b"")) < e["bytes"]:
                    assert self._read(max(0.1, deadline - time.monotonic())) is None, "JSON between a result's frames"
                out.append(np.frombuffer(bytes(self.frames[e["transfer"]]), np.uint8).reshape(e["height"], e["width"], 4))
            else:
                out.append(np.zeros((0, 0, 4), np.uint8))
        return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
