"""A Python client of the WebSocket protocol (docs/protocol.md §5), used by `layerbridge decompose`."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..core.protocol import PROTOCOL_VERSION
from ..core.errors import ErrorCode, LayerBridgeError
from ..core.layer import PlacedLayer

FRAME = struct.Struct("<4sII")
CHUNK = 4 * 1024 * 1024


@dataclass
class RemoteResult:
    width: int
    height: int
    layers: list[PlacedLayer]
    info: dict[str, Any]


def server_alive(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return json.loads(r.read()).get("service") == "layerbridge"
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _refusal(status: int, body: bytes | None) -> LayerBridgeError:
    """The server's own error for a refused WebSocket handshake (its JSON body), else the HTTP status."""
    try:
        data = json.loads(body or b"")
        return LayerBridgeError(ErrorCode(data["code"]), data["message"])
    except (ValueError, KeyError, TypeError):
        code = ErrorCode.unauthorized if status == 401 else ErrorCode.bad_request
        return LayerBridgeError(code, f"the server refused the connection (HTTP {status})")


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _ws_url(self) -> str:
        return self.url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/ws"

    def decompose(
        self,
        image: np.ndarray,
        params: dict[str, Any],
        on_progress: Callable[[dict], None] | None = None,
    ) -> RemoteResult:
        """Runs one job on the server; a refusal or a lost connection is a LayerBridgeError, as server errors are."""
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        try:
            return self._decompose(image, params, on_progress)
        except InvalidStatus as exc:
            raise _refusal(exc.response.status_code, exc.response.body) from None
        except ConnectionClosed as exc:
            raise LayerBridgeError(
                ErrorCode.internal, f"the connection to the server at {self.url} was lost ({exc})"
            ) from None

    def _decompose(
        self,
        image: np.ndarray,
        params: dict[str, Any],
        on_progress: Callable[[dict], None] | None,
    ) -> RemoteResult:
        from websockets.sync.client import connect

        height, width = image.shape[:2]
        data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        headers = {"Authorization": f"Bearer {self.token}"}
        with connect(self._ws_url(), additional_headers=headers, max_size=CHUNK + 4096, open_timeout=self.timeout) as ws:
            ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "client": f"layerbridge-cli/{__version__}"}))
            self._expect(ws, "hello")
            ws.send(json.dumps({
                "type": "submit", "ref": "cli", "params": params,
                "image": {"format": "rgba8", "width": width, "height": height, "bytes": len(data), "transfer": 1},
            }))
            for offset in range(0, len(data), CHUNK):
                ws.send(FRAME.pack(b"LBPX", 1, offset) + data[offset : offset + CHUNK])
            job = self._expect(ws, "accepted")["job"]
            try:
                while True:
                    msg = self._next(ws)
                    if msg["type"] == "progress":
                        if on_progress:
                            on_progress(msg)
                        if msg["state"] == "cancelled":
                            raise LayerBridgeError(ErrorCode.cancelled, "the job was cancelled", job)
                    elif msg["type"] == "result":
                        return self._receive_layers(ws, msg)
            except KeyboardInterrupt:
                ws.send(json.dumps({"type": "cancel", "job": job}))
                raise

    def _receive_layers(self, ws: Any, result: dict) -> RemoteResult:
        buffers = {e["transfer"]: bytearray(e["bytes"]) for e in result["layers"] if e["bytes"]}
        remaining = {t: len(b) for t, b in buffers.items()}
        while any(remaining.values()):
            frame = ws.recv(timeout=self.timeout)
            if isinstance(frame, str):
                continue
            magic, transfer, offset = FRAME.unpack_from(frame)
            chunk = frame[FRAME.size :]
            buffers[transfer][offset : offset + len(chunk)] = chunk
            remaining[transfer] -= len(chunk)
        layers = []
        for e in result["layers"]:
            if e["bytes"]:
                pixels = np.frombuffer(bytes(buffers[e["transfer"]]), np.uint8).reshape(e["height"], e["width"], 4)
            else:
                pixels = np.zeros((0, 0, 4), np.uint8)
            layers.append(PlacedLayer.from_entry(e, pixels))
        return RemoteResult(result["canvas"]["width"], result["canvas"]["height"], layers, result)

    def _next(self, ws: Any) -> dict:
        while True:
            raw = ws.recv(timeout=None)
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if msg.get("type") == "error":
                try:
                    code = ErrorCode(msg.get("code"))
                except ValueError:
                    code = ErrorCode.internal
                raise LayerBridgeError(code, msg.get("message", "error"), msg.get("job"))
            return msg

    def _expect(self, ws: Any, kind: str) -> dict:
        msg = self._next(ws)
        if msg.get("type") != kind:
            raise LayerBridgeError(ErrorCode.bad_request, f"expected {kind}, got {msg.get('type')}")
        return msg
