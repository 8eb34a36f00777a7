"""The launcher for real: under Xvfb with trayer as the tray host and pystray's GTK backend, and in the
console where there is no display or no status area. Every test starts the real `layerbridge serve`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from backend.launcher.probes import http_json
from backend.launcher.process import proc_alive
from tray_desktop import REPO, Desktop, desktop_missing, launcher_command, wait_until

pytestmark = pytest.mark.xdist_group("tray_desktop")  # one worker: the module's desktop is shared

# Enabled menu items, in order, when the server runs / when it is stopped (the keyboard skips the others).
RUNNING = ["Stop server", "Restart server", "Open logs", "Copy access token", "Install Krita plugin",
           "Open the README", "Start with the system", "Quit"]
IDLE = "not_loaded"  # with --no-load the model waits for the first job
STOPPED = ["Start server", "Open logs", "Copy access token", "Install Krita plugin", "Open the README",
           "Start with the system", "Quit"]


def gtk_env(desktop: Desktop) -> dict[str, str]:
    return dict(desktop.env, PYSTRAY_BACKEND="gtk")


def healthy(state: dict) -> bool:
    return http_json(f"{state['url']}/health")["status"] == "ok"


def gone(pid: int, timeout: float = 10) -> bool:
    try:
        wait_until(lambda: not proc_alive(pid), timeout, f"process {pid} to end")
    except TimeoutError:
        return False
    return True


def test_tray_menu_drives_the_server(desktop, run_launcher, model_args, tmp_path):
    launcher = run_launcher(gtk_env(desktop), "--port", "0", *model_args)
    state = launcher.wait_state("ready")
    first = state["server_pid"]
    assert healthy(state) and proc_alive(first)
    icon = wait_until(desktop.docked_icon, 30, "the icon to dock in the tray host")

    time.sleep(0.5)  # the menu is rebuilt on the GTK loop after each state change
    menu = desktop.open_menu()
    x0, y0 = min(icon[0], menu[0]) - 8, max(0, min(icon[1], menu[1]) - 4)
    x1, y1 = max(icon[0] + icon[2], menu[0] + menu[2]) + 4, max(icon[1] + icon[3], menu[1] + menu[3]) + 8
    shot = tmp_path / "tray.png"
    desktop.screenshot(shot, (x0, y0, x1 - x0, y1 - y0))
    if os.environ.get("LAYERBRIDGE_UPDATE_SCREENSHOTS"):
        shutil.copy(shot, REPO / "docs" / "images" / "tray.png")
    desktop.choose(RUNNING.index("Copy access token"))
    assert desktop.clipboard() == (launcher.config / "token").read_text().strip()

    desktop.open_menu()
    desktop.choose(RUNNING.index("Install Krita plugin"))
    pykrita = launcher.root / "pykrita"
    wait_until(lambda: (pykrita / "layerbridge.desktop").is_file(), 10, "the plugin's .desktop file")
    for src in (REPO / "krita_plugin" / "layerbridge").rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts:
            rel = src.relative_to(REPO / "krita_plugin")
            assert (pykrita / rel).read_bytes() == src.read_bytes(), rel
    kritarc = (launcher.root / "kritarc").read_text()
    assert "[python]\nenable_layerbridge=true" in kritarc

    desktop.open_menu()
    desktop.choose(RUNNING.index("Stop server"))
    launcher.wait_state("stopped", 30)
    assert gone(first)

    time.sleep(0.5)
    desktop.open_menu()
    desktop.choose(STOPPED.index("Start server"))
    state = launcher.wait_state("ready")
    second = state["server_pid"]
    assert second != first and healthy(state)

    time.sleep(0.5)
    desktop.open_menu()
    desktop.choose(RUNNING.index("Quit"))
    assert launcher.proc.wait(30) == 0
    assert gone(second)
    assert wait_until(lambda: desktop.docked_icon() is None, 10, "the icon to leave the tray")


def test_second_launch_shows_the_first_and_sigterm_quits(desktop, run_launcher, model_args):
    launcher = run_launcher(gtk_env(desktop), "--port", "0", "--no-load", *model_args)
    state = launcher.wait_state(IDLE)
    server = state["server_pid"]
    again = subprocess.run(launcher_command() + ["--port", "0", *model_args], env=launcher.env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert f"already running (pid {launcher.proc.pid}): Idle (model loads on the first job) at {state['url']}" \
        in again.stdout
    assert launcher.state()["server_pid"] == server and proc_alive(server)
    # the running one shows its state too: a double-click has no terminal for the line above
    wait_until(lambda: "Already running: Idle (model loads on the first job)" in launcher.output(), 10,
               "the first launcher to answer")

    launcher.proc.send_signal(signal.SIGTERM)
    assert launcher.proc.wait(30) == 0
    assert gone(server)
    assert "launcher stopped" in (launcher.logs / "launcher.log").read_text()


def test_sigkill_of_the_tray_launcher_takes_the_server_down(desktop, run_launcher, model_args):
    launcher = run_launcher(gtk_env(desktop), "--port", "0", "--no-load", *model_args)
    server = launcher.wait_state(IDLE)["server_pid"]
    wait_until(desktop.docked_icon, 30, "the icon to dock")
    launcher.proc.kill()
    launcher.proc.wait(10)
    assert gone(server, 5)


def test_the_end_of_the_session_takes_the_server_down(run_launcher, model_args):
    why = desktop_missing()
    if why:
        pytest.skip(why)
    session = Desktop()
    try:
        launcher = run_launcher(gtk_env(session), "--port", "0", "--no-load", *model_args)
        server = launcher.wait_state(IDLE)["server_pid"]
        wait_until(session.docked_icon, 30, "the icon to dock")
    finally:
        session.close()  # log-out: the X server, the session bus and the tray go away
    launcher.proc.wait(30)
    assert gone(server)


def no_display_env(desktop_env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(desktop_env or os.environ)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND"):
        env.pop(var, None)
    return env


def test_console_fallback_without_a_display(run_launcher, model_args):
    launcher = run_launcher(no_display_env(), "--port", "0", "--no-load", *model_args, stdin=subprocess.PIPE)
    state = launcher.wait_state(IDLE)
    first = state["server_pid"]
    assert healthy(state)
    assert "no tray available" in (launcher.logs / "launcher.log").read_text()
    launcher.proc.stdin.write(b"stop\n")
    launcher.proc.stdin.flush()
    launcher.wait_state("stopped", 30)
    assert gone(first)
    launcher.proc.stdin.write(b"start\n")
    launcher.proc.stdin.flush()
    second = launcher.wait_state(IDLE)["server_pid"]
    assert second != first
    out = launcher.output()
    for words in ("LayerBridge: Starting the server", "LayerBridge: Idle (model loads on the first job) at http://127.0.0.1:",
                  "LayerBridge: Server stopped"):
        assert words in out
    launcher.proc.kill()
    launcher.proc.wait(10)
    assert gone(second, 5)


def test_console_fallback_without_a_status_area(run_launcher, model_args):
    why = desktop_missing()
    if why:
        pytest.skip(why)
    bare = Desktop(tray=False)
    try:
        launcher = run_launcher(gtk_env(bare), "--port", "0", "--no-load", "--tray-timeout", "2", *model_args,
                                stdin=subprocess.PIPE)
        server = launcher.wait_state(IDLE)["server_pid"]
        wait_until(lambda: "switching to the console" in launcher.output(), 30, "the console fallback")
        wait_until(lambda: "LayerBridge: Idle" in launcher.output(), 10, "the state line")
        launcher.proc.stdin.write(b"quit\n")
        launcher.proc.stdin.flush()
        assert launcher.proc.wait(30) == 0
        assert gone(server)
    finally:
        bare.close()


def test_a_taken_port_is_reported(run_launcher):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        launcher = run_launcher(no_display_env(), "--console", "--port", str(port))
        state = launcher.wait_state("error", 30)
        assert f"port {port} is already used by another program" in state["words"]
        wait_until(lambda: f"port {port} is already used" in launcher.output(), 10, "the console line")
        assert launcher.state().get("server_pid") is None
        launcher.proc.send_signal(signal.SIGHUP)  # the terminal closed
        assert launcher.proc.wait(30) == 0
