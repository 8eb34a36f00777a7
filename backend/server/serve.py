"""Running the app: listening, logging to the user's log folder, the port file, a clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .. import __version__
from .app import create_app
from .appkeys import CONNECTIONS, RULES, WORKER
from .connections import GuardedSite, connection_cap
from ..core.lifetime import log_to_console_only, tie_to_launcher
from ..core.settings import Settings, log_dir
from ..model.loading import quiet_libraries

log = logging.getLogger("layerbridge")


def setup_logging(name: str = "server") -> Path:
    """Console plus a rotating file in the user's log folder; returns the file's path."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.log"
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = [console]
    if not log_to_console_only():
        file = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8")
        file.setFormatter(fmt)
        handlers.insert(0, file)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for noisy in ("diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return path


async def _serve(settings: Settings) -> bool:
    """Serves until SIGINT or SIGTERM; returns whether the model thread was still busy then."""
    app = create_app(settings)
    connections = app[CONNECTIONS]
    connections.set_cap(connection_cap(settings.max_connections))
    connections.install_loop_handler(asyncio.get_running_loop())
    runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=settings.idle_timeout_s)
    await runner.setup()
    site = GuardedSite(runner, settings.host, settings.port, connections)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    app[RULES].set_port(port)
    if not settings.is_loopback:
        banner = "!" * 78
        log.warning(
            "\n%s\n  LayerBridge is listening on %s:%s, reachable from other machines.\n"
            "  Every request still needs the access token (`layerbridge token`).\n%s",
            banner, settings.host, port, banner,
        )
    log.info("LayerBridge %s listening on http://%s:%s (model %s; %d connections at most)", __version__, settings.host,
             port, settings.model, connections.max_connections)
    if settings.port_file:
        Path(settings.port_file).write_text(str(port), encoding="utf-8")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return app[WORKER].model_busy()


def serve(settings: Settings) -> int:
    tie_to_launcher()
    setup_logging("server")
    quiet_libraries()
    try:
        model_busy = asyncio.run(_serve(settings))
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 2
    if model_busy:
        # A model load (minutes for 57 GB) or a job step cannot be interrupted, and Python would wait for it at
        # exit, past the launcher's patience. Everything the server owes its clients is done: leave now.
        log.info("the model thread is still busy (loading, or finishing a step): not waiting for it")
        logging.shutdown()
        os._exit(0)
    return 0
