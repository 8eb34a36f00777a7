"""Connection limits (docs/reliability.md): a server under a 1024 open-files limit keeps answering /health with more
idle connections than it may hold files; header and idle timeouts; a cap that closes unauthenticated connections
first; WebSocket uploads under one cap over all connections; accept errors logged once per burst. The timeouts are
set short here through the server's settings."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import resource
import socket
import sys
import time
import pytest
from websockets.exceptions import ConnectionClosed

from backend.server.connections import FD_RESERVE
from server_process import LAYERBRIDGE, REPO, start_server, stop_server

from .wire import FAST, WS, image, request

SHORT = ("--header-timeout", "1", "--idle-timeout", "2")
CONNECTIONS = 1100


def hold_connections_script():
    spec = importlib.util.spec_from_file_location("hold_connections", REPO / "scripts" / "hold_connections.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nofile_server(tiny_model, tmp_path_factory):
    """A server under `prlimit --nofile=1024:1024`, as on many Linux desktops, with its default timeouts."""
    server = start_server(tiny_model, tmp_path_factory.mktemp("nofile"),
                          launcher=["prlimit", "--nofile=1024:1024", *LAYERBRIDGE])
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def small_server(tiny_model, tmp_path_factory):
    """A server that holds 8 connections and 8 MiB of uploads at most."""
    server = start_server(tiny_model, tmp_path_factory.mktemp("small"), *SHORT, "--max-connections", "8",
                          "--max-uploads-mb", "8")
    yield server
    stop_server(server)


def closed_after(sock: socket.socket, limit: float = 10) -> float:
    """Seconds until the server closes this connection (it is sent nothing more)."""
    started = time.monotonic()
    sock.settimeout(limit)
    while sock.recv(65536):
        pass
    return time.monotonic() - started


def is_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_more_idle_connections_than_open_files_leave_health_answering(nofile_server):
    hold = hold_connections_script()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CONNECTIONS + 256:
        pytest.skip(f"this test process may open {hard} files, fewer than the {CONNECTIONS} connections it holds")
    hold.raise_own_file_limit(CONNECTIONS + 256)
    cap = 1024 - FD_RESERVE
    figures = asyncio.run(hold.hold(nofile_server.port, CONNECTIONS, seconds=4.0, closed_at_least=CONNECTIONS - cap))
    assert figures.health_failed == 0 and figures.health_ok >= 10, figures.line()
    assert figures.health_slowest_s < 1.0, figures.line()
    assert figures.closed_by_server >= CONNECTIONS - cap, figures.line()  # closed to make room
    assert nofile_server.proc.poll() is None
    log = nofile_server.log()
    assert "Too many open files" not in log and "Traceback" not in log
    assert f"{cap} connections at most" in log
    assert log.count(f"connection limit ({cap}) is reached") <= 2  # once per burst, not per connection


def test_a_connection_without_a_whole_header_is_closed_after_the_header_timeout(small_server):
    with socket.create_connection(("127.0.0.1", small_server.port)) as silent, \
            socket.create_connection(("127.0.0.1", small_server.port)) as partial:
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert 0.9 < closed_after(partial) < 3
        assert closed_after(silent) < 3


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(small_server):
    with socket.create_connection(("127.0.0.1", small_server.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        assert 1.8 < closed_after(s) < 4  # the idle timeout (2 s), not the header timeout (1 s)


def test_a_websocket_must_show_the_token_within_the_header_timeout(small_server):
    anonymous = WS(small_server, token=None, hello=False)
    shown = WS(small_server, token=None, hello=False)
    shown.send({"type": "auth", "token": small_server.token})
    shown.send({"type": "hello", "protocol": 1})
    assert shown.recv(timeout=5)["type"] == "hello"
    try:
        with pytest.raises(ConnectionClosed):
            anonymous.recv(timeout=5)
        shown.send({"type": "ping", "ref": "still"})  # past the header timeout: an authenticated one stays
        assert shown.recv(timeout=5) == {"type": "pong", "ref": "still"}
    finally:
        anonymous.close()
        shown.close()


def test_at_the_cap_unauthenticated_connections_are_closed_first(small_server):
    sockets = [WS(small_server) for _ in range(3)]
    idle = [socket.create_connection(("127.0.0.1", small_server.port)) for _ in range(8)]
    try:
        assert request(small_server, "GET", "/health", token=False, timeout=5)[0] == 200
        for i, ws in enumerate(sockets):
            ws.send({"type": "ping", "ref": i})
            assert ws.recv(timeout=5) == {"type": "pong", "ref": i}
        time.sleep(0.2)
        assert sum(map(is_closed, idle)) == 4  # 11 connections and /health's for 8 places: idle ones made room
        sockets += [WS(small_server) for _ in range(5)]  # 8 authenticated: a new connection has no room
        with socket.create_connection(("127.0.0.1", small_server.port)) as late:
            assert closed_after(late, 2) < 1
    finally:
        for ws in sockets:
            ws.close()
        for s in idle:
            s.close()
    time.sleep(0.2)  # the closed WebSockets leave the server's count
    assert request(small_server, "GET", "/health", token=False, timeout=5)[0] == 200


def test_uploads_on_all_connections_share_one_cap(small_server):
    first, second = WS(small_server), WS(small_server)
    try:
        chunk = 4 * 1024 * 1024
        big = image(1024, 2048)  # 8 MiB: two chunks of it fill the server's 8 MiB
        first.send({"type": "submit", "ref": "a", "params": FAST,
                    "image": {"format": "rgba8", "width": 1024, "height": 2048, "bytes": big.nbytes, "transfer": 1}})
        data = big.tobytes()
        first.ws.send(b"LBPX" + (1).to_bytes(4, "little") + (0).to_bytes(4, "little") + data[:chunk])
        first.ws.send(b"LBPX" + (1).to_bytes(4, "little") + chunk.to_bytes(4, "little") + data[chunk:2 * chunk - 16])
        first.send({"type": "ping", "ref": "sync"})
        assert first.recv(timeout=10) == {"type": "pong", "ref": "sync"}
        second.submit(image(64, 64), ref="b")
        err = second.recv(timeout=10)
        assert err["code"] == "payload_too_large" and err["ref"] == "b" and "all connections" in err["message"]
        first.close()  # its upload's memory is given back
        time.sleep(0.2)
        second.submit(image(64, 64), ref="c", transfer=2)
        assert second.until("accepted", timeout=10)["ref"] == "c"
    finally:
        first.close()
        second.close()


def test_accept_errors_are_logged_once_per_burst(caplog, monkeypatch):
    from backend.server import connections
    from backend.server.connections import ConnectionGuard

    guard = ConnectionGuard(10, 1, 2)
    loop = asyncio.new_event_loop()
    others = []
    loop.set_exception_handler(lambda loop, context: others.append(context["message"]))
    try:
        guard.install_loop_handler(loop)
        caplog.set_level(logging.WARNING, "layerbridge.connections")
        for _ in range(500):
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
        loop.call_exception_handler({"message": "something else"})
        assert len(caplog.records) == 1 and "Too many open files" in caplog.records[0].getMessage()
        assert others == ["something else"]
        now = time.monotonic()
        monkeypatch.setattr(connections.time, "monotonic", lambda: now + connections.QUIET_S + 1)
        guard.sweep()
        assert len(caplog.records) == 2 and "500 times" in caplog.records[1].getMessage()
    finally:
        loop.close()
