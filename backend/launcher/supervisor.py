"""The server as a child process tied to the launcher's life, its state, and the launcher's desktop actions.

No tray code here: backend/launcher/tray.py draws the icon and menu on top of `Supervisor`, and the console mode
uses it directly. The child is `python -m backend serve ...`, which dies with its parent
(backend/core/lifetime.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.lifetime import LOG_TO_CONSOLE_ENV, PARENT_ENV
from ..core.settings import DEFAULT_PORT, config_dir, log_dir

log = logging.getLogger("layerbridge.launcher")

SETTINGS_FILE = "launcher.json"
STATE_FILE = "launcher-state.json"
LOCK_FILE = "launcher.lock"
SHOW_FILE = "launcher-show"
LOG_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
UNANSWERED_S = 20.0

# State kinds, in the order a start goes through them.
STOPPED = "stopped"
STARTING = "starting"
NOT_DOWNLOADED = "not_downloaded"
NOT_LOADED = "not_loaded"
DOWNLOADING = "downloading"
LOADING = "loading"
READY = "ready"
BUSY = "busy"
STOPPING = "stopping"
ERROR = "error"
RUNNING_KINDS = (STARTING, NOT_DOWNLOADED, NOT_LOADED, DOWNLOADING, LOADING, READY, BUSY)


@dataclass(frozen=True)
class State:
    kind: str
    percent: int | None = None
    queue: int = 0
    message: str = ""

    def words(self) -> str:
        if self.kind == DOWNLOADING:
            return f"Downloading the model ({self.percent}%)" if self.percent is not None else "Downloading the model"
        text = {
            STOPPED: "Server stopped",
            STARTING: "Starting the server",
            NOT_DOWNLOADED: "Model not downloaded",
            NOT_LOADED: "Idle (model loads on the first job)",
            LOADING: "Loading the model",
            READY: "Ready",
            BUSY: f"Busy ({self.queue} job{'s' if self.queue != 1 else ''})",
            STOPPING: "Stopping the server",
            ERROR: "Error",
        }[self.kind]
        return f"{text}: {self.message}" if self.message and self.kind in (ERROR, NOT_DOWNLOADED) else text

    @property
    def running(self) -> bool:
        return self.kind in RUNNING_KINDS


def state_from_status(status: dict[str, Any]) -> State:
    """Maps a GET /v1/status answer to a launcher state."""
    model = status.get("model") or {}
    q = status.get("queue") or {}
    # `length` counts the jobs waiting; the running one is not among them
    jobs = int(q.get("length") or 0) + (1 if q.get("running") else 0)
    mstate = model.get("state")
    if mstate == "failed":
        return State(ERROR, message=str(model.get("error") or "the model could not be loaded"))
    if jobs and mstate in ("ready", "loading", "not_loaded", "downloading"):
        return State(BUSY, queue=jobs)
    if mstate == "ready":
        return State(READY)
    if mstate == "loading":
        return State(LOADING)
    if mstate == "downloading":
        done, total = model.get("bytes_done"), model.get("bytes_total")
        percent = int(100 * done / total) if isinstance(done, (int, float)) and total else None
        return State(DOWNLOADING, percent=None if percent is None else max(0, min(100, percent)))
    if model.get("downloaded") is False:
        return State(NOT_DOWNLOADED)
    return State(NOT_LOADED)


# ---------------------------------------------------------------- settings and paths


@dataclass
class LaunchSettings:
    """What the launcher starts: `<config dir>/launcher.json`, then command-line flags on top."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model: str | None = None
    serve_args: list[str] = field(default_factory=list)
    load_model: bool = True
    start_timeout_s: float = 600.0
    # A server that crashes after it was up is started again after 2, 4, 8 … s (at most max_restarts times in a
    # row); one that never came up is not: its error (a taken port, a wrong model path) would only repeat.
    restart_on_crash: bool = True
    restart_backoff_s: float = 2.0
    restart_backoff_max_s: float = 60.0
    max_restarts: int = 5
    stable_after_s: float = 120.0

    @classmethod
    def load(cls, path: Path | None = None) -> "LaunchSettings":
        path = path or config_dir() / SETTINGS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            log.warning("ignoring %s: %s", path, e)
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def serve_argv(self, port_file: Path | None) -> list[str]:
        argv = ["serve", "--host", self.host, "--port", str(self.port)]
        if self.model:
            argv += ["--model", self.model]
        if port_file is not None:
            argv += ["--port-file", str(port_file)]
        return argv + list(self.serve_args)


def token_path() -> Path:
    return config_dir() / "token"


def read_token() -> str | None:
    try:
        return token_path().read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def setup_logging(directory: Path | None = None) -> Path:
    """Launcher log: `<log dir>/launcher.log`, rotated. Returns the log folder."""
    directory = directory or log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("layerbridge.launcher")
    if not any(getattr(h, "_layerbridge", False) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(
            directory / "launcher.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler._layerbridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return directory


def _server_logger(directory: Path) -> logging.Logger:
    """The server's output, rotated into `<directory>/server.log` (a logger of its own per supervisor, outside
    the logging tree, so that each writes where it was told)."""
    logger = logging.Logger("layerbridge.launcher.server", logging.INFO)  # noqa: LOG001 (outside the tree on purpose)
    handler = logging.handlers.RotatingFileHandler(
        directory / "server.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger


# ---------------------------------------------------------------- HTTP probes


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def http_json(url: str, token: str | None = None, method: str = "GET", timeout: float = 2.0) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on host:port (a bind test, as the server would do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def describe_port_owner(host: str, port: int) -> str:
    try:
        health = http_json(f"http://{_client_host(host)}:{port}/health", timeout=1.0)
    except Exception:
        health = None
    if isinstance(health, dict) and health.get("service") == "layerbridge":
        return (f"port {port} is used by a LayerBridge server this launcher did not start; "
                f"stop it or set another port in {config_dir() / SETTINGS_FILE}")
    return f"port {port} is already used by another program; set another port in {config_dir() / SETTINGS_FILE}"


# ---------------------------------------------------------------- child process tie


def _job_object_for(proc: subprocess.Popen) -> Any:
    """Windows: a job object that kills the server when the launcher's last handle to it closes."""
    import ctypes
    from ctypes import wintypes

    class IO_COUNTERS(ctypes.Structure):
        _fields_ = [(n, ctypes.c_ulonglong) for n in (
            "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
            "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]

    class BASIC(ctypes.Structure):
        _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                    ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                    ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                    ("SchedulingClass", wintypes.DWORD)]

    class EXTENDED(ctypes.Structure):
        _fields_ = [("BasicLimitInformation", BASIC), ("IoInfo", IO_COUNTERS),
                    ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    job = kernel32.CreateJobObjectW(None, None)
    if not job:
        raise ctypes.WinError(ctypes.get_last_error())
    info = EXTENDED()
    info.BasicLimitInformation.LimitFlags = 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    if not kernel32.SetInformationJobObject(job, 9, ctypes.byref(info), ctypes.sizeof(info)):  # ExtendedLimitInformation
        raise ctypes.WinError(ctypes.get_last_error())
    if not kernel32.AssignProcessToJobObject(job, wintypes.HANDLE(int(proc._handle))):  # type: ignore[attr-defined]
        raise ctypes.WinError(ctypes.get_last_error())
    return job


def proc_alive(pid: int) -> bool:
    """False for a process that is gone or a zombie (a reaped-later child still answers kill -0)."""
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- supervisor


def exit_words(code: int) -> str:
    """Why the server ended, in words, from its exit status (negative: the signal that ended it on POSIX)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the server was killed by {name}{hint}"
    return f"the server exited (code {code})"


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
        self._server_log = _server_logger(self.logs)

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
        return f"http://{_client_host(self.settings.host)}:{self._port}" if self._port else None

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
                self._job = _job_object_for(self._proc)
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


# ---------------------------------------------------------------- one instance at a time


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


# ---------------------------------------------------------------- desktop actions


def open_path(target: Path | str) -> None:
    """Opens a file or folder with the desktop's default application."""
    target = str(target)
    if os.name == "nt":
        os.startfile(target)  # type: ignore[attr-defined]
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    proc = subprocess.Popen([opener, target], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=proc.wait, daemon=True).start()


def copy_text(text: str) -> None:
    """Clipboard through the platform's command-line tool (the tray uses GTK's clipboard where it runs)."""
    if os.name == "nt":
        cmds = [["clip"]]
    elif sys.platform == "darwin":
        cmds = [["pbcopy"]]
    else:
        cmds = [["wl-copy"], ["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"]]
    for cmd in cmds:
        if shutil.which(cmd[0]):
            subprocess.run(cmd, input=text.encode("utf-8"), check=True, timeout=5)
            return
    raise RuntimeError("no clipboard tool found (install wl-clipboard, xclip or xsel)")


def pykrita_dir() -> Path:
    override = os.environ.get("LAYERBRIDGE_PYKRITA_DIR")
    if override:
        return Path(override)
    home = Path.home()
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "krita" / "pykrita"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "krita" / "pykrita"
    flatpak = home / ".var" / "app" / "org.kde.krita" / "data" / "krita"
    native = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "krita"
    return (flatpak if flatpak.is_dir() and not native.is_dir() else native) / "pykrita"


def kritarc_path() -> Path:
    override = os.environ.get("LAYERBRIDGE_KRITARC")
    if override:
        return Path(override)
    home = Path.home()
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local")) / "kritarc"
    if sys.platform == "darwin":
        return home / "Library" / "Preferences" / "kritarc"
    flatpak = home / ".var" / "app" / "org.kde.krita" / "config" / "kritarc"
    native = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kritarc"
    return flatpak if flatpak.is_file() and not native.is_file() else native


def enable_in_kritarc(path: Path, plugin: str) -> None:
    """Sets `enable_<plugin>=true` in the [python] group of a KConfig file. Every other byte stays as it was
    (other groups and keys, line endings, text in any encoding); a symlinked kritarc stays a symlink."""
    key = f"enable_{plugin}".encode()
    path = path.resolve()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    entry = key + b"=true"
    out: list[bytes] = []
    in_python = seen_group = done = False

    def add_to_group() -> None:
        # after the group's last line, before the blank lines that separate it from the next group
        at = len(out)
        while at and not out[at - 1].strip():
            at -= 1
        if at and not out[at - 1].endswith((b"\n", b"\r")):
            out[at - 1] += eol
        out.insert(at, entry + eol)

    for line in data.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(b"["):
            if in_python and not done:
                add_to_group()
                done = True
            in_python = stripped == b"[python]"
            seen_group = seen_group or in_python
        elif in_python and stripped.split(b"=", 1)[0].strip() == key:
            if not done:
                out.append(entry + line[len(line.rstrip(b"\r\n")):])
                done = True
            continue
        out.append(line)
    if in_python and not done:
        add_to_group()
    elif not seen_group:
        if out and not out[-1].endswith((b"\n", b"\r")):
            out[-1] += eol
        if out and out[-1].strip():
            out.append(eol)
        out += [b"[python]" + eol, entry + eol]
    new = b"".join(out)
    if new == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".layerbridge-tmp")
    tmp.write_bytes(new)
    if data:
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def install_krita_plugin(source: Path | None = None, target: Path | None = None,
                         kritarc: Path | None = None) -> Path:
    """Copies krita_plugin/layerbridge.desktop and krita_plugin/layerbridge/ into Krita's pykrita folder and
    enables the plugin in kritarc. Returns the pykrita folder."""
    source = source or repo_root() / "krita_plugin"
    target = target or pykrita_dir()
    desktop, package = source / "layerbridge.desktop", source / "layerbridge"
    if not desktop.is_file() or not package.is_dir():
        raise FileNotFoundError(f"the Krita plugin is not in {source}")
    target.mkdir(parents=True, exist_ok=True)
    staging = target / ".layerbridge-new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(package, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.rmtree(target / "layerbridge", ignore_errors=True)
    os.replace(staging, target / "layerbridge")
    shutil.copy2(desktop, target / "layerbridge.desktop")
    enable_in_kritarc(kritarc or kritarc_path(), "layerbridge")
    return target


# ---------------------------------------------------------------- start with the system


AUTOSTART_NAME = "layerbridge-tray"
# At log-in the panel that holds tray icons may come up well after the launcher: wait for it longer than a
# launch by hand does before falling back to the console (which nobody would see there).
AUTOSTART_TRAY_TIMEOUT_S = 120


def launcher_command() -> list[str]:
    """How the system starts the launcher: this Python, with the launcher's path, so that it works from any
    working directory."""
    exe = Path(sys.executable)
    if os.name == "nt" and (exe.parent / "pythonw.exe").exists():
        exe = exe.parent / "pythonw.exe"
    script = repo_root() / "scripts" / "tray.py"
    target = [str(script)] if script.is_file() else ["-m", "backend.launcher.tray"]
    return [str(exe), *target, "--tray-timeout", str(AUTOSTART_TRAY_TIMEOUT_S)]


def desktop_exec(argv: list[str]) -> str:
    """An Exec= value of a .desktop file (freedesktop Desktop Entry spec): arguments with reserved characters in
    double quotes, `"` `` ` `` `$` `\\` escaped inside them, `%` doubled, then the string-value escaping of `\\`."""
    reserved = set(" \t\n\"'\\><~|&;$*?#()`")
    words = []
    for arg in argv:
        arg = arg.replace("%", "%%")
        if not arg or any(c in reserved for c in arg):
            arg = '"' + "".join("\\" + c if c in '"`$\\' else c for c in arg) + '"'
        words.append(arg)
    return " ".join(words).replace("\\", "\\\\")


def _autostart_file() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "LaunchAgents" / "org.layerbridge.tray.plist"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "autostart" / f"{AUTOSTART_NAME}.desktop"


def autostart_enabled() -> bool:
    if os.name == "nt":
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, r"Software\Microsoft\Windows\CurrentVersion\Run") as k:
                winreg.QueryValueEx(k, "LayerBridge")
            return True
        except OSError:
            return False
    path = _autostart_file()
    if sys.platform == "darwin":
        return path.is_file()
    try:
        lines = {line.strip().replace(" ", "") for line in path.read_text(encoding="utf-8").splitlines()}
    except OSError:
        return False
    # a desktop's own "startup applications" settings switch an entry off with one of these
    return not lines & {"Hidden=true", "X-GNOME-Autostart-enabled=false"}


def set_autostart(enabled: bool) -> None:
    cmd = launcher_command()
    if os.name == "nt":
        import subprocess as sp
        import winreg

        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, r"Software\Microsoft\Windows\CurrentVersion\Run", 0,
                            winreg.KEY_SET_VALUE) as k:
            if enabled:
                winreg.SetValueEx(k, "LayerBridge", 0, winreg.REG_SZ, sp.list2cmdline(cmd))
            else:
                try:
                    winreg.DeleteValue(k, "LayerBridge")
                except FileNotFoundError:
                    pass
        return
    path = _autostart_file()
    if not enabled:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin":
        import plistlib

        path.write_bytes(plistlib.dumps({"Label": "org.layerbridge.tray", "ProgramArguments": cmd,
                                         "RunAtLoad": True, "WorkingDirectory": str(repo_root())}))
    else:
        workdir = str(repo_root()).replace("\\", "\\\\")
        path.write_text("[Desktop Entry]\nType=Application\nName=LayerBridge\n"
                        "Comment=LayerBridge server in the system tray\n"
                        f"Exec={desktop_exec(cmd)}\nPath={workdir}\nTerminal=false\n"
                        "X-GNOME-Autostart-enabled=true\n", encoding="utf-8")

