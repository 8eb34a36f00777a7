"""The Krita docker's network client (krita_plugin/layerbridge) outside Krita, under plain PyQt5 (Krita 5) or PyQt6
(Krita 6), against a running server: tests/krita/kscripts/lb_qtclient.py in a process of its own.

PyQt5 comes with Debian's python3-pyqt5; PyQt6 from PyPI, in .venv-qt6 (scripts/setup.sh --test), or the
interpreter $LB_PYQT6_PYTHON names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "krita_plugin"
CLIENT = ROOT / "tests" / "krita" / "kscripts" / "lb_qtclient.py"


def interpreter(binding: str) -> str:
    """A Python that imports `binding` ("PyQt5" or "PyQt6") with its QtNetwork; fails the test where there is none."""
    if binding == "PyQt5":
        python = shutil.which("python3", path="/usr/bin") or ""
    else:
        python = os.environ.get("LB_PYQT6_PYTHON") or str(ROOT / ".venv-qt6" / "bin" / "python")
    found = os.path.exists(python) and not subprocess.run(
        [python, "-c", "import %s.QtNetwork" % binding], capture_output=True).returncode
    assert found, "no %s interpreter (%r): run scripts/setup.sh --test" % (binding, python)
    return python


def _command(binding: str, url: str, token: str, extra: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return [interpreter(binding), str(CLIENT), str(PLUGIN), url, token, binding, *extra], env


def start_client(binding: str, url: str, token: str, *extra: str) -> subprocess.Popen:
    """Starts the client against the server at `url` (`extra`: lb_qtclient.py's further arguments); its stdout is a
    text pipe the test reads line by line."""
    command, env = _command(binding, url, token, extra)
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def run_client(binding: str, url: str, token: str, *extra: str, timeout: float = 180) -> dict:
    """Runs the client to its end against the server at `url` and returns what it printed last, parsed: the job's
    layers, progress lines and status."""
    command, env = _command(binding, url, token, extra)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "device not open" not in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["qt6"] == (binding == "PyQt6")
    return out
