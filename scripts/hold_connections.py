"""Hold many idle TCP connections to a LayerBridge server started under a 1024 open-files limit, and measure whether
/health keeps answering (docs/reliability.md).

The server runs as `prlimit --nofile=1024:1024 python -m backend serve …`; this process opens more connections than
the server may hold files and sends nothing on them (with --reopen, it opens a new one for each the server closes),
while another process asks for /health on a fresh connection every 0.1 s. It prints the figures: connections held,
closed by the server, /health answers and their slowest time, and what the server logged.

    .venv/bin/python scripts/hold_connections.py --model /path/to/tiny-model              # 1,100 for 100 s
    .venv/bin/python scripts/hold_connections.py --model M --connections 2000 --seconds 30 --reopen
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from server_process import LAYERBRIDGE, start_server, stop_server  # noqa: E402

NOFILE = 1024


@dataclass
class Figures:
    opened: int = 0  # connections this process opened
    closed_by_server: int = 0
    refused: int = 0  # connection attempts that failed
    held_min: int = 0  # the fewest connections held open at once after the first wave
    held_max: int = 0
    health_ok: int = 0
    health_failed: int = 0
    health_slowest_s: float = 0.0
    health_times: list[float] = field(default_factory=list)
    health_failures: list[str] = field(default_factory=list)  # when (s into the run) and why

    def line(self) -> str:
        return (f"opened {self.opened}, held {self.held_min}–{self.held_max} at once, closed by the server "
                f"{self.closed_by_server}, refused {self.refused}; /health {self.health_ok} answered, "
                f"{self.health_failed} failed, slowest {self.health_slowest_s * 1000:.0f} ms")


def _health(port: int, timeout: float) -> float | str:
    """Seconds one GET /health took on a fresh connection, or why it got no 200 within `timeout`."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(256)
    except OSError as exc:  # a timeout too
        return f"{type(exc).__name__} after {time.monotonic() - started:.2f} s"
    took = time.monotonic() - started
    if took > timeout:
        return f"answered after {took:.2f} s"
    return took if head.startswith(b"HTTP/1.1 200") else f"answered {head[:40]!r}"


async def hold(port: int, connections: int, seconds: float, health_timeout: float = 1.0, reopen: bool = False,
               closed_at_least: int = 0, grace: float = 4.0) -> Figures:
    """Open `connections` idle TCP connections to the server and keep them for `seconds` (with `reopen`, each one the
    server closes is opened again at once) while asking for /health every 0.1 s from another process.

    With `closed_at_least`, they are kept up to `grace` seconds longer until the server has closed that many: on a
    busy machine the server accepts the last of a burst late, and closes them to make room only then."""
    figures = Figures()
    open_now = 0
    stop = float("inf")  # set once /health has been measured (and `closed_at_least` seen or `grace` spent)

    async def one() -> None:
        nonlocal open_now
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                figures.refused += 1
                await asyncio.sleep(0.05)
                continue
            figures.opened += 1
            open_now += 1
            try:
                while time.monotonic() < stop:
                    try:
                        await asyncio.wait_for(reader.read(1), min(1.0, max(0.01, stop - time.monotonic())))
                        break
                    except asyncio.TimeoutError:
                        continue
                else:
                    raise asyncio.TimeoutError
                figures.closed_by_server += 1  # the server closed it (nothing was asked, so nothing is answered)
            except asyncio.TimeoutError:
                pass
            except OSError:
                figures.closed_by_server += 1
            finally:
                open_now -= 1
                writer.close()
            if not reopen:
                return

    holders = []
    for _ in range(connections):
        holders.append(asyncio.create_task(one()))
        await asyncio.sleep(0)
    settle = time.monotonic() + 5
    while figures.opened < connections and time.monotonic() < settle:  # every one connected once before measuring
        await asyncio.sleep(0.05)
    figures.held_min = figures.held_max = open_now
    # /health is asked from a process of its own: the time measured is the server's, not that of this busy loop
    prober = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "probe", str(port), str(seconds - health_timeout), str(health_timeout),
        stdout=asyncio.subprocess.PIPE,
    )
    probed = asyncio.ensure_future(prober.communicate())
    while not probed.done():
        figures.held_min, figures.held_max = min(figures.held_min, open_now), max(figures.held_max, open_now)
        await asyncio.sleep(0.1)
    late = time.monotonic() + grace
    while figures.closed_by_server < closed_at_least and time.monotonic() < late:
        await asyncio.sleep(0.05)
    stop = time.monotonic()
    for took in json.loads((await probed)[0]):
        if isinstance(took, str):
            figures.health_failed += 1
            figures.health_failures.append(took)
        else:
            figures.health_ok += 1
            figures.health_times.append(took)
            figures.health_slowest_s = max(figures.health_slowest_s, took)
    await asyncio.gather(*holders)
    return figures


def probe(port: int, seconds: float, timeout: float) -> list[float | str]:
    """GET /health every 0.1 s for `seconds`: each answer's time, or when and why there was none."""
    results: list[float | str] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        took = _health(port, timeout)
        results.append(took if isinstance(took, float) else f"{time.monotonic() - started:.1f} s: {took}")
        time.sleep(0.1)
    return results


def raise_own_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def main() -> int:
    if sys.argv[1:2] == ["probe"]:
        print(json.dumps(probe(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model folder (the tiny model will do: no job is run)")
    p.add_argument("--connections", type=int, default=1100)
    p.add_argument("--seconds", type=float, default=100.0)
    p.add_argument("--reopen", action="store_true", help="open again at once each connection the server closes")
    p.add_argument("extra", nargs="*", help="more `serve` options, after --")
    a = p.parse_args()
    raise_own_file_limit(a.connections + 256)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(a.model), Path(tmp), *a.extra,
                              launcher=["prlimit", f"--nofile={NOFILE}:{NOFILE}", *LAYERBRIDGE])
        try:
            figures = asyncio.run(hold(server.port, a.connections, a.seconds, reopen=a.reopen))
            alive = server.proc.poll() is None
        finally:
            stop_server(server)
        log = server.log()
    print(f"{a.connections} idle connections{' (each reopened when closed)' if a.reopen else ''} for {a.seconds:.0f} s "
          f"against a server under --nofile={NOFILE}:{NOFILE}")
    print(figures.line())
    for failure in figures.health_failures:
        print(f"  /health failed at {failure}")
    print(f"server still running: {alive}; its log: {len(log.splitlines())} lines, {len(log.encode())} bytes, "
          f"{log.count('Too many open files')} 'Too many open files', {log.count('Traceback')} tracebacks")
    if len(log.splitlines()) <= 20:
        print(log, end="")
    return 0 if alive and figures.health_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
