"""One launcher at a time: a lock the OS releases when the launcher dies, the state file a second launch reads, and
the request to show itself that a second launch leaves for the first."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..core.settings import config_dir
from .config import read_token
from .probes import http_json
from .state import State, state_from_status

log = logging.getLogger("layerbridge.launcher")

STATE_FILE = "launcher-state.json"
LOCK_FILE = "launcher.lock"
SHOW_FILE = "launcher-show"


class InstanceLock:
    """An exclusive lock on `<config dir>/launcher.lock`, released by the OS when the launcher dies."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or config_dir()
        self._fh: Any = None

    def acquire(self) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(self.directory / LOCK_FILE, "a+")
        try:
            if os.name == "nt":
                import msvcrt

                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def write_state(self, state: State, url: str | None, server_pid: int | None) -> None:
        data = {"pid": os.getpid(), "state": state.kind, "words": state.words(), "url": url,
                "server_pid": server_pid, "time": time.time()}
        path = self.directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.directory / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def request_show(self) -> None:
        """A second launch asks the running launcher to show its state (a double-click has no terminal to
        print it in)."""
        try:
            (self.directory / SHOW_FILE).touch()
        except OSError as e:
            log.debug("cannot ask the running launcher to show itself: %s", e)

    def take_show_request(self) -> bool:
        """True once for each request_show() since the last call."""
        try:
            (self.directory / SHOW_FILE).unlink()
        except OSError:
            return False
        return True


def running_instance_report(lock: InstanceLock) -> str:
    """What a second launch says about the first one."""
    data = lock.read_state() or {}
    words = data.get("words") or "state unknown"
    url = data.get("url")
    if url:
        try:
            status = http_json(f"{url}/v1/status", token=read_token())
            words = state_from_status(status).words()
        except Exception:
            pass
    where = f" at {url}" if url else ""
    return f"LayerBridge launcher already running (pid {data.get('pid', '?')}): {words}{where}"
