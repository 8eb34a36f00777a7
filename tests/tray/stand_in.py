"""A stand-in for `layerbridge serve` in the launcher's unit tests: /health, /v1/status, /v1/model/load.

Usage: stand_in.py serve --host H --port P [--port-file F] [--fail] [--load-s S] [--crash-after S]
                        [--ignore-term] [--grandchild-file F]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--model")
    p.add_argument("--fail", action="store_true")
    p.add_argument("--load-s", type=float, default=0.3)
    p.add_argument("--crash-after", type=float, help="exit with code 1 this many seconds after listening")
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (a server stuck in a long step)")
    p.add_argument("--grandchild-file", help="start a helper process of its own and write its pid here")
    args, _ = p.parse_known_args()
    print("stand-in starting", flush=True)
    if args.fail:
        print("error: cannot load the model (stand-in failure)", flush=True)
        return 3
    config = Path(os.environ["LAYERBRIDGE_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    token_file = config / "token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(16))
    token = token_file.read_text().strip()
    model = {"state": "not_loaded", "since": 0.0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:
            print(fmt % a, flush=True)

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self) -> dict:
            if model["state"] == "loading" and time.monotonic() - model["since"] > args.load_s:
                model["state"] = "ready"
            return {"type": "status", "model": {"id": "stand-in", "state": model["state"], "error": None},
                    "queue": {"length": 0, "running": None}}

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {token}":
                return True
            self._send(401, {"type": "error", "code": "unauthorized"})
            return False

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"status": "ok", "service": "layerbridge"})
            elif self.path == "/v1/status" and self._authorized():
                self._send(200, self._status())

        def do_POST(self) -> None:
            if self.path == "/v1/model/load" and self._authorized():
                if model["state"] == "not_loaded":
                    model.update(state="loading", since=time.monotonic())
                self._send(202, self._status())

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    if args.port_file:
        Path(args.port_file).write_text(str(server.server_address[1]))
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    if args.grandchild_file:
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        Path(args.grandchild_file).write_text(str(helper.pid))
    if args.crash_after is not None:
        def crash() -> None:
            time.sleep(args.crash_after)
            print("stand-in crashed", flush=True)
            os._exit(1)

        threading.Thread(target=crash, daemon=True).start()
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
    print("stand-in stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
