"""The console mode: the launcher's lifecycle without a tray, each state change printed, commands read from stdin."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable

from .app import App
from .state import State


def say(line: str) -> None:
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        pass  # the terminal is gone; the log has it


CONSOLE_HELP = "commands: status, start, stop, restart, token, krita, logs, quit"


def run_console(app: App) -> int:
    """Console mode: prints each state change; Ctrl+C, SIGTERM or SIGHUP (terminal closed) quit."""
    done = threading.Event()
    app.on_quit = done.set
    app.notify = lambda msg: say(f"LayerBridge: {msg}")
    last: list[State] = []

    def show(state: State) -> None:
        if not last or last[-1] != state:
            last.append(state)
            say(f"{time.strftime('%H:%M:%S')} {app.title()}")

    app.supervisor.add_listener(show)
    show(app.state)

    def on_signal(signum: int, frame: Any) -> None:
        app.quit()

    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    if sys.stdin is not None:
        if sys.stdin.isatty():
            say(CONSOLE_HELP)
        threading.Thread(target=_console_commands, args=(app,), name="console-input", daemon=True).start()
    while not done.wait(0.2):
        pass
    say("LayerBridge: stopped")
    return 0


def _console_commands(app: App) -> None:
    """Commands typed (or piped) into the console mode, one a line; end of input changes nothing."""
    actions: dict[str, Callable[[], Any]] = {
        "start": app.start, "stop": app.stop, "restart": app.restart, "token": app.copy_token,
        "krita": app.install_krita, "logs": app.open_logs, "quit": app.quit, "status": app.title}
    try:
        for line in iter(sys.stdin.readline, ""):
            word = line.strip().lower()
            if word:
                fn = actions.get(word)
                say(fn() if fn else CONSOLE_HELP)
            if word == "quit":
                return
    except (OSError, ValueError):
        pass  # no usable input: signals still work
