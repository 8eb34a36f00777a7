"""The middleware every route passes: request rules, token and protocol checks, errors as JSON."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..core.errors import ErrorCode, LayerBridgeError
from .appkeys import CONNECTIONS, RULES, SETTINGS, TOKEN
from .auth import bearer, token_matches
from .handshake import check_protocol

log = logging.getLogger("layerbridge.app")


def error_response(exc: LayerBridgeError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.http_status)


@web.middleware
async def guard(request: web.Request, handler):
    """Errors as JSON, request rules, token and protocol checks for every route."""
    app = request.app
    connections = app[CONNECTIONS]
    connections.request_started(request)
    try:
        return await _guarded(request, handler)
    finally:
        connections.request_finished(request)


async def _guarded(request: web.Request, handler):
    app = request.app
    origins = request.headers.getall("Origin", ())
    origin = origins[0] if len(origins) == 1 else None
    try:
        if len(origins) > 1:  # which one a browser meant cannot be told
            raise LayerBridgeError(ErrorCode.forbidden_origin, "a request with more than one Origin header is refused")
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
                if given is not None:
                    app[CONNECTIONS].authenticated(request)
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
