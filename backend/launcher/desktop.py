"""Desktop actions: open a file or folder, copy text, and start the launcher with the system (autostart)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from .config import repo_root


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
