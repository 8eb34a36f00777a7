"""Connection limits (docs/reliability.md): header and idle timeouts, a cap on open connections that closes the
unauthenticated ones first, accept errors logged once per burst, and parse errors answered in JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..core.errors import ErrorCode, LayerBridgeError

try:
    import resource
except ImportError:  # Windows: no open-files limit to read
    resource = None  # type: ignore[assignment]

log = logging.getLogger("layerbridge.connections")

# Open files kept for everything but counted connections: asyncio accepts up to BACKLOG connections each turn of the
# loop and counts them a turn or two later (so up to three batches are uncounted), and the model's files, logs, the loop.
FD_RESERVE = 384
QUIET_S = 5.0  # a burst of refused connections ends after this long without one
# asyncio accepts up to this many connections at a time before any is counted here: they need files too.
BACKLOG = 128


class BurstLog:
    """One warning when something starts happening again and again, one line with the count when it stops."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.first = self.last = 0.0

    def event(self, detail: str) -> None:
        now = time.monotonic()
        if self.count == 0:
            self.first = now
            log.warning("%s: %s (logged once until it stops)", self.what, detail)
        self.count += 1
        self.last = now

    def settle(self) -> None:
        if self.count and time.monotonic() - self.last > QUIET_S:
            log.warning("%s: %d times over %.1f s", self.what, self.count, self.last - self.first)
            self.count = 0


@dataclass(eq=False)
class Tracked:
    """What the guard knows of one connection."""

    transport: asyncio.Transport
    opened: float = field(default_factory=time.monotonic)
    waiting_since: float = field(default_factory=time.monotonic)  # since the last response, or the start
    got_bytes: bool = False  # bytes arrived since waiting_since: a request header is on its way
    requests: int = 0  # requests handled on it
    busy: int = 0  # requests in progress (a WebSocket counts as one for its lifetime)
    authenticated: bool = False


class JsonErrorHandler(RequestHandler):
    """aiohttp's own answer to a request it cannot parse (no Host, two Hosts, a broken request line) as this
    protocol's JSON error, logged in one line instead of a traceback."""

    __slots__ = ()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        text = " ".join((message or getattr(exc, "message", "") or "bad request").split())
        log.info("refused a request that could not be parsed: %s", text)
        body = LayerBridgeError(ErrorCode.bad_request, f"malformed HTTP request: {text}").to_json()
        response = web.Response(status=400, text=json.dumps(body), content_type="application/json",
                                headers={"Server": SERVER_NAME})
        response.force_close()
        return response


SERVER_NAME = "LayerBridge"


class _Protocol(asyncio.Protocol):
    """Forwards everything to aiohttp's handler and tells the guard what it sees."""

    def __init__(self, guard: "ConnectionGuard", inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.tracked: Tracked | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tracked = self.guard.opened(transport)  # type: ignore[arg-type]
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.tracked is not None:
            self.tracked.got_bytes = True
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tracked is not None:
            self.guard.closed(self.tracked)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    """Every open connection to the server, with its timeouts and the cap on how many may be open.

    Args:
        max_connections: open connections at most; a new one past it closes the longest idle unauthenticated one
            (or, where every one has shown the token, is itself closed).
        header_timeout_s: a connection that has not sent a whole request header this long after it opened or after
            its last response is closed, as is a request or WebSocket that has not shown the token in this time.
        idle_timeout_s: a connection with no request this long after its last response is closed.
    """

    def __init__(self, max_connections: int, header_timeout_s: float, idle_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.connections: dict[asyncio.Transport, Tracked] = {}
        self.timed_out = 0
        self.evicted = 0
        self.refused = 0
        self.at_cap = BurstLog("")
        self.set_cap(max_connections)
        self.accept_errors = BurstLog("cannot accept connections")
        self._sweeper: asyncio.Task | None = None

    def set_cap(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.at_cap.what = f"the connection limit ({max_connections}) is reached; unauthenticated connections are closed first"

    # ---- aiohttp's side ------------------------------------------------------------------------------------

    def protocol_factory(self, server: Callable[[], RequestHandler]) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            inner = server()
            inner.__class__ = JsonErrorHandler  # the same object layout; only handle_error differs
            return _Protocol(self, inner)

        return make

    def opened(self, transport: asyncio.Transport) -> Tracked:
        tracked = Tracked(transport)
        self.connections[transport] = tracked
        if len(self.connections) > self.max_connections:
            self._make_room(tracked)
        return tracked

    def closed(self, tracked: Tracked) -> None:
        self.connections.pop(tracked.transport, None)

    def _make_room(self, new: Tracked) -> None:
        others = [t for t in self.connections.values() if t is not new and not t.authenticated]
        if others:
            victim = min(others, key=lambda t: (t.busy > 0, t.got_bytes, t.waiting_since))
            self.evicted += 1
            self.at_cap.event("closed the longest idle unauthenticated connection")
        else:
            victim = new
            self.refused += 1
            self.at_cap.event("every connection has shown the token: a new one is closed")
        self._close(victim)

    def _close(self, tracked: Tracked) -> None:
        self.connections.pop(tracked.transport, None)
        tracked.transport.abort()  # frees its file at once; an unfinished request has nothing to be told

    # ---- the routes' side ----------------------------------------------------------------------------------

    def lookup(self, request: web.BaseRequest) -> Tracked | None:
        return self.connections.get(request.transport)  # type: ignore[arg-type]

    def request_started(self, request: web.BaseRequest) -> None:
        tracked = self.lookup(request)
        if tracked is not None:
            tracked.busy += 1
            tracked.waiting_since = time.monotonic()

    def request_finished(self, request: web.BaseRequest) -> None:
        tracked = self.lookup(request)
        if tracked is not None:
            tracked.busy = max(0, tracked.busy - 1)
            tracked.requests += 1
            tracked.got_bytes = False
            tracked.waiting_since = time.monotonic()

    def authenticated(self, request: web.BaseRequest) -> None:
        tracked = self.lookup(request)
        if tracked is not None:
            tracked.authenticated = True

    # ---- timeouts ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep_forever(self) -> None:
        interval = min(1.0, max(0.05, min(self.header_timeout_s, self.idle_timeout_s) / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> None:
        now = time.monotonic()
        for tracked in list(self.connections.values()):
            if tracked.busy:
                # a request (or WebSocket) in progress: only one that has not shown the token is limited
                expired = not tracked.authenticated and now - tracked.waiting_since > self.header_timeout_s
            elif tracked.requests == 0 or tracked.got_bytes:
                expired = now - tracked.waiting_since > self.header_timeout_s
            else:
                expired = now - tracked.waiting_since > self.idle_timeout_s
            if expired:
                self.timed_out += 1
                self._close(tracked)
        self.at_cap.settle()
        self.accept_errors.settle()

    # ---- the event loop's errors ---------------------------------------------------------------------------

    def install_loop_handler(self, loop: asyncio.AbstractEventLoop) -> None:
        """asyncio logs a traceback for every accept() that fails (out of files): once per burst here."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if "accept" in str(context.get("message", "")) and isinstance(exc, OSError):
                self.accept_errors.event(f"{exc.strerror or exc} ({len(self.connections)} connections open)")
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)


def connection_cap(wanted: int) -> int:
    """The connections this process can hold: `wanted`, less where the open-files limit (raised to its hard limit
    where that is needed and allowed) leaves fewer than FD_RESERVE files for everything else."""
    if resource is None:
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass the guard."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 backlog: int = BACKLOG) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )
