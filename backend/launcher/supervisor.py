"""The server as a child process tied to the launcher's life: started, watched, restarted after a crash, stopped.

No tray code here: backend/launcher/tray.py draws the icon and menu on top of `Supervisor`, and the console mode
(backend/launcher/console.py) uses it directly. The child is `python -m backend serve ...`, which dies with its
parent (backend/core/lifetime.py).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any, Callable

from ..core.lifetime import LOG_TO_CONSOLE_ENV, PARENT_ENV
from ..core.settings import config_dir, log_dir
from .config import LaunchSettings, read_token
from .logs import server_logger
from .probes import client_host, describe_port_owner, http_json, port_taken
from .process import exit_words, job_object_for
from .state import ERROR, NOT_DOWNLOADED, NOT_LOADED, STARTING, STOPPED, STOPPING, State, state_from_status

log = logging.getLogger("layerbridge.launcher")

# a busy server may answer its status late for a while (model loading); a longer silence is an error
UNANSWERED_S = 20.0


class Supervisor:
    """Owns the server process. All process work happens on one long-lived thread: on Linux the
    parent-death signal fires when the thread that started the child exits, not the process."""

    def __init__(self, settings: LaunchSettings, on_change: Callable[[State], None] | None = None,
                 program: list[str] | None = None, logs: Path | None = None,
                 health_interval_s: float = 0.25, status_interval_s: float = 1.0, stop_timeout_s: float = 15.0):
        self.settings = settings
        self.logs = logs or log_dir()
        self.logs.mkdir(parents=True, exist_ok=True)
        # what runs `serve ...`; tests put a stand-in here
        self._program = program or [sys.executable, "-m", "backend"]
        self._listeners: list[Callable[[State], None]] = [on_change] if on_change else []
        self._health_interval = health_interval_s
        self._status_interval = status_interval_s
        self._stop_timeout = stop_timeout_s
        self._commands: queue.Queue[str] = queue.Queue()
        self._state = State(STOPPED)
        self._state_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._job: Any = None
        self._port: int | None = None
        self._port_file: Path | None = None
        self._started_at = 0.0
        self._last_answer = 0.0
        self._healthy = False
        self._healthy_since: float | None = None
        self._loaded_asked = False
        self._tail: list[str] = []
        self._pump_thread: threading.Thread | None = None
        self._crashes = 0
        self._restart_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="server-supervisor", daemon=True)
        self._done = threading.Event()
        self._server_log = server_logger(self.logs)

    # -- public API (any thread)

    def add_listener(self, fn: Callable[[State], None]) -> None:
        self._listeners.append(fn)

    @property
    def state(self) -> State:
        with self._state_lock:
            return self._state

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def restart_pending(self) -> bool:
        """True between a crash and the automatic restart that follows it (Stop cancels it)."""
        return self._restart_at is not None

    @property
    def url(self) -> str | None:
        return f"http://{client_host(self.settings.host)}:{self._port}" if self._port else None

    def run(self) -> None:
        """Starts the supervisor thread (call from a thread that lives as long as the launcher)."""
        self._thread.start()

    def start(self) -> None:
        self._commands.put("start")

    def stop(self) -> None:
        self._commands.put("stop")

    def restart(self) -> None:
        self._commands.put("restart")

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stops the server and the supervisor thread; True when both are done in time."""
        self._commands.put("quit")
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_for(self, predicate: Callable[[State], bool], timeout: float) -> State:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s = self.state
            if predicate(s):
                return s
            time.sleep(0.05)
        raise TimeoutError(f"launcher state is {self.state.words()!r} after {timeout} s")

    # -- the supervisor thread

    def _set(self, state: State) -> None:
        with self._state_lock:
            if state == self._state:
                return
            self._state = state
        log.info("state: %s", state.words())
        for fn in list(self._listeners):
            try:
                fn(state)
            except Exception:
                log.exception("state listener failed")

    def _loop(self) -> None:
        try:
            while True:
                if self._proc is not None:
                    timeout: float | None = self._status_interval if self._healthy else self._health_interval
                elif self._restart_at is not None:
                    timeout = max(0.0, self._restart_at - time.monotonic())
                else:
                    timeout = None
                try:
                    cmd = self._commands.get(timeout=timeout)
                except queue.Empty:
                    cmd = None
                if cmd is not None:
                    self._restart_at = None  # what the user asks for replaces a pending automatic restart
                    self._crashes = 0
                if cmd == "start":
                    if self._proc is None:
                        self._spawn()
                elif cmd == "stop":
                    self._terminate()
                    self._set(State(STOPPED))
                elif cmd == "restart":
                    self._terminate()
                    self._spawn()
                elif cmd == "quit":
                    self._terminate()
                    self._set(State(STOPPED))
                    for handler in self._server_log.handlers:
                        handler.close()
                    return
                elif self._proc is None and self._restart_at is not None and time.monotonic() >= self._restart_at:
                    self._restart_at = None
                    log.info("restarting the server after a crash (attempt %s of %s)",
                             self._crashes, self.settings.max_restarts)
                    self._spawn()
                if self._proc is not None:
                    self._poll()
        except Exception as e:  # a bug here must not leave the server running unsupervised
            log.exception("supervisor failed")
            self._terminate()
            self._set(State(ERROR, message=f"launcher error: {e}"))
        finally:
            self._done.set()

    def _spawn(self) -> None:
        s = self.settings
        self._healthy = False
        self._healthy_since = None
        self._loaded_asked = False
        self._tail = []
        if s.port and port_taken(s.host, s.port):
            self._set(State(ERROR, message=describe_port_owner(s.host, s.port)))
            return
        self._port = s.port or None
        self._port_file = None
        if not s.port:
            runtime = config_dir()
            runtime.mkdir(parents=True, exist_ok=True)
            self._port_file = runtime / f"launcher-port-{os.getpid()}"
            self._port_file.unlink(missing_ok=True)
        command = [*self._program, *s.serve_argv(self._port_file)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_ENV: str(os.getpid()), LOG_TO_CONSOLE_ENV: "1"})
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = 0x08000000  # CREATE_NO_WINDOW
        else:
            # A group of its own: Ctrl+C in the launcher's terminal reaches the launcher only (which then stops
            # the server in order), and a stop can end whatever the server started too.
            kwargs["start_new_session"] = True
        self._set(State(STARTING))
        self._server_log.info("---- %s starting: %s", time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(command))
        log.info("starting server: %s", " ".join(command))
        try:
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, env=env, **kwargs)
        except OSError as e:
            self._proc = None
            self._set(State(ERROR, message=f"cannot start the server: {e}"))
            return
        if os.name == "nt":
            try:
                self._job = job_object_for(self._proc)
            except Exception:
                log.exception("could not tie the server to a job object")
        self._started_at = time.monotonic()
        self._pump_thread = threading.Thread(target=self._pump, args=(self._proc,), name="server-log", daemon=True)
        self._pump_thread.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self._server_log.info("%s", line)
                self._tail = (self._tail + [line])[-20:]

    def _poll(self) -> None:
        proc = self._proc
        assert proc is not None
        code = proc.poll()
        if code is not None:
            was_up = self._healthy_since is not None
            self._reap()  # after this the tail holds the server's last lines, which usually say why
            last = next((t for t in reversed(self._tail) if t.strip()), "")
            why = exit_words(code) + (f": {last}" if last else "")
            s = self.settings
            if was_up and s.restart_on_crash and self._crashes < s.max_restarts:
                delay = min(s.restart_backoff_s * 2 ** self._crashes, s.restart_backoff_max_s)
                self._crashes += 1
                self._restart_at = time.monotonic() + delay
                log.warning("%s; restarting in %g s", why, delay)
                self._set(State(ERROR, message=f"{why}; restarting in {delay:g} s; see {self.logs / 'server.log'}"))
            else:
                self._set(State(ERROR, message=f"{why}; see {self.logs / 'server.log'}"))
            return
        if self._healthy_since is not None and time.monotonic() - self._healthy_since > self.settings.stable_after_s:
            self._crashes = 0
        if self._port is None:
            try:
                self._port = int(self._port_file.read_text().strip())  # type: ignore[union-attr]
            except (OSError, ValueError):
                return self._check_start_timeout()
        base = self.url
        if not self._healthy:
            try:
                health = http_json(f"{base}/health", timeout=1.0)
            except Exception:
                return self._check_start_timeout()
            if not (isinstance(health, dict) and health.get("status") == "ok"):
                return self._check_start_timeout()
            self._healthy = True
            self._healthy_since = self._last_answer = time.monotonic()
            log.info("server healthy at %s (pid %s)", base, proc.pid)
        token = read_token()
        try:
            status = http_json(f"{base}/v1/status", token=token, timeout=5.0)
        except Exception as e:
            # a busy server may answer late for a while (model loading); only a lasting silence is an error
            if time.monotonic() - self._last_answer > UNANSWERED_S:
                why = f"status answered HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else f"server not answering: {e}"
                self._set(State(ERROR, message=why))
            return
        self._last_answer = time.monotonic()
        state = state_from_status(status)
        if self.settings.load_model and not self._loaded_asked and state.kind in (NOT_LOADED, NOT_DOWNLOADED):
            self._loaded_asked = True
            try:
                state = state_from_status(http_json(f"{base}/v1/model/load", token=token, method="POST"))
            except Exception as e:
                log.warning("could not ask the server to load the model: %s", e)
        self._set(state)

    def _check_start_timeout(self) -> None:
        if time.monotonic() - self._started_at > self.settings.start_timeout_s:
            self._terminate()
            self._set(State(ERROR, message=f"the server did not answer within {self.settings.start_timeout_s:.0f} s"))

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._set(State(STOPPING))
            log.info("stopping server (pid %s)", proc.pid)
            proc.terminate()  # the server cancels its jobs and closes its clients' connections (1001)
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("server did not stop in %s s; killing it", self._stop_timeout)
                proc.kill()
                proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            if os.name != "nt":
                try:  # anything the server started and left behind (its group outlives it only that way)
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            pump, self._pump_thread = self._pump_thread, None
            if pump is not None:
                pump.join(2.0)
            # Closing the pipe while the pump still reads it would block on the reader's lock (something outside
            # the group holds the pipe open); the pump closes it at its end of file then.
            if proc.stdout and not (pump is not None and pump.is_alive()):
                proc.stdout.close()
        self._proc = None
        self._healthy = False
        if self._job is not None:
            import ctypes

            ctypes.windll.kernel32.CloseHandle(self._job)  # type: ignore[attr-defined]
            self._job = None
        if self._port_file is not None:
            self._port_file.unlink(missing_ok=True)
            self._port = None
