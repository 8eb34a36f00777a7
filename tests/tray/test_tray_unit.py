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

from backend.launcher import krita_install
from backend.launcher.app import App
from backend.launcher.config import LaunchSettings, repo_root
from backend.launcher.desktop import (AUTOSTART_TRAY_TIMEOUT_S, autostart_enabled, desktop_exec, launcher_command,
                                      set_autostart)
from backend.launcher.instance_lock import InstanceLock, running_instance_report
from backend.launcher.krita_install import enable_in_kritarc, install_krita_plugin
from backend.launcher.probes import http_json
from backend.launcher.process import exit_words, proc_alive
from backend.launcher.state import (BUSY, DOWNLOADING, ERROR, LOADING, NOT_DOWNLOADED, NOT_LOADED, READY, STARTING,
                                    STOPPED, State, state_from_status)
from backend.launcher.supervisor import Supervisor
from backend.launcher.tray import build_menu, draw_icon, parse_args

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
    # `length` counts the waiting jobs (the worker takes the running one off the queue)
    busy = {"model": {"state": "ready"}, "queue": {"length": 3, "running": "j_1"}}
    assert state_from_status(busy) == State(BUSY, queue=4)
    assert state_from_status({"model": {"state": "ready"}, "queue": {"length": 0, "running": "j_1"}}).queue == 1
    assert state_from_status({"model": {"state": "loading"}, "queue": {"length": 2, "running": None}}).queue == 2


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
    assert opened[-1] == repo_root() / "README.md"

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
    assert f"Exec={desktop_exec(launcher_command())}\n" in desktop.read_text()
    items_by_text(menu)["Start with the system"](None)
    assert not desktop.exists() and items_by_text(menu)["Start with the system"].checked is False

    src = fake_plugin(env)
    monkeypatch.setattr(krita_install, "repo_root", lambda: env)
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
    monkeypatch.setattr(krita_install, "repo_root", lambda: env)
    with pytest.raises(FileNotFoundError):
        install_krita_plugin()


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
    enable_in_kritarc(rc, "layerbridge")
    assert rc.read_text() == after
    enable_in_kritarc(rc, "layerbridge")
    assert rc.read_text() == after


def test_instance_lock(env):
    first, second = InstanceLock(), InstanceLock()
    assert first.acquire()
    assert not second.acquire()
    first.write_state(State(READY), "http://127.0.0.1:1", 42)
    report = running_instance_report(second)
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
        assert pid and proc_alive(pid)
        assert sup.url and http_json(f"{sup.url}/health")["status"] == "ok"

        sup.stop()
        sup.wait_for(lambda s: s.kind == STOPPED, 10)
        assert sup.pid is None and not proc_alive(pid)

        sup.restart()
        sup.wait_for(lambda s: s.kind == READY, 20)
        second = sup.pid
        assert second and second != pid
        sup.restart()
        sup.wait_for(lambda s: s.kind == READY and sup.pid not in (None, second), 20)
        assert not proc_alive(second)
        last = sup.pid
    finally:
        assert sup.shutdown(20)
    assert sup.state.kind == STOPPED and last and not proc_alive(last)
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
from backend.core.lifetime import die_with_parent
die_with_parent(int(sys.argv[1]))
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
                              cwd=repo_root())
    try:
        child = int(parent.stdout.readline())
        assert proc_alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while proc_alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not proc_alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)


def test_busy_menu_says_what_stopping_cancels(env, pystray):
    sup = FakeSupervisor(env / "logs")
    app = App(sup)  # type: ignore[arg-type]
    menu = build_menu(pystray, app)
    sup.state = State(BUSY, queue=2)
    items = items_by_text(menu)
    for text in ("Stop server (cancels 2 jobs)", "Restart server (cancels 2 jobs)", "Quit (cancels 2 jobs)"):
        assert items[text].enabled, text
    sup.state = State(BUSY, queue=1)
    assert "Quit (cancels 1 job)" in items_by_text(menu)
    sup.state = State(READY)
    assert {"Stop server", "Restart server", "Quit"} <= set(items_by_text(menu))


def test_an_error_raises_one_alert_per_occurrence(env):
    sup = FakeSupervisor(env / "logs")
    app = App(sup)  # type: ignore[arg-type]
    alerts: list[str] = []
    app.alert = alerts.append
    crash = State(ERROR, message="the server exited (code 1); restarting in 2 s")
    for state in (State(STARTING), State(READY), crash, crash, State(ERROR, message="still down"), State(STARTING),
                  State(ERROR, message="port 7860 is already used by another program")):
        for fn in sup._listeners:
            fn(state)
    assert alerts == ["Error: the server exited (code 1); restarting in 2 s",
                      "Error: port 7860 is already used by another program"]


KRITARC = (
    b"[General]\r\nLastPreset=Basic-5 Size\r\nMaxBrushSize=1000\r\n\r\n"
    b"[python]\r\nenable_scripter=true\r\nenable_layerbridge=false\r\n\r\n"
    b"[RecentFiles]\r\nFile1=/home/d\xe9signer/poster caf\xc3\xa9.kra\r\nName1=poster caf\xc3\xa9.kra\r\n"
    b"[TabletSettings]\r\npressure=0,0;1,1;\r\n"
)


def test_kritarc_survives_byte_for_byte_but_the_one_key(tmp_path):
    real = tmp_path / "dotfiles" / "kritarc"
    real.parent.mkdir()
    real.write_bytes(KRITARC)
    real.chmod(0o600)
    link = tmp_path / "kritarc"
    link.symlink_to(real)
    enable_in_kritarc(link, "layerbridge")
    assert link.is_symlink()  # a dotfile manager's link stays a link
    assert real.read_bytes() == KRITARC.replace(b"enable_layerbridge=false", b"enable_layerbridge=true")
    assert real.stat().st_mode & 0o777 == 0o600
    enable_in_kritarc(link, "layerbridge")
    assert real.read_bytes() == KRITARC.replace(b"enable_layerbridge=false", b"enable_layerbridge=true")


@pytest.mark.parametrize("before, after", [
    # the key joins its group before the blank line that separates groups, in the file's line endings
    (b"[python]\r\nenable_scripter=true\r\n\r\n[Other]\r\nb=2",
     b"[python]\r\nenable_scripter=true\r\nenable_layerbridge=true\r\n\r\n[Other]\r\nb=2"),
    # no newline at the end of the file: nothing else changes
    (b"[General]\na=1", b"[General]\na=1\n\n[python]\nenable_layerbridge=true\n"),
    (b"[python]\nenable_x=true", b"[python]\nenable_x=true\nenable_layerbridge=true\n"),
    (b"[python]\nenable_layerbridge=false", b"[python]\nenable_layerbridge=true"),
])
def test_enable_in_kritarc_keeps_the_layout(tmp_path, before, after):
    rc = tmp_path / "kritarc"
    rc.write_bytes(before)
    enable_in_kritarc(rc, "layerbridge")
    assert rc.read_bytes() == after
    enable_in_kritarc(rc, "layerbridge")
    assert rc.read_bytes() == after


def test_install_krita_plugin_reports_an_unwritable_kritarc(env, monkeypatch, pystray):
    fake_plugin(env)
    monkeypatch.setattr(krita_install, "repo_root", lambda: env)
    rc = env / "kritarc"
    rc.mkdir()  # not a file: writing it fails
    app = App(FakeSupervisor(env / "logs"))  # type: ignore[arg-type]
    said: list[str] = []
    app.notify = said.append
    msg = app.install_krita()
    assert msg.startswith("Krita plugin not installed: ") and said == [msg]


FAKE_PYTHON = """#!/bin/sh
out="$(dirname "$0")/argv.txt"
pwd > "$out.tmp"
for a in "$@"; do printf '%s\\n' "$a" >> "$out.tmp"; done
mv "$out.tmp" "$out"
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="freedesktop autostart")
def test_autostart_desktop_file_runs_from_a_path_with_spaces(env, monkeypatch):
    pytest.importorskip("gi")
    from gi.repository import Gio

    home = env / "Jane Doe's $HOME (\\copy) `x` \"quoted\""
    exe = home / "venv" / "bin" / "python"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE_PYTHON)
    exe.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(exe))
    cmd = launcher_command()
    assert cmd[0] == str(exe) and cmd[-2:] == ["--tray-timeout", str(AUTOSTART_TRAY_TIMEOUT_S)]
    set_autostart(True)
    set_autostart(True)  # idempotent
    desktop = env / "xdg" / "autostart" / "layerbridge-tray.desktop"
    assert autostart_enabled()
    # what a desktop does with the file: GLib's parser of the Desktop Entry spec, then launching it
    info = Gio.DesktopAppInfo.new_from_filename(str(desktop))
    assert info is not None and info.get_name() == "LayerBridge"
    assert info.launch([], None)
    argv_file = exe.parent / "argv.txt"
    deadline = time.monotonic() + 10
    while not argv_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = argv_file.read_text().splitlines()
    assert lines[1:] == cmd[1:]
    assert Path(lines[0]) == repo_root()
    set_autostart(False)
    assert not desktop.exists() and not autostart_enabled()
    set_autostart(False)


def test_desktop_exec_doubles_percent_signs():
    # a lone % starts a field code (%f, %u…) that the desktop would replace
    assert desktop_exec(["/opt/py", "--label", "100%"]) == '/opt/py --label 100%%'
    assert desktop_exec(["/a b/py", ""]) == '"/a b/py" ""'


def test_exit_words():
    assert exit_words(3) == "the server exited (code 3)"
    assert exit_words(-signal.SIGKILL) == "the server was killed by SIGKILL (out of memory?)"
    assert exit_words(-signal.SIGSEGV) == "the server was killed by SIGSEGV"


def test_supervisor_restarts_a_crashed_server_with_backoff(env):
    seen: list[tuple[float, State]] = []
    sup = make_supervisor(env, "--crash-after", "2.5", "--load-s", "0", restart_backoff_s=0.5, max_restarts=2)
    sup._status_interval = 0.2
    sup.add_listener(lambda st: seen.append((time.monotonic(), st)))
    pids: list[int] = []
    sup.add_listener(lambda st: pids.append(sup.pid) if st.kind == READY else None)
    sup.run()
    try:
        sup.start()
        final = sup.wait_for(lambda s: s.kind == ERROR and "restarting" not in s.message, 40)
        assert "exited (code 1): stand-in crashed" in final.message
        errors = [(t, st) for t, st in seen if st.kind == ERROR]
        starts = [t for t, st in seen if st.kind == STARTING]
        assert [st.message.split("; ")[1] for _, st in errors[:2]] == ["restarting in 0.5 s", "restarting in 1 s"]
        assert len(starts) == 3 and len(errors) == 3 and len(set(pids)) == 3 and None not in pids
        assert starts[1] - errors[0][0] >= 0.45 and starts[2] - errors[1][0] >= 0.95  # 0.5 s, then twice that
        assert all(any(st.kind == READY for t, st in seen if a < t < b)
                   for a, b in zip(starts, [e for e, _ in errors]))  # each one was up before it crashed
        time.sleep(1.5)
        assert sup.pid is None and sum(st.kind == STARTING for _, st in seen) == 3  # gave up after max_restarts
        sup.start()  # the user's Start tries again at once
        sup.wait_for(lambda s: s.kind == READY, 20)
    finally:
        assert sup.shutdown(20)
    assert all(not proc_alive(p) for p in pids if p)


def test_supervisor_does_not_restart_a_server_that_never_came_up(env):
    seen: list[State] = []
    sup = make_supervisor(env, "--fail", seen=seen, restart_backoff_s=0.1)
    sup.run()
    try:
        sup.start()
        sup.wait_for(lambda s: s.kind == ERROR, 20)
        time.sleep(1.0)
        assert [s.kind for s in seen] == [STARTING, ERROR] and sup.pid is None
    finally:
        assert sup.shutdown(20)


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_stop_ends_a_stuck_server_and_what_it_started(env):
    helper_file = env / "helper.pid"
    sup = make_supervisor(env, "--ignore-term", "--grandchild-file", str(helper_file))
    sup._stop_timeout = 1.0
    sup.run()
    helper = None
    try:
        sup.start()
        sup.wait_for(lambda s: s.kind == READY, 20)
        server = sup.pid
        helper = int(helper_file.read_text())
        assert os.getpgid(server) == server != os.getpgid(0)  # a group of its own: Ctrl+C here does not reach it
        assert os.getpgid(helper) == server
        sup.stop()
        sup.wait_for(lambda s: s.kind == STOPPED, 15)
        deadline = time.monotonic() + 5
        while proc_alive(helper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not proc_alive(server) and not proc_alive(helper)
    finally:
        assert sup.shutdown(20)
        if helper and proc_alive(helper):
            os.kill(helper, signal.SIGKILL)


def test_stop_cancels_a_pending_restart(env, pystray):
    seen: list[State] = []
    sup = make_supervisor(env, "--crash-after", "1.5", "--load-s", "0", seen=seen, restart_backoff_s=1.5)
    app = App(sup)
    sup.run()
    try:
        sup.start()
        sup.wait_for(lambda s: s.kind == ERROR, 20)
        assert sup.restart_pending and sup.pid is None
        stop = items_by_text(build_menu(pystray, app))["Stop server"]
        assert stop.enabled
        stop(None)
        sup.wait_for(lambda s: s.kind == STOPPED, 10)
        time.sleep(2.5)
        assert not sup.restart_pending and sup.pid is None and [s.kind for s in seen].count(STARTING) == 1
    finally:
        assert sup.shutdown(20)


def test_a_second_launch_makes_the_first_show_its_state(env):
    first = InstanceLock()
    assert first.acquire()
    app = App(FakeSupervisor(env / "logs"), first)  # type: ignore[arg-type]
    said: list[str] = []
    app.notify = said.append
    try:
        app.watch_show_requests(0.05)
        second = InstanceLock()
        assert not second.acquire()
        second.request_show()
        deadline = time.monotonic() + 5
        while not said and time.monotonic() < deadline:
            time.sleep(0.02)
        assert said == ["Already running: Ready at http://127.0.0.1:7860"]
        time.sleep(0.3)
        assert len(said) == 1  # once per launch
    finally:
        app.quitting.set()
        first.release()


def test_autostart_switched_off_by_the_desktop_reads_as_off(env, pystray):
    app = App(FakeSupervisor(env / "logs"))  # type: ignore[arg-type]
    set_autostart(True)
    desktop = env / "xdg" / "autostart" / "layerbridge-tray.desktop"
    for off in ("Hidden=true", "X-GNOME-Autostart-enabled=false"):
        set_autostart(True)
        desktop.write_text(desktop.read_text().replace("X-GNOME-Autostart-enabled=true\n", "") + off + "\n")
        assert not autostart_enabled()
        item = items_by_text(build_menu(pystray, app))["Start with the system"]
        assert item.checked is False
        item(None)  # ticking it switches it on again
        assert autostart_enabled() and off not in desktop.read_text()


@pytest.mark.parametrize("argv, port, serve", [
    (["--port", "7861", "--memory", "auto", "--no-load"], 7861, ["--memory", "auto"]),
    (["--memory", "auto", "--", "--port", "7999", "--preset", "fast"], 7999, ["--memory", "auto", "--preset", "fast"]),
    (["--", "--console"], None, ["--console"]),
    # the port, host and model the launcher watches stay its own wherever they are named
    (["--", "--port", "7861", "--memory", "auto"], 7861, ["--memory", "auto"]),
    ([], None, []),
])
def test_arguments_the_launcher_does_not_take_go_to_the_server_in_order(argv, port, serve):
    args = parse_args(argv)
    assert args.port == port and args.serve_args == serve
    assert args.console is False        # "--console" after "--" is the server's
