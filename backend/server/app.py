"""The aiohttp application: `create_app` wires the routes, the WebSocket endpoint and the job queue together."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSCloseCode, web

from ..core.settings import Settings, config_dir
from ..model.engine import Engine
from .appkeys import CONNECTIONS, EVENT_STREAMS, RULES, SETTINGS, SOCKETS, TOKEN, UPLOADS, WORKER
from .auth import RequestRules, load_or_create_token
from .connections import SERVER_NAME, ConnectionGuard
from .job_ids import JOB_IDS_FILE, RecentJobIds
from .middleware import guard
from .upload import UploadBudget
from .routes import cancel_job, health, info, job_events, job_layer, job_result, job_state, load_model, status, submit_job, submit_split
from .websocket import websocket
from .worker import Worker


def _engine(settings: Settings) -> Any:
    """The model in this process, or (`--cluster`) the dispatcher to replicas through Ray Serve, imported only then."""
    if not settings.is_cluster:
        return Engine(settings)
    try:
        from ..cluster.dispatcher import ClusterEngine
    except ImportError as exc:
        raise SystemExit(f"--cluster needs Ray Serve: pip install -e \".[cluster]\" ({exc})")
    return ClusterEngine(settings)


def create_app(settings: Settings, engine: Engine | None = None, token: str | None = None,
               job_ids: RecentJobIds | None = None) -> web.Application:
    """The server's application.

    Args:
        settings: the server's settings.
        engine: the model engine (default: one made from the settings).
        token: the access token (default: the install's, from the config folder).
        job_ids: where job ids are remembered across restarts (default: a file in the config folder).
    """
    app = web.Application(middlewares=[guard], client_max_size=settings.max_upload_bytes + 1024 * 1024)
    app[SETTINGS] = settings
    app[TOKEN] = token or load_or_create_token()
    app[RULES] = RequestRules(settings.port, settings.allowed_origins, settings.allowed_hosts)
    app[WORKER] = Worker(engine or _engine(settings), settings.max_queue, settings.result_ttl_s, settings.max_results,
                         settings.max_results_mb * 1024 * 1024,
                         job_ids if job_ids is not None else RecentJobIds(config_dir() / JOB_IDS_FILE))
    app[CONNECTIONS] = ConnectionGuard(settings.max_connections, settings.header_timeout_s, settings.idle_timeout_s)
    app[UPLOADS] = UploadBudget(settings.max_uploads_bytes)
    app[SOCKETS] = set()
    app[EVENT_STREAMS] = set()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/info", info)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/model/load", load_model)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_post("/v1/split", submit_split)
    app.router.add_get("/v1/jobs/{job}", job_state)
    app.router.add_get("/v1/jobs/{job}/events", job_events)
    app.router.add_post("/v1/jobs/{job}/cancel", cancel_job)
    app.router.add_get("/v1/jobs/{job}/result", job_result)
    app.router.add_get("/v1/jobs/{job}/layers/{index}", job_layer)
    app.router.add_get("/v1/ws", websocket)

    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER_NAME  # not aiohttp's and Python's versions

    async def on_startup(app: web.Application) -> None:
        app[CONNECTIONS].start()
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
        await app[CONNECTIONS].stop()
        await app[WORKER].stop()

    app.on_response_prepare.append(on_response_prepare)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
