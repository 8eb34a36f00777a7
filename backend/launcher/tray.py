"""The tray launcher: an icon whose colour tells the server's state and a menu to drive it; where no tray is
available, the console mode (backend/launcher/console.py) with the same lifecycle (`layerbridge tray`,
`python -m backend.launcher.tray`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any, Callable

from PIL import Image, ImageDraw, ImageFont

from .app import App
from .config import LaunchSettings, token_path
from .console import run_console, say
from .instance_lock import InstanceLock, running_instance_report
from .logs import setup_logging
from .state import BUSY, DOWNLOADING, ERROR, LOADING, NOT_DOWNLOADED, NOT_LOADED, READY, STARTING, STOPPED, STOPPING, State
from .supervisor import Supervisor

log = logging.getLogger("layerbridge.launcher")

COLOURS = {
    STOPPED: (107, 114, 128),
    STARTING: (59, 130, 246),
    NOT_DOWNLOADED: (148, 163, 184),
    NOT_LOADED: (13, 148, 136),
    DOWNLOADING: (14, 165, 233),
    LOADING: (245, 158, 11),
    READY: (22, 163, 74),
    BUSY: (124, 58, 237),
    STOPPING: (107, 114, 128),
    ERROR: (220, 38, 38),
}
EMBED_TIMEOUT_S = 10.0


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_icon(state: State, size: int = 64) -> Image.Image:
    """The tray icon: a stack of layers on a rounded square in the state's colour, with a badge for
    progress (downloading), the queue length (busy) or trouble (error)."""
    s = size / 64
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = COLOURS.get(state.kind, COLOURS[STOPPED])
    d.rounded_rectangle((2 * s, 2 * s, 62 * s, 62 * s), radius=12 * s, fill=colour + (255,))
    white = (255, 255, 255, 255)
    faded = (255, 255, 255, 150)
    # three stacked layers, the top one solid
    for i, fill in ((2, faded), (1, faded), (0, white)):
        cy = (22 + 9 * i) * s
        d.polygon([(32 * s, cy - 10 * s), (52 * s, cy), (32 * s, cy + 10 * s), (12 * s, cy)],
                  fill=fill, outline=colour + (255,))
    if state.kind == DOWNLOADING:
        d.rectangle((8 * s, 51 * s, 56 * s, 59 * s), fill=(0, 0, 0, 110))
        frac = (state.percent or 0) / 100
        d.rectangle((8 * s, 51 * s, (8 + 48 * frac) * s, 59 * s), fill=white)
    elif state.kind in (STARTING, LOADING, STOPPING):
        for i in range(3):
            x = (22 + 10 * i) * s
            d.ellipse((x - 3 * s, 52 * s, x + 3 * s, 58 * s), fill=white)
    elif state.kind == NOT_DOWNLOADED:
        d.polygon([(26 * s, 50 * s), (38 * s, 50 * s), (32 * s, 58 * s)], fill=white)
    badge = {BUSY: str(min(state.queue, 99)), ERROR: "!"}.get(state.kind)
    if badge:
        r = 15 * s
        cx, cy = 64 * s - r, r
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255, 255), outline=colour + (255,), width=max(1, int(2 * s)))
        font = _font(int((20 if len(badge) == 1 else 16) * s))
        d.text((cx, cy + 1 * s), badge, fill=colour + (255,), font=font, anchor="mm")
    return img


def build_menu(pystray: Any, app: App) -> Any:
    """The tray menu; every item's text, enabled and checked are read when the menu is (re)built."""
    Item, sep = pystray.MenuItem, pystray.Menu.SEPARATOR

    def act(fn: Callable[[], Any]) -> Callable[[Any, Any], None]:
        def action(icon: Any, item: Any) -> None:
            fn()
        return action

    return pystray.Menu(
        Item(lambda item: app.title(), None, enabled=False),
        sep,
        Item("Start server", act(app.start), enabled=lambda item: app.can_start()),
        Item(lambda item: "Stop server" + app.cancels(), act(app.stop), enabled=lambda item: app.can_stop()),
        Item(lambda item: "Restart server" + app.cancels(), act(app.restart),
             enabled=lambda item: app.can_stop() or app.state.kind == ERROR),
        sep,
        Item("Open logs", act(app.open_logs)),
        Item("Copy access token", act(app.copy_token), enabled=lambda item: token_path().is_file()),
        Item("Install Krita plugin", act(app.install_krita)),
        Item("Open the README", act(app.open_readme)),
        Item("Start with the system", act(app.toggle_autostart), checked=lambda item: app.autostart()),
        sep,
        Item(lambda item: "Quit" + app.cancels(), act(app.quit)),
    )


def _gtk_copy(text: str) -> None:
    import gi

    gi.require_version("Gtk", "3.0")
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk, Gtk

    clipboard = Gtk.Clipboard.get(Gdk.SELECTION_CLIPBOARD)
    clipboard.set_text(text, -1)
    clipboard.store()


def _gtk_embedded(icon: Any) -> bool | None:
    """Whether a GTK status icon sits in a tray (None when the backend cannot tell)."""
    status_icon = getattr(icon, "_status_icon", None)
    if status_icon is None:
        return None
    from gi.repository import GLib

    answer: list[bool] = []
    done = threading.Event()

    def ask() -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Gtk.StatusIcon is the XEmbed tray itself
            answer.append(bool(status_icon.is_embedded()))
        done.set()
        return False

    GLib.idle_add(ask)
    done.wait(2.0)
    return answer[0] if answer else None


def run_tray(app: App, embed_timeout_s: float = EMBED_TIMEOUT_S) -> bool:
    """Runs the tray icon until Quit. False when there is no tray (nothing was shown): use the console."""
    try:
        from gi.repository import GLib  # window class and name of the icon and its menu

        GLib.set_prgname("layerbridge")
        GLib.set_application_name("LayerBridge")
    except Exception:
        pass
    try:
        import pystray
    except Exception as e:  # no display: Xlib errors, "Gtk could not be initialised", missing backends
        log.info("no tray available (%s: %s)", type(e).__name__, e)
        return False
    try:
        icon = pystray.Icon("layerbridge", draw_icon(app.state), app.title(), menu=build_menu(pystray, app))
    except Exception as e:
        log.info("no tray available (%s: %s)", type(e).__name__, e)
        return False
    backend = type(icon).__module__.rsplit(".", 1)[-1].lstrip("_")
    log.info("tray backend: %s", backend)
    if backend in ("gtk", "appindicator"):
        app.copy = _gtk_copy
    no_tray = threading.Event()

    def notify(msg: str) -> None:
        try:
            if icon.HAS_NOTIFICATION:
                icon.notify(msg, "LayerBridge")
        except Exception:
            log.debug("notification failed", exc_info=True)

    def refresh(state: State) -> None:
        icon.icon = draw_icon(state)
        icon.title = app.title()
        icon.update_menu()

    def setup(icon: Any) -> None:
        icon.visible = True
        app.supervisor.add_listener(refresh)
        refresh(app.state)
        end = time.monotonic() + embed_timeout_s
        while time.monotonic() < end and not app.quitting.is_set():
            embedded = _gtk_embedded(icon)
            if embedded is None or embedded:
                log.info("tray icon shown")
                return
            time.sleep(0.2)
        if not app.quitting.is_set():
            log.info("the icon did not dock in %.0f s: no status area; switching to the console", embed_timeout_s)
            no_tray.set()
            icon.visible = False
            icon.stop()

    app.notify = app.alert = notify
    app.on_quit = icon.stop
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame: app.quit())
    try:
        icon.run(setup)
    except Exception as e:
        log.exception("tray failed")
        if app.quitting.is_set():
            return True
        print(f"LayerBridge: tray failed ({e}); console mode", flush=True)
        return False
    finally:
        app.notify = app.alert = lambda msg: None
        app.on_quit = lambda: None
        if refresh in app.supervisor._listeners:
            app.supervisor._listeners.remove(refresh)
    return not no_tray.is_set()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The launcher's own flags; every other argument, and all after `--`, in order, in `serve_args`."""
    p = argparse.ArgumentParser(prog="layerbridge tray", allow_abbrev=False, description=(
        "Start the LayerBridge server with a tray icon (or in the console where there is no tray). "
        "Settings come from launcher.json in the config folder; these flags override them. "
        "Any other argument, and every argument after --, goes to `layerbridge serve`."))
    p.add_argument("--console", action="store_true", help="no tray icon: print the state changes")
    p.add_argument("--host", help="interface the server listens on")
    p.add_argument("--port", type=int, help="server port (0 picks a free one)")
    p.add_argument("--model", help="model id or local pipeline folder")
    p.add_argument("--no-load", action="store_true", help="do not load the model until the first job")
    p.add_argument("--tray-timeout", type=float, default=EMBED_TIMEOUT_S,
                   help="seconds to wait for the icon to dock before falling back to the console")
    argv = list(argv or [])
    after: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, after = argv[:cut], argv[cut + 1:]
    args, others = p.parse_known_args(argv)
    # The address and the model the launcher passes and watches itself: named after --, they are still its own.
    lift = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    lift.add_argument("--host")
    lift.add_argument("--port", type=int)
    lift.add_argument("--model")
    own, after = lift.parse_known_args(after)
    for name in ("host", "port", "model"):
        if getattr(args, name) is None and getattr(own, name) is not None:
            setattr(args, name, getattr(own, name))
    args.serve_args = others + after
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    settings = LaunchSettings.load()
    if args.host:
        settings.host = args.host
    if args.port is not None:
        settings.port = args.port
    if args.model:
        settings.model = args.model
    if args.no_load:
        settings.load_model = False
    settings.serve_args = list(settings.serve_args) + list(args.serve_args)
    logs = setup_logging()
    lock = InstanceLock()
    if not lock.acquire():
        say(running_instance_report(lock))
        lock.request_show()
        return 0
    log.info("launcher started (pid %s)", os.getpid())
    supervisor = Supervisor(settings, logs=logs)
    app = App(supervisor, lock)
    app.watch_show_requests()
    supervisor.run()
    supervisor.start()
    try:
        if args.console or not run_tray(app, args.tray_timeout):
            if not app.quitting.is_set():
                run_console(app)
    finally:
        supervisor.shutdown()
        log.info("launcher stopped")
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
