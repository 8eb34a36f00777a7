"""The plugin's network client under plain PyQt5 and PyQt6 (no Krita), against the live server.

PyQt5 comes with Debian's python3-pyqt5; a PyQt6 interpreter is used when $LB_PYQT6_PYTHON names one."""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent
PLUGIN = HERE.parents[1] / "krita_plugin"


def interpreters():
    found = []
    system = shutil.which("python3", path="/usr/bin")
    if system:
        found.append(pytest.param(system, "PyQt5", id="PyQt5"))
    found.append(pytest.param(os.environ.get("LB_PYQT6_PYTHON", ""), "PyQt6", id="PyQt6"))
    return found


@pytest.mark.parametrize("python,binding", interpreters())
def test_job_and_status_through_qt_networking(python, binding, live_server):
    if not python or subprocess.run([python, "-c", "import %s.QtNetwork" % binding],
                                    capture_output=True).returncode:
        pytest.skip("no %s interpreter" % binding)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run([python, str(HERE / "kscripts" / "lb_qtclient.py"), str(PLUGIN), live_server.url,
                           live_server.token, binding], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["qt6"] == (binding == "PyQt6")
    assert out["ok"], out
    assert out["names"] == ["Background", "Layer 1"] and out["sizes"] == {"0": 24 * 16 * 4, "1": 24 * 16 * 4}
    assert any("Separating layers" in p for p in out["progress"])
    assert out["status"][0] in ("ready", "busy")
    assert "device not open" not in proc.stderr
