"""Helpers for the tray tests: a real desktop (Xvfb, a session D-Bus, dunst for notifications, trayer as the
tray host), each started and ended by PID, and a launcher in a sandbox of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from backend.launcher.process import proc_alive

REPO = Path(__file__).resolve().parents[2]
TAG_ENV = "LAYERBRIDGE_TEST_TAG"
DESKTOP_TOOLS = ("Xvfb", "dbus-daemon", "trayer", "dunst", "xdotool", "import")


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def end_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries the tag (what a test started, at any depth)."""
    found = []
    needle = f"{TAG_ENV}={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and proc_alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Desktop:
    def __init__(self, tray: bool = True, size: str = "800x600x24"):
        self.procs: list[subprocess.Popen] = []
        self.tag = uuid.uuid4().hex
        self.env = dict(os.environ, NO_AT_BRIDGE="1", GTK_A11Y="none", **{TAG_ENV: self.tag})
        for var in ("WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "PYSTRAY_BACKEND"):
            self.env.pop(var, None)
        self._start(tray, size)

    def _spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        return proc

    def _start(self, tray: bool, size: str) -> None:
        r, w = os.pipe()
        self._spawn(["Xvfb", "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp"], pass_fds=(w,),
                    stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            self.display = ":" + wait_until(lambda: f.readline().strip(), 20, "Xvfb's display number")
        self.env["DISPLAY"] = self.display
        dbus = self._spawn(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                           stdout=subprocess.PIPE, text=True)
        self.env["DBUS_SESSION_BUS_ADDRESS"] = dbus.stdout.readline().strip()
        self._spawn(["dunst"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if tray:
            self._spawn(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32",
                         "--SetDockType", "true", "--transparent", "false", "--tint", "0x303030"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: self.tray_host() is not None, 20, "trayer's window")

    def close(self) -> None:
        if getattr(self, "_xdisplay", None) is not None:
            self._xdisplay.close()
            self._xdisplay = None
        for proc in reversed(self.procs):
            end_process(proc)

    # -- X11 queries (python-xlib comes with pystray on Linux)

    @property
    def x(self) -> Any:
        if getattr(self, "_xdisplay", None) is None:
            from Xlib import display

            self._xdisplay = display.Display(self.display)
        return self._xdisplay

    def _walk(self, win: Any):
        yield win
        try:
            children = win.query_tree().children
        except Exception:
            return
        for child in children:
            yield from self._walk(child)

    def tray_host(self) -> Any:
        for win in self.x.screen().root.query_tree().children:
            try:
                if win.get_wm_class() == ("panel", "trayer"):
                    return win
            except Exception:
                continue
        return None

    def docked_icon(self, title_prefix: str = "LayerBridge") -> tuple[int, int, int, int] | None:
        """The icon's absolute (x, y, w, h) when a window of ours is inside the tray host's window tree."""
        host = self.tray_host()
        if host is None:
            return None
        root = self.x.screen().root
        for win in self._walk(host):
            try:
                name = win.get_wm_name()
                if isinstance(name, bytes):
                    name = name.decode("utf-8", "replace")
                if name and name.startswith(title_prefix):
                    g = win.get_geometry()
                    pos = win.translate_coords(root, 0, 0)
                    return (-pos.x, -pos.y, g.width, g.height)
            except Exception:
                continue
        return None

    def menu_window(self) -> tuple[int, int, int, int] | None:
        """A mapped pop-up menu of the launcher (a big override-redirect window of class layerbridge)."""
        from Xlib import X

        for win in self.x.screen().root.query_tree().children:
            try:
                attrs = win.get_attributes()
                if not attrs.override_redirect or attrs.map_state != X.IsViewable:
                    continue
                if (win.get_wm_class() or ("",))[0] != "layerbridge":
                    continue
                g = win.get_geometry()
                if g.width > 60 and g.height > 60:
                    return (g.x, g.y, g.width, g.height)
            except Exception:
                continue
        return None

    def xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=self.env, check=True, timeout=10)

    def open_menu(self, timeout: float = 30) -> tuple[int, int, int, int]:
        """Right-clicks the icon until its menu is up (the first click after docking is often lost)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            icon = self.docked_icon()
            if icon:
                x, y, w, h = icon
                self.xdotool("mousemove", str(x + w // 2), str(y + h // 2), "click", "3")
                try:
                    return wait_until(self.menu_window, 1.5, "the menu")
                except TimeoutError:
                    pass
            time.sleep(0.3)
        raise TimeoutError("the tray menu did not open")

    def choose(self, position: int) -> None:
        """Activates the menu's `position`-th enabled item (0-based) with the keyboard, as a user can."""
        self.xdotool("key", "--delay", "80", *(["Down"] * (position + 1)), "Return")
        wait_until(lambda: self.menu_window() is None, 10, "the menu to close")

    def screenshot(self, path: Path, box: tuple[int, int, int, int] | None = None) -> None:
        subprocess.run(["import", "-window", "root", str(path)], env=self.env, check=True, timeout=30)
        if box:
            x, y, w, h = box
            subprocess.run(["convert", str(path), "-crop", f"{w}x{h}+{x}+{y}", "+repage", str(path)],
                           check=True, timeout=30)

    def clipboard(self) -> str:
        code = ("import gi; gi.require_version('Gtk', '3.0'); from gi.repository import Gtk, Gdk; "
                "print(Gtk.Clipboard.get(Gdk.SELECTION_CLIPBOARD).wait_for_text() or '')")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                             timeout=20, check=True)
        return out.stdout.strip()


def desktop_missing() -> str | None:
    missing = [t for t in DESKTOP_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (scripts/apt-packages-test.txt)"
    try:
        import gi  # noqa: F401
        import Xlib  # noqa: F401
    except ImportError as e:
        return f"missing {e.name} (pip install -e '.[tray]')"
    return None


class Launcher:
    """One `python -m backend.launcher.tray` in a fresh config/log/pykrita/kritarc sandbox."""

    def __init__(self, root: Path, env: dict[str, str], args: list[str], stdin: Any = subprocess.DEVNULL):
        self.root = root
        self.config = root / "config"
        self.logs = root / "logs"
        self.tag = uuid.uuid4().hex
        self.env = dict(env, **{TAG_ENV: self.tag}, LAYERBRIDGE_CONFIG_DIR=str(self.config), LAYERBRIDGE_LOG_DIR=str(self.logs),
                        LAYERBRIDGE_PYKRITA_DIR=str(root / "pykrita"), LAYERBRIDGE_KRITARC=str(root / "kritarc"),
                        XDG_CONFIG_HOME=str(root / "xdg"), PYTHONUNBUFFERED="1")
        self.out = open(root / "launcher.out", "w")
        self.proc = subprocess.Popen(launcher_command() + args, env=self.env, cwd=REPO, stdin=stdin,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        self.server_pids: set[int] = set()

    def state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.config / "launcher-state.json").read_text())
        except (OSError, ValueError):
            return {}
        if data.get("server_pid"):
            self.server_pids.add(data["server_pid"])
        return data

    def wait_state(self, kind: str, timeout: float = 120) -> dict[str, Any]:
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"the launcher exited ({self.proc.returncode}):\n{self.output()}")
            s = self.state()
            return s if s.get("state") == kind else None
        try:
            return wait_until(check, timeout, f"launcher state {kind!r}", 0.1)
        except TimeoutError:
            raise AssertionError(f"state is {self.state()} not {kind!r} after {timeout} s\n{self.output()}")

    def output(self) -> str:
        self.out.flush()
        text = (self.root / "launcher.out").read_text(errors="replace")
        log = self.logs / "launcher.log"
        return text + ("\n--- launcher.log\n" + log.read_text(errors="replace") if log.exists() else "")

    def close(self) -> None:
        end_process(self.proc, 30)
        self.out.close()
        for pid in self.server_pids:
            if proc_alive(pid):
                os.kill(pid, signal.SIGKILL)

    def leftovers(self) -> list[int]:
        """Processes this launcher started (at any depth) still alive a few seconds after it ended."""
        try:
            wait_until(lambda: not tagged_processes(self.tag), 5, "the launcher's processes to end")
        except TimeoutError:
            pass
        left = tagged_processes(self.tag)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return left


def launcher_command() -> list[str]:
    return [sys.executable, "-m", "backend.launcher.tray"]
