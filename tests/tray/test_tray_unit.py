"""Launcher logic without a display: state mapping, icon, menu model, Krita install, autostart, lock, the
server's lifecycle (with a stand-in server) and the parent-death tie."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend import launcher as L
from backend.launcher import (BUSY, DOWNLOADING, ERROR, LOADING, NOT_DOWNLOADED, NOT_LOADED, READY, STARTING,
                              STOPPED, InstanceLock, LaunchSettings, State, Supervisor, state_from_status)
from backend.tray import App, build_menu, draw_icon

HERE = Path(__file__).resolve().parent
STAND_IN = [sys.executable, str(HERE / "stand_in.py")]


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name, sub in (("LAYERBRIDGE_CONFIG_DIR", "config"), ("LAYERBRIDGE_LOG_DIR", "logs"),
                      ("LAYERBRIDGE_PYKRITA_DIR", "pykrita"), ("XDG_CONFIG_HOME", "xdg")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("LAYERBRIDGE_KRITARC", str(tmp_path / "kritarc"))
    return tmp_path


@pytest.fixture(scope="module")
def pystray():
    os.environ["PYSTRAY_BACKEND"] = "dummy"
    try:
        import pystray
    finally:
        del os.environ["PYSTRAY_BACKEND"]
    return pystray


def status(state: str, **model) -> dict:
    return {"model": {"state": state, **model}, "queue": {"length": 0, "running": None}}


def test_state_from_status():
    assert state_from_status(status("ready")) == State(READY)
    assert state_from_status(status("loading")) == State(LOADING)
    assert state_from_status(status("not_loaded")) == State(NOT_LOADED)
    assert state_from_status(status("not_loaded", downloaded=False)) == State(NOT_DOWNLOADED)
    assert state_from_status(status("downloading", bytes_done=1, bytes_total=4)) == State(DOWNLOADING, percent=25)
    assert state_from_status(status("downloading", bytes_done=0, bytes_total=None)).percent is None
    failed = state_from_status(status("failed", error="no disk space"))
    assert failed.kind == ERROR and "no disk space" in failed.words()
    busy = {"model": {"state": "ready"}, "queue": {"length": 3, "running": "j_1"}}
    assert state_from_status(busy) == State(BUSY, queue=3)
    assert state_from_status({"model": {"state": "ready"}, "queue": {"length": 0, "running": "j_1"}}).queue == 1


def test_state_words():
    assert State(DOWNLOADING, percent=42).words() == "Downloading the model (42%)"
    assert State(BUSY, queue=1).words() == "Busy (1 job)"
    assert State(BUSY, queue=2).words() == "Busy (2 jobs)"
    assert State(ERROR, message="port 7860 is used").words() == "Error: port 7860 is used"
    assert State(READY).running and State(STARTING).running and not State(STOPPED).running


def test_icon_differs_by_state():
    seen = set()
    for st in (State(STOPPED), State(STARTING), State(NOT_DOWNLOADED), State(DOWNLOADING, percent=10),
               State(DOWNLOADING, percent=90), State(LOADING), State(READY), State(BUSY, queue=2),
               State(BUSY, queue=5), State(ERROR)):
        img = draw_icon(st)
        assert img.size == (64, 64) and img.mode == "RGBA"
        seen.add(img.tobytes())
        assert draw_icon(st, 22).size == (22, 22)
    assert len(seen) == 10


class FakeSupervisor:
    """Stands in for Supervisor in the menu tests: a state and a log of calls."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.state = State(READY)
        self.pid: int | None = 1234
        self.url = "http://127.0.0.1:7860"
        self.calls: list[str] = []
        self._listeners: list = []

    def add_listener(self, fn):
        self._listeners.append(fn)

    def start(self):
        self.calls.append("start")

    def stop(self):
        self.calls.append("stop")

    def restart(self):
        self.calls.append("restart")

    def shutdown(self, timeout=30.0):
        self.calls.append("shutdown")
        return True


def items_by_text(menu) -> dict:
    return {str(i.text): i for i in menu.items if i is not menu.SEPARATOR}


def fake_plugin(root: Path) -> Path:
    src = root / "krita_plugin"
    (src / "layerbridge").mkdir(parents=True)
    (src / "layerbridge.desktop").write_text("[Desktop Entry]\nX-KDE-Library=layerbridge\n")
    (src / "layerbridge" / "__init__.py").write_text("# plugin\n")
    (src / "layerbridge" / "docker.py").write_text("# docker\n")
    return src


def test_menu_model(env, pystray, monkeypatch):
    sup = FakeSupervisor(env / "logs")
    app = App(sup)  # type: ignore[arg-type]
    opened, copied, quit_called = [], [], []
    app.opener, app.copy, app.on_quit = opened.append, copied.append, lambda: quit_called.append(1)
    menu = build_menu(pystray, app)
    items = items_by_text(menu)
    assert list(items) == ["LayerBridge: Ready at http://127.0.0.1:7860", "Start server", "Stop server",
                           "Restart server", "Open logs", "Copy access token", "Install Krita plugin",
                           "Open the README", "Start with the system", "Quit"]
    title = next(iter(items.values()))
    assert not title.enabled
    assert not items["Start server"].enabled and items["Stop server"].enabled
    assert not items["Copy access token"].enabled  # no token file yet

    sup.state, sup.pid = State(STOPPED), None
    items = items_by_text(menu)
    assert "LayerBridge: Server stopped" in items
    assert items["Start server"].enabled and not items["Stop server"].enabled
    items["Start server"](None)
    sup.state = State(ERROR, message="port 7860 is already used by another program")
    items = items_by_text(menu)
    assert "LayerBridge: Error: port 7860 is already used by another program" in items
    assert items["Restart server"].enabled
    items["Restart server"](None)
    sup.pid = 99
    items_by_text(menu)["Stop server"](None)
    assert sup.calls == ["start", "restart", "stop"]

    items["Open logs"](None)
    assert opened == [env / "logs"]
    items["Open the README"](None)
    assert opened[-1] == L.repo_root() / "README.md"

    (env / "config").mkdir()
    (env / "config" / "token").write_text("secret-token\n")
    items = items_by_text(menu)
    assert items["Copy access token"].enabled
    items["Copy access token"](None)
    assert copied == ["secret-token"]

    start = items["Start with the system"]
    assert start.checked is False
    start(None)
    assert items_by_text(menu)["Start with the system"].checked is True
    desktop = env / "xdg" / "autostart" / "layerbridge-tray.desktop"
    assert "-m backend.tray" in desktop.read_text()
    items_by_text(menu)["Start with the system"](None)
    assert not desktop.exists() and items_by_text(menu)["Start with the system"].checked is False

    src = fake_plugin(env)
    monkeypatch.setattr(L, "repo_root", lambda: env)
    items["Install Krita plugin"](None)
    assert (env / "pykrita" / "layerbridge.desktop").is_file()
    assert (env / "pykrita" / "layerbridge" / "docker.py").read_text() == "# docker\n"
    assert "[python]\nenable_layerbridge=true" in (env / "kritarc").read_text()
    assert src.is_dir()

    items["Quit"](None)
    deadline = time.monotonic() + 5
    while not quit_called and time.monotonic() < deadline:
        time.sleep(0.01)
    assert quit_called and sup.calls[-1] == "shutdown"
    assert not items_by_text(menu)["Start server"].enabled


def test_install_krita_plugin_missing_source(env, monkeypatch):
    monkeypatch.setattr(L, "repo_root", lambda: env)
    with pytest.raises(FileNotFoundError):
        L.install_krita_plugin()


@pytest.mark.parametrize("before, after", [
    ("", "[python]\nenable_layerbridge=true\n"),
    ("[General]\na=1\n", "[General]\na=1\n\n[python]\nenable_layerbridge=true\n"),
    ("[python]\nenable_scripter=true\n[Other]\nb=2\n",
     "[python]\nenable_scripter=true\nenable_layerbridge=true\n[Other]\nb=2\n"),
    ("[python]\nenable_layerbridge=false\nenable_scripter=true\n",
     "[python]\nenable_layerbridge=true\nenable_scripter=true\n"),
    ("[A]\nx=1\n[python]\nenable_x=false\n", "[A]\nx=1\n[python]\nenable_x=false\nenable_layerbridge=true\n"),
])
def test_enable_in_kritarc(tmp_path, before, after):
    rc = tmp_path / "kritarc"
    if before:
        rc.write_text(before)
    L.enable_in_kritarc(rc, "layerbridge")
    assert rc.read_text() == after
    L.enable_in_kritarc(rc, "layerbridge")
    assert rc.read_text() == after


def test_instance_lock(env):
    first, second = InstanceLock(), InstanceLock()
    assert first.acquire()
    assert not second.acquire()
    first.write_state(State(READY), "http://127.0.0.1:1", 42)
    report = L.running_instance_report(second)
    assert f"pid {os.getpid()}" in report and "Ready" in report and "http://127.0.0.1:1" in report
    first.release()
    assert second.acquire()
    second.release()


def make_supervisor(env: Path, *extra: str, seen: list | None = None, **kw) -> Supervisor:
    s = LaunchSettings(port=kw.pop("port", 0), start_timeout_s=kw.pop("start_timeout_s", 30),
                       serve_args=list(extra), **kw)
    on_change = seen.append if seen is not None else None
    return Supervisor(s, on_change=on_change, program=STAND_IN, logs=env / "logs", stop_timeout_s=5)


def test_supervisor_lifecycle(env):
    seen: list[State] = []
    sup = make_supervisor(env, seen=seen)
    sup.run()
    try:
        sup.start()
        sup.wait_for(lambda s: s.kind == READY, 20)
        kinds = [s.kind for s in seen]
        assert kinds[0] == STARTING and kinds[-1] == READY
        assert LOADING in kinds  # the launcher asked the model to load
        pid = sup.pid
        assert pid and L.proc_alive(pid)
        assert sup.url and L.http_json(f"{sup.url}/health")["status"] == "ok"

        sup.stop()
        sup.wait_for(lambda s: s.kind == STOPPED, 10)
        assert sup.pid is None and not L.proc_alive(pid)

        sup.restart()
        sup.wait_for(lambda s: s.kind == READY, 20)
        second = sup.pid
        assert second and second != pid
        sup.restart()
        sup.wait_for(lambda s: s.kind == READY and sup.pid not in (None, second), 20)
        assert not L.proc_alive(second)
        last = sup.pid
    finally:
        assert sup.shutdown(20)
    assert sup.state.kind == STOPPED and last and not L.proc_alive(last)
    log = (env / "logs" / "server.log").read_text()
    assert "stand-in starting" in log and "GET /health" in log


def test_supervisor_reports_a_crash(env):
    sup = make_supervisor(env, "--fail")
    sup.run()
    try:
        sup.start()
        st = sup.wait_for(lambda s: s.kind == ERROR, 20)
        assert "exited (code 3)" in st.message and "cannot load the model" in st.message
        assert sup.pid is None
    finally:
        assert sup.shutdown(20)


def test_supervisor_reports_a_taken_port(env):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        sup = make_supervisor(env, port=port)
        sup.run()
        try:
            sup.start()
            st = sup.wait_for(lambda s: s.kind == ERROR, 10)
            assert f"port {port} is already used by another program" in st.message
            assert sup.pid is None
        finally:
            assert sup.shutdown(10)


def test_supervisor_gives_up_on_a_silent_server(env):
    sup = make_supervisor(env, start_timeout_s=0.5)
    sup._program = [sys.executable, "-c", "import time; time.sleep(60)"]
    sup.run()
    try:
        sup.start()
        st = sup.wait_for(lambda s: s.kind == ERROR, 15)
        assert "did not answer within" in st.message and sup.pid is None
    finally:
        assert sup.shutdown(10)


GRANDCHILD = """
import os, sys, time
from backend.launcher import _die_with_parent
_die_with_parent(int(sys.argv[1]))
print(os.getpid(), flush=True)
time.sleep(60)
"""

PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_child_dies_with_its_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, GRANDCHILD], stdout=subprocess.PIPE, text=True,
                              cwd=L.repo_root())
    try:
        child = int(parent.stdout.readline())
        assert L.proc_alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while L.proc_alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not L.proc_alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
