"""The aiohttp application: HTTP routes and the WebSocket endpoint of docs/protocol.md."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import struct
import urllib.parse
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from . import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, __version__
from .auth import RequestRules, bearer, load_or_create_token, token_matches
from .engine import Engine
from .errors import ErrorCode, LayerBridgeError
from .image import MAX_ASPECT, MAX_SIDE, PIXEL_FORMATS, PlacedLayer, check_size, decode, encode_png, from_raw, swap_red_blue
from .job import Job, JobParams, JobState
from .settings import Settings
from .worker import Worker

log = logging.getLogger("layerbridge.app")

CHUNK_BYTES = 4 * 1024 * 1024
FRAME_MAGIC = b"LBPX"
FRAME_HEADER = struct.Struct("<4sII")
MAX_TEXT_BYTES = 1024 * 1024
MAX_FRAME_BYTES = CHUNK_BYTES + FRAME_HEADER.size
CLOSE_LINGER_S = 1.0
TOO_BIG = "a WebSocket text message is at most 1 MiB and a binary frame at most 4 MiB + 12 bytes"
NAME_SAFE = " !$&'()*+,-./:;=@_~"  # what X-Layer-Name keeps as it is, besides letters and digits
CAPABILITIES = ["http", "websocket", "rgba8", "bgra8", "png", "cancel", "restore", "presets", "ndjson_events", "caption"]

SETTINGS = web.AppKey("settings", Settings)
WORKER = web.AppKey("worker", Worker)
TOKEN = web.AppKey("token", str)
RULES = web.AppKey("rules", RequestRules)
SOCKETS = web.AppKey("websockets", set)
EVENT_STREAMS = web.AppKey("event_streams", set)  # the queues of open /events streams


def hello_json(settings: Settings) -> dict[str, Any]:
    return {
        "type": "hello",
        "server": "layerbridge",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "min_protocol": MIN_PROTOCOL_VERSION,
        "capabilities": CAPABILITIES,
        "limits": {
            "max_pixels": settings.max_pixels,
            "max_side": MAX_SIDE,
            "max_aspect": MAX_ASPECT,
            "max_upload_bytes": settings.max_upload_bytes,
            "chunk_bytes": CHUNK_BYTES,
        },
    }


def check_protocol(value: Any) -> None:
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise LayerBridgeError(ErrorCode.bad_request, f"protocol must be an integer (got {value!r})")
    if version > PROTOCOL_VERSION:
        raise LayerBridgeError(
            ErrorCode.protocol_mismatch,
            f"this client speaks protocol {version}, but the LayerBridge server ({__version__}) speaks "
            f"{MIN_PROTOCOL_VERSION}–{PROTOCOL_VERSION}: update the LayerBridge server",
        )
    if version < MIN_PROTOCOL_VERSION:
        raise LayerBridgeError(
            ErrorCode.protocol_mismatch,
            f"this client speaks protocol {version}, but the LayerBridge server ({__version__}) needs at least "
            f"{MIN_PROTOCOL_VERSION}: update the plugin",
        )


def error_response(exc: LayerBridgeError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.http_status)


@web.middleware
async def guard(request: web.Request, handler):
    """Errors as JSON, request rules, token and protocol checks for every route."""
    app = request.app
    origin = request.headers.get("Origin")
    try:
        app[RULES].check(request.headers.get("Host"), origin, request.headers.get("Sec-Fetch-Site"))
        if request.method == "OPTIONS":
            response = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-LayerBridge-Protocol"
        else:
            if request.path != "/health":
                given = bearer(request.headers.get("Authorization"))
                is_ws = request.path == "/v1/ws"
                if is_ws and given is None:
                    given = request.query.get("token")
                if not (is_ws and given is None) and not token_matches(given, app[TOKEN]):
                    raise LayerBridgeError(ErrorCode.unauthorized, "missing or wrong access token")
                if "X-LayerBridge-Protocol" in request.headers:
                    check_protocol(request.headers["X-LayerBridge-Protocol"])
            response = await handler(request)
    except LayerBridgeError as exc:
        response = error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(
            LayerBridgeError(ErrorCode.payload_too_large, f"the request is larger than {app[SETTINGS].max_upload_mb} MiB")
        )
    except web.HTTPException as exc:
        if exc.status == 404:
            response = error_response(LayerBridgeError(ErrorCode.not_found, f"no route {request.method} {request.path}"))
        elif exc.status == 405:
            response = error_response(LayerBridgeError(ErrorCode.bad_request, f"{request.method} is not allowed on {request.path}"))
        else:
            raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        response = error_response(LayerBridgeError(ErrorCode.internal, "internal server error; see the server log"))
    if origin is not None and not isinstance(response, web.WebSocketResponse) and not response.prepared:
        if app[RULES].origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
    return response


# ---- HTTP ------------------------------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "layerbridge"})


async def info(request: web.Request) -> web.Response:
    return web.json_response(hello_json(request.app[SETTINGS]))


def status_json(app: web.Application) -> dict[str, Any]:
    worker = app[WORKER]
    data = {"type": "status"}
    data.update(worker.engine.status_json())
    data["queue"] = worker.queue_json()
    return data


async def status(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.get_running_loop().run_in_executor(None, status_json, request.app))


async def load_model(request: web.Request) -> web.Response:
    request.app[WORKER].load_model()
    return web.json_response(status_json(request.app), status=202)


def _json_object(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LayerBridgeError(ErrorCode.bad_request, f"malformed JSON: {exc}")


def raw_pixel_format(value: Any) -> str:
    """The layout of a raw image or layer: rgba8 unless the client names another (docs/protocol.md)."""
    if value is None:
        return "rgba8"
    if value not in PIXEL_FORMATS:
        raise LayerBridgeError(ErrorCode.invalid_params, f"pixel format {value!r} is not one of {', '.join(PIXEL_FORMATS)}")
    return value


def parse_upload(settings: Settings, raw_params: Any, data: bytes, raw_format: bool) -> tuple[np.ndarray, JobParams]:
    """Validate params and decode the image (runs off the event loop: decoding can take a while)."""
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, dict):
        raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
    raw_params = dict(raw_params)
    width, height = raw_params.pop("width", None), raw_params.pop("height", None)
    pixel_format = raw_params.pop("pixel_format", None)
    params = JobParams.parse(raw_params, settings.preset)
    if raw_format:
        if not isinstance(width, int) or not isinstance(height, int) or isinstance(width, bool) or isinstance(height, bool):
            raise LayerBridgeError(ErrorCode.invalid_params, "a raw image needs integer width and height in params")
        image = from_raw(data, width, height, settings.max_pixels, raw_pixel_format(pixel_format))
    elif pixel_format is not None:
        raise LayerBridgeError(ErrorCode.invalid_params, "pixel_format is for a raw image (Content-Type application/octet-stream)")
    else:
        image = decode(data, settings.max_pixels)
    return image, params


async def submit_job(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not request.content_type.startswith("multipart/"):
        raise LayerBridgeError(ErrorCode.bad_request, "POST /v1/jobs takes multipart/form-data with parts params and image")
    try:
        reader = await request.multipart()
        raw_params: Any = None
        data: bytes | None = None
        raw_format = False
        seen: set[str] = set()
        while True:
            part = await reader.next()
            if part is None:
                break
            if part.name in ("params", "image"):
                if part.name in seen:  # a second copy would silently replace the first
                    raise LayerBridgeError(ErrorCode.bad_request, f"the multipart body has more than one {part.name} part")
                seen.add(part.name)
            if part.name == "params":
                raw_params = _json_object(await part.read(decode=False))
            elif part.name == "image":
                raw_format = (part.headers.get("Content-Type") or "").startswith("application/octet-stream")
                data = bytes(await part.read(decode=False))
    except LayerBridgeError:
        raise
    except web.HTTPRequestEntityTooLarge:
        raise
    except Exception as exc:
        raise LayerBridgeError(ErrorCode.bad_request, f"malformed multipart body: {exc}")
    if data is None:
        raise LayerBridgeError(ErrorCode.bad_request, "the image part is missing")
    loop = asyncio.get_running_loop()
    image, params = await loop.run_in_executor(None, parse_upload, settings, raw_params, data, raw_format)
    job = request.app[WORKER].submit(image, params)
    return web.json_response(
        {"job": job.id, "state": job.state.value, "position": request.app[WORKER].position(job)}, status=202
    )


def _job(request: web.Request) -> Job:
    return request.app[WORKER].get(request.match_info["job"])


async def job_state(request: web.Request) -> web.Response:
    job = _job(request)
    return web.json_response(request.app[WORKER].state_json(job))


async def cancel_job(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    job = worker.cancel(request.match_info["job"])
    return web.json_response(worker.state_json(job))


def _done_job(request: web.Request) -> Job:
    job = _job(request)
    if job.state == JobState.cancelled:
        raise LayerBridgeError(ErrorCode.cancelled, "the job was cancelled; it has no result", job.id)
    if job.state == JobState.failed and job.error is not None:
        raise LayerBridgeError(job.error.code, job.error.message, job.id)
    if job.state != JobState.done:
        raise LayerBridgeError(ErrorCode.not_ready, f"the job is {job.state.value}; its result is not ready", job.id)
    return job


async def job_result(request: web.Request) -> web.Response:
    job = _done_job(request)
    return web.json_response(job.result_json(request.app[WORKER].expires_in(job)))


async def job_layer(request: web.Request) -> web.Response:
    job = _done_job(request)
    try:
        index = int(request.match_info["index"])
        layer = job.result.layers[index]
        if index < 0:
            raise IndexError
    except (ValueError, IndexError):
        raise LayerBridgeError(ErrorCode.not_found, f"no layer {request.match_info['index']!r} in job {job.id}", job.id)
    headers = {
        "X-Layer-Width": str(layer.width),
        "X-Layer-Height": str(layer.height),
        "X-Layer-X": str(layer.x),
        "X-Layer-Y": str(layer.y),
        # a header carries bytes, and browsers read them as Latin-1: the name as percent-encoded UTF-8
        "X-Layer-Name": urllib.parse.quote(layer.name, safe=NAME_SAFE),
    }
    if request.query.get("format") == "png":
        if layer.width == 0:
            raise LayerBridgeError(ErrorCode.not_found, "the layer is empty: it has no PNG", job.id)
        body = await asyncio.get_running_loop().run_in_executor(None, encode_png, layer.pixels)
        return web.Response(body=body, content_type="image/png", headers=headers)
    fmt = request.query.get("format")
    pixels = layer.pixels if fmt in (None, "rgba8") else swap_red_blue(layer.pixels) if fmt == "bgra8" else None
    if pixels is None:
        raise LayerBridgeError(ErrorCode.bad_request, f"format {fmt!r} is not one of png, rgba8, bgra8", job.id)
    return web.Response(body=pixels.tobytes(), content_type="application/octet-stream", headers=headers)


async def job_events(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER]
    job_id = request.match_info["job"]
    q = worker.subscribe(job_id)
    streams = request.app[EVENT_STREAMS]
    streams.add(q)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
    await response.prepare(request)
    try:
        while True:
            try:
                state = await asyncio.wait_for(q.get(), timeout=15)
            except asyncio.TimeoutError:
                await response.write(b'{"type":"keepalive"}\n')
                continue
            if state is None:  # the server is stopping
                break
            await response.write(json.dumps(state).encode() + b"\n")
            if state["state"] in ("done", "failed", "cancelled"):
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        streams.discard(q)
        worker.unsubscribe(job_id, q)
    try:
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response


# ---- WebSocket -------------------------------------------------------------------------------------------------


class Upload:
    def __init__(self, ref: Any, params: Any, width: int, height: int, size: int, pixel_format: str):
        self.ref, self.params, self.width, self.height, self.pixel_format = ref, params, width, height, pixel_format
        self.buffer = bytearray(size)
        # the covered byte ranges [starts[i], ends[i]), sorted, disjoint and not touching (in-order chunks: one range)
        self.starts: list[int] = []
        self.ends: list[int] = []

    def write(self, offset: int, chunk: memoryview) -> None:
        start, end = offset, offset + len(chunk)
        self.buffer[start:end] = chunk
        lo = bisect.bisect_left(self.ends, start)  # the first range ending at or after start
        hi = bisect.bisect_right(self.starts, end)  # past the last range starting at or before end
        if lo < hi:
            start, end = min(start, self.starts[lo]), max(end, self.ends[hi - 1])
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]

    @property
    def complete(self) -> bool:
        """Every byte covered (a resent chunk counts once): touching ranges merge, so that is one range."""
        return self.starts == [0] and self.ends == [len(self.buffer)]


class Connection:
    """One WebSocket client: handshake, uploads in progress, and the jobs it follows."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, authed: bool):
        self.app = request.app
        self.settings = request.app[SETTINGS]
        self.worker = request.app[WORKER]
        self.ws = ws
        self.authed = authed
        self.hello = False
        self.uploads: dict[int, Upload] = {}
        self.upload_bytes = 0
        self.follows: dict[str, asyncio.Task] = {}
        self.send_lock = asyncio.Lock()
        self.next_transfer = 1

    async def send(self, data: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_str(json.dumps(data))

    async def send_error(self, exc: LayerBridgeError, ref: Any = None) -> None:
        await self.send(exc.to_json(ref))

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    if len(msg.data) > MAX_TEXT_BYTES // 4 and len(msg.data.encode()) > MAX_TEXT_BYTES:
                        await self.ws.close(code=WSCloseCode.MESSAGE_TOO_BIG)  # Socket.close sends the error first
                        break
                    await self.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    if len(msg.data) > MAX_FRAME_BYTES:
                        await self.ws.close(code=WSCloseCode.MESSAGE_TOO_BIG)
                        break
                    await self.on_binary(msg.data)
                elif msg.type == WSMsgType.ERROR:  # e.g. a message over max_msg_size: aiohttp closed with 1009
                    log.info("websocket closed: %s", self.ws.exception())
                    break
        finally:
            for task in self.follows.values():
                task.cancel()

    async def on_text(self, text: str) -> None:
        ref = None
        try:
            msg = _json_object(text)
            ref = msg.get("ref") if isinstance(msg, dict) else None
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise LayerBridgeError(ErrorCode.bad_request, "a message must be a JSON object with a string 'type'")
            kind = msg["type"]
            if kind == "auth":
                if not token_matches(msg.get("token") if isinstance(msg.get("token"), str) else None, self.app[TOKEN]):
                    await self.send_error(LayerBridgeError(ErrorCode.unauthorized, "missing or wrong access token"), ref)
                    await self.ws.close(code=4401)
                    return
                self.authed = True
                return
            if not self.authed:
                await self.send_error(LayerBridgeError(ErrorCode.unauthorized, "authenticate first (token)"), ref)
                await self.ws.close(code=4401)
                return
            if kind == "hello":
                try:
                    check_protocol(msg.get("protocol"))
                except LayerBridgeError as exc:
                    await self.send_error(exc, ref)
                    if exc.code == ErrorCode.protocol_mismatch:
                        await self.ws.close(code=4426)
                    return
                self.hello = True
                reply = hello_json(self.settings)
                reply["ref"] = ref
                await self.send(reply)
                return
            if not self.hello:
                raise LayerBridgeError(ErrorCode.bad_request, "send hello first")
            handler = {
                "submit": self.on_submit,
                "cancel": self.on_cancel,
                "subscribe": self.on_subscribe,
                "fetch": self.on_fetch,
                "status": self.on_status,
                "ping": self.on_ping,
            }.get(kind)
            if handler is None:
                raise LayerBridgeError(ErrorCode.bad_request, f"unknown message type {kind!r}")
            await handler(msg, ref)
        except LayerBridgeError as exc:
            await self.send_error(exc, ref)

    async def on_ping(self, msg: dict, ref: Any) -> None:
        await self.send({"type": "pong", "ref": ref})

    async def on_status(self, msg: dict, ref: Any) -> None:
        data = await asyncio.get_running_loop().run_in_executor(None, status_json, self.app)
        data["ref"] = ref
        await self.send(data)

    async def on_submit(self, msg: dict, ref: Any) -> None:
        image = msg.get("image")
        if not isinstance(image, dict) or image.get("format") not in PIXEL_FORMATS:
            raise LayerBridgeError(
                ErrorCode.bad_request, "submit needs image: {format: 'rgba8' or 'bgra8', width, height, bytes, transfer}"
            )
        width, height, size, transfer = (image.get(k) for k in ("width", "height", "bytes", "transfer"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height, size, transfer)):
            raise LayerBridgeError(ErrorCode.bad_request, "image width, height, bytes and transfer must be integers")
        if not 0 <= transfer < 2**32:
            raise LayerBridgeError(ErrorCode.bad_request, "transfer must be a u32")
        if transfer in self.uploads:
            raise LayerBridgeError(ErrorCode.bad_request, f"transfer {transfer} is already in use on this connection")
        # Validate everything before the client spends time uploading.
        raw_params = {} if msg.get("params") is None else msg["params"]
        if not isinstance(raw_params, dict):
            raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
        JobParams.parse(raw_params, self.settings.preset)
        check_size(width, height, self.settings.max_pixels)
        if size != width * height * 4:
            raise LayerBridgeError(
                ErrorCode.invalid_image, f"{width}×{height} {image['format']} is {width * height * 4} bytes, not {size}"
            )
        if size + self.upload_bytes > self.settings.max_upload_bytes:
            raise LayerBridgeError(ErrorCode.payload_too_large, f"uploads are limited to {self.settings.max_upload_mb} MiB")
        self.uploads[transfer] = Upload(ref, raw_params, width, height, size, image["format"])
        self.upload_bytes += size

    async def on_binary(self, data: bytes) -> None:
        if not self.authed or not self.hello:
            await self.send_error(LayerBridgeError(ErrorCode.bad_request, "binary frame before the handshake"))
            return
        if len(data) <= FRAME_HEADER.size or data[:4] != FRAME_MAGIC:
            await self.send_error(LayerBridgeError(ErrorCode.bad_request, "binary frame without the LBPX header or without data"))
            return
        _, transfer, offset = FRAME_HEADER.unpack_from(data)
        upload = self.uploads.get(transfer)
        if upload is None:
            await self.send_error(LayerBridgeError(ErrorCode.bad_request, f"no upload announced with transfer {transfer}"))
            return
        chunk = memoryview(data)[FRAME_HEADER.size :]
        if offset + len(chunk) > len(upload.buffer):
            del self.uploads[transfer]
            self.upload_bytes -= len(upload.buffer)
            await self.send_error(LayerBridgeError(ErrorCode.invalid_image, "chunk past the end of the announced image"), upload.ref)
            return
        upload.write(offset, chunk)
        if not upload.complete:
            return
        del self.uploads[transfer]
        self.upload_bytes -= len(upload.buffer)
        try:
            params = dict(upload.params, width=upload.width, height=upload.height, pixel_format=upload.pixel_format)
            image, job_params = await asyncio.get_running_loop().run_in_executor(
                None, parse_upload, self.settings, params, bytes(upload.buffer), True
            )
            job = self.worker.submit(image, job_params)
        except LayerBridgeError as exc:
            await self.send_error(exc, upload.ref)
            return
        await self.send({"type": "accepted", "ref": upload.ref, "job": job.id, "position": self.worker.position(job)})
        await self.follow(job.id)

    async def follow(self, job_id: str, ref: Any = None) -> None:
        """Forward the job's events to this connection, from its current state on (the direct answer, with ref)."""
        task = self.follows.get(job_id)
        if task is not None and not task.done():
            state = self.worker.state_json(self.worker.get(job_id))
            state["ref"] = ref
            await self.send(state)
            return
        q = self.worker.subscribe(job_id)
        self.follows[job_id] = asyncio.create_task(self._forward(job_id, q, ref))

    async def _forward(self, job_id: str, q: asyncio.Queue, ref: Any) -> None:
        try:
            state = dict(await q.get(), ref=ref)
            while True:
                await self.send(state)
                if state["state"] == "done":
                    await self.send_result(self.worker.get(job_id), None)
                    break
                if state["state"] == "failed":
                    job = self.worker.get(job_id)
                    if job.error is not None:
                        await self.send_error(job.error)
                    break
                if state["state"] == "cancelled":
                    break
                state = await q.get()
        except (ConnectionResetError, LayerBridgeError):
            pass
        finally:
            self.worker.unsubscribe(job_id, q)

    async def send_result(self, job: Job, ref: Any) -> None:
        assert job.result is not None
        result = job.result_json(self.worker.expires_in(job))
        result["ref"] = ref
        transfers = []
        for entry in result["layers"]:
            entry["transfer"] = self.next_transfer
            transfers.append(self.next_transfer)
            self.next_transfer = (self.next_transfer + 1) % 2**32
        async with self.send_lock:
            await self.ws.send_str(json.dumps(result))
            for transfer, layer in zip(transfers, job.result.layers):
                await self._send_pixels(transfer, layer)

    async def _send_pixels(self, transfer: int, layer: PlacedLayer) -> None:
        data = memoryview(layer.pixels.reshape(-1))
        for offset in range(0, len(data), CHUNK_BYTES):
            chunk = data[offset : offset + CHUNK_BYTES]
            await self.ws.send_bytes(FRAME_HEADER.pack(FRAME_MAGIC, transfer, offset) + chunk.tobytes())

    async def on_cancel(self, msg: dict, ref: Any) -> None:
        job = self.worker.cancel(_job_id(msg))
        if job.state.finished:
            state = self.worker.state_json(job)
            state["ref"] = ref
            await self.send(state)
        else:  # running: it stops within a step; following it, this connection gets its final `cancelled` state
            await self.follow(job.id, ref)

    async def on_subscribe(self, msg: dict, ref: Any) -> None:
        await self.follow(self.worker.get(_job_id(msg)).id, ref)

    async def on_fetch(self, msg: dict, ref: Any) -> None:
        job = self.worker.get(_job_id(msg))
        if job.state == JobState.done:
            await self.send_result(job, ref)
        elif job.state == JobState.failed and job.error is not None:
            raise LayerBridgeError(job.error.code, job.error.message, job.id)
        elif job.state == JobState.cancelled:
            raise LayerBridgeError(ErrorCode.cancelled, "the job was cancelled; it has no result", job.id)
        else:
            raise LayerBridgeError(ErrorCode.not_ready, f"the job is {job.state.value}; subscribe to get its result", job.id)


def _job_id(msg: dict) -> str:
    job = msg.get("job")
    if not isinstance(job, str):
        raise LayerBridgeError(ErrorCode.bad_request, "the message needs a string 'job'")
    return job


class Socket(web.WebSocketResponse):
    """A WebSocket that sends an `error` payload_too_large before closing with 1009: also when aiohttp closes it
    itself, on a message over max_msg_size that it refuses before reading it (the handler never sees that one)."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            with contextlib.suppress(Exception):
                await self.send_str(json.dumps(LayerBridgeError(ErrorCode.payload_too_large, TOO_BIG).to_json()))
                # the client may still be sending the refused message: closing at once would reset the connection
                # before its system hands it the error
                await asyncio.sleep(CLOSE_LINGER_S)
        return await super().close(code=code, message=message, drain=drain)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    given = bearer(request.headers.get("Authorization")) or request.query.get("token")
    # aiohttp's limit counts compressed bytes too, and permessage-deflate makes an incompressible frame a few hundred
    # bytes longer: Connection.run applies the exact limits to the messages as received
    ws = Socket(max_msg_size=MAX_FRAME_BYTES + 1024, heartbeat=30)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        await Connection(request, ws, token_matches(given, request.app[TOKEN])).run()
    finally:
        sockets.discard(ws)
    return ws


# ---- app -------------------------------------------------------------------------------------------------------


def create_app(settings: Settings, engine: Engine | None = None, token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=settings.max_upload_bytes + 1024 * 1024)
    app[SETTINGS] = settings
    app[TOKEN] = token or load_or_create_token()
    app[RULES] = RequestRules(settings.port, settings.allowed_origins, settings.allowed_hosts)
    app[WORKER] = Worker(engine or Engine(settings), settings.max_queue, settings.result_ttl_s, settings.max_results,
                         settings.max_results_mb * 1024 * 1024)
    app[SOCKETS] = set()
    app[EVENT_STREAMS] = set()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/info", info)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/model/load", load_model)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs/{job}", job_state)
    app.router.add_get("/v1/jobs/{job}/events", job_events)
    app.router.add_post("/v1/jobs/{job}/cancel", cancel_job)
    app.router.add_get("/v1/jobs/{job}/result", job_result)
    app.router.add_get("/v1/jobs/{job}/layers/{index}", job_layer)
    app.router.add_get("/v1/ws", websocket)

    async def on_startup(app: web.Application) -> None:
        app[WORKER].start()
        if settings.preload:
            app[WORKER].load_model()

    async def on_shutdown(app: web.Application) -> None:
        # Every follower learns its job's end (failed, server_stopped) before its connection goes; without closing
        # them, an open WebSocket would hold the shutdown for aiohttp's shutdown timeout.
        app[WORKER].end_jobs()
        for q in set(app[EVENT_STREAMS]):
            q.put_nowait(None)  # an /events stream ends after what it still has to write
        for _ in range(10):  # the followers' tasks send the final states (and errors) they were just given
            await asyncio.sleep(0.02)
        closing = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in set(app[SOCKETS])]
        await asyncio.gather(*closing, return_exceptions=True)

    async def on_cleanup(app: web.Application) -> None:
        await app[WORKER].stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
