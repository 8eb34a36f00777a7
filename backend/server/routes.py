"""The HTTP routes of docs/protocol.md §4."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

from aiohttp import web

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import Job, JobState
from ..imaging.image import encode_png, swap_red_blue
from .appkeys import EVENT_STREAMS, SETTINGS, WORKER
from .handshake import hello_json
from .upload import decode_image, json_object, parse_params

NAME_SAFE = " !$&'()*+,-./:;=@_~"  # what X-Layer-Name keeps as it is, besides letters and digits


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


async def submit_job(request: web.Request) -> web.Response:
    """POST /v1/jobs: a decomposition, queued for the model."""
    return await _submit(request, "decompose", "POST /v1/jobs")


async def submit_split(request: web.Request) -> web.Response:
    """POST /v1/split: a split task, run at once beside the model queue (docs/elements.md)."""
    return await _submit(request, "split", "POST /v1/split")


async def _submit(request: web.Request, task: str, route: str) -> web.Response:
    settings = request.app[SETTINGS]
    if not request.content_type.startswith("multipart/"):
        raise LayerBridgeError(ErrorCode.bad_request, f"{route} takes multipart/form-data with parts params and image")
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
            if part.name not in ("params", "image"):  # refused before its bytes are read
                raise LayerBridgeError(
                    ErrorCode.bad_request, f"unknown part {part.name!r}: {route} takes the parts params and image"
                )
            if part.name in seen:  # a second copy would silently replace the first
                raise LayerBridgeError(ErrorCode.bad_request, f"the multipart body has more than one {part.name} part")
            seen.add(part.name)
            if part.name == "params":
                raw_params = json_object(await part.read(decode=False))
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
    params, spec = parse_params(settings, raw_params, raw_format, task)
    image = await asyncio.get_running_loop().run_in_executor(None, decode_image, settings, spec, data, task)
    job = request.app[WORKER].submit(image, params, task)
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
        text = request.match_info["index"]
        if not (text.isascii() and text.isdigit()):  # int() would also take " 1" and "１"
            raise ValueError
        layer = job.result.layers[int(text)]
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
