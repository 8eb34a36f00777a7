"""Installs the Krita plugin into Krita's pykrita folder and enables it in kritarc."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .config import repo_root


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
