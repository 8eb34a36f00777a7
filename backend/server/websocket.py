"""The WebSocket endpoint (docs/protocol.md §5): one `Connection` per client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import Job, JobState
from ..core.options import TASKS
from ..core.layer import PlacedLayer
from ..core.protocol import CHUNK_BYTES, FRAME_HEADER, FRAME_MAGIC, MAX_FRAME_BYTES, MAX_TEXT_BYTES, PIXEL_FORMATS
from .appkeys import CONNECTIONS, SETTINGS, SOCKETS, TOKEN, UPLOADS, WORKER
from .auth import bearer, token_matches
from .handshake import check_protocol, hello_json
from .routes import status_json
from .upload import ImageSpec, Upload, decode_image, json_object, max_aspect_for, parse_job_params

log = logging.getLogger("layerbridge.app")

CLOSE_LINGER_S = 1.0
TOO_BIG = "a WebSocket text message is at most 1 MiB and a binary frame at most 4 MiB + 12 bytes"


class Connection:
    """One WebSocket client: handshake, uploads in progress, and the jobs it follows."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, authed: bool):
        self.request = request
        self.app = request.app
        self.settings = request.app[SETTINGS]
        self.worker = request.app[WORKER]
        self.ws = ws
        self.authed = authed
        self.hello = False
        self.uploads: dict[int, Upload] = {}
        self.upload_bytes = 0  # the sizes its uploads announced
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
            for upload in self.uploads.values():
                upload.discard()
            self.uploads.clear()

    async def on_text(self, text: str) -> None:
        ref = kind = None
        try:
            msg = json_object(text)
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
                self.app[CONNECTIONS].authenticated(self.request)
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
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:  # a bug: this message fails with a coded error, the connection and the server go on
            log.exception("internal error on a WebSocket %s message", kind)
            await self.send_error(LayerBridgeError(ErrorCode.internal, "internal server error; see the server log"), ref)

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
        # Everything is validated, once, before the client spends time uploading; the upload keeps the result.
        task = msg.get("task", "decompose")
        if task not in TASKS:
            raise LayerBridgeError(ErrorCode.bad_request, f"task must be one of {', '.join(TASKS)} (got {task!r})")
        raw_params = {} if msg.get("params") is None else msg["params"]
        if not isinstance(raw_params, dict):
            raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
        params = parse_job_params(self.settings, raw_params, task)
        spec = ImageSpec.parse(width, height, image["format"], self.settings.max_pixels, max_aspect=max_aspect_for(task))
        if size != spec.bytes:
            raise LayerBridgeError(
                ErrorCode.invalid_image, f"{width}×{height} {image['format']} is {spec.bytes} bytes, not {size}"
            )
        if size + self.upload_bytes > self.settings.max_upload_bytes:
            raise LayerBridgeError(ErrorCode.payload_too_large, f"uploads are limited to {self.settings.max_upload_mb} MiB")
        self.uploads[transfer] = Upload(ref, params, spec, self.app[UPLOADS], task)
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
        try:
            if offset + len(chunk) > upload.size:
                raise LayerBridgeError(ErrorCode.invalid_image, "chunk past the end of the announced image")
            upload.write(offset, chunk)
        except LayerBridgeError as exc:
            self._end_upload(transfer)
            await self.send_error(exc, upload.ref)
            return
        if not upload.complete:
            return
        del self.uploads[transfer]  # a chunk resent now finds no upload: the job is submitted once
        self.upload_bytes -= upload.size
        try:
            image = await asyncio.get_running_loop().run_in_executor(
                None, decode_image, self.settings, upload.spec, upload.buffer
            )
            job = self.worker.submit(image, upload.params, upload.task)
        except LayerBridgeError as exc:
            await self.send_error(exc, upload.ref)
            return
        finally:
            upload.discard()  # its bytes stay reserved until they are decoded
        await self.send({"type": "accepted", "ref": upload.ref, "job": job.id, "position": self.worker.position(job)})
        await self.follow(job.id)

    def _end_upload(self, transfer: int) -> None:
        upload = self.uploads.pop(transfer)
        self.upload_bytes -= upload.size
        upload.discard()

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
        transfers = []  # (transfer, layer): pixel entries only; a group entry has no pixels and no transfer
        for entry, layer in zip(result["layers"], job.result.layers):
            if layer.group:
                continue
            entry["transfer"] = self.next_transfer
            transfers.append((self.next_transfer, layer))
            self.next_transfer = (self.next_transfer + 1) % 2**32
        async with self.send_lock:
            await self.ws.send_str(json.dumps(result))
            for transfer, layer in transfers:
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
    if not ws.can_prepare(request).ok:
        raise LayerBridgeError(ErrorCode.bad_request, "/v1/ws is a WebSocket: the request needs Upgrade: websocket")
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        await Connection(request, ws, token_matches(given, request.app[TOKEN])).run()
    finally:
        sockets.discard(ws)
    return ws
