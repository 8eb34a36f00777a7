"""The launcher's actions, shared by the tray menu and the console mode: start, stop, restart, logs, token, Krita
plugin, README, start with the system, quit."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from .config import read_token, repo_root, token_path
from .desktop import autostart_enabled, copy_text, open_path, set_autostart
from .instance_lock import InstanceLock
from .krita_install import install_krita_plugin
from .state import BUSY, ERROR, STOPPING, State
from .supervisor import Supervisor

log = logging.getLogger("layerbridge.launcher")


class App:
    """The launcher's actions, shared by the tray menu and the console mode. Each returns a line for the user."""

    def __init__(self, supervisor: Supervisor, lock: InstanceLock | None = None,
                 notify: Callable[[str], None] | None = None):
        self.supervisor = supervisor
        self.lock = lock
        self.notify = notify or (lambda msg: None)
        # called when the server runs into an error (the tray shows a notification: the icon alone is easy to miss)
        self.alert: Callable[[str], None] = lambda msg: None
        self.copy: Callable[[str], None] = copy_text
        self.opener: Callable[[Path], None] = open_path
        self.quitting = threading.Event()
        self.on_quit: Callable[[], None] = lambda: None
        self._last_kind = supervisor.state.kind
        supervisor.add_listener(self._remember)

    def _remember(self, state: State) -> None:
        if self.lock is not None:
            try:
                self.lock.write_state(state, self.supervisor.url, self.supervisor.pid)
            except OSError:
                log.exception("cannot write the launcher state file")
        if state.kind == ERROR and self._last_kind != ERROR and not self.quitting.is_set():
            try:
                self.alert(state.words())
            except Exception:
                log.debug("alert failed", exc_info=True)
        self._last_kind = state.kind

    def watch_show_requests(self, interval_s: float = 0.5) -> None:
        """Answers a second launch (which cannot show anything itself) by showing this launcher's state."""
        lock = self.lock
        if lock is None:
            return
        lock.take_show_request()  # one left from before this launcher started

        def watch() -> None:
            while not self.quitting.wait(interval_s):
                if lock.take_show_request():
                    self._report(f"Already running: {self.title().removeprefix('LayerBridge: ')}")

        threading.Thread(target=watch, name="show-requests", daemon=True).start()

    def cancels(self) -> str:
        """What stopping the server now would cancel, for the menu (empty when nothing runs)."""
        st = self.state
        if st.kind != BUSY or not st.queue:
            return ""
        return f" (cancels {st.queue} job{'s' if st.queue != 1 else ''})"

    @property
    def state(self) -> State:
        return self.supervisor.state

    def title(self) -> str:
        st = self.state
        where = f" at {self.supervisor.url}" if st.running and self.supervisor.url else ""
        return f"LayerBridge: {st.words()}{where}"

    def can_start(self) -> bool:
        return self.supervisor.pid is None and self.state.kind != STOPPING and not self.quitting.is_set()

    def can_stop(self) -> bool:
        running = self.supervisor.pid is not None or getattr(self.supervisor, "restart_pending", False)
        return running and not self.quitting.is_set()

    def _report(self, msg: str) -> str:
        log.info("%s", msg)
        self.notify(msg)
        return msg

    def start(self) -> str:
        self.supervisor.start()
        return "Starting the server"

    def stop(self) -> str:
        self.supervisor.stop()
        return "Stopping the server"

    def restart(self) -> str:
        self.supervisor.restart()
        return "Restarting the server"

    def open_logs(self) -> str:
        try:
            self.opener(self.supervisor.logs)
            return f"Logs: {self.supervisor.logs}"
        except Exception as e:
            return self._report(f"Cannot open {self.supervisor.logs}: {e}")

    def copy_token(self) -> str:
        token = read_token()
        if not token:
            return self._report(f"No access token yet ({token_path()} appears when the server first starts)")
        try:
            self.copy(token)
        except Exception as e:
            return self._report(f"Cannot copy the token ({e}); it is in {token_path()}")
        return self._report("Access token copied to the clipboard")

    def install_krita(self) -> str:
        try:
            where = install_krita_plugin()
        except Exception as e:
            return self._report(f"Krita plugin not installed: {e}")
        return self._report(f"Krita plugin installed in {where} and enabled; restart Krita to load it")

    def open_readme(self) -> str:
        readme = repo_root() / "README.md"
        if not readme.is_file():
            return self._report("README.md is not next to this installation")
        try:
            self.opener(readme)
        except Exception as e:
            return self._report(f"Cannot open {readme}: {e}")
        return f"README: {readme}"

    def autostart(self) -> bool:
        try:
            return autostart_enabled()
        except Exception:
            return False

    def toggle_autostart(self) -> str:
        want = not self.autostart()
        try:
            set_autostart(want)
        except Exception as e:
            return self._report(f"Cannot change start with the system: {e}")
        return self._report("LayerBridge starts with the system" if want else "LayerBridge no longer starts with the system")

    def quit(self) -> str:
        """Stops the server off the calling (UI) thread, then calls on_quit."""
        if self.quitting.is_set():
            return "Quitting"
        self.quitting.set()

        def finish() -> None:
            try:
                self.supervisor.shutdown()
            finally:
                self.on_quit()

        threading.Thread(target=finish, name="quit", daemon=True).start()
        return "Quitting"
