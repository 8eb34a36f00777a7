"""Runs a Krita script on files in a real Krita (kritarunner, offscreen): how the export tests see what Krita reads."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def read_in_krita(script: str, files: list[Path], tmp_path: Path) -> dict:
    """Runs `script` (a module with `main(args)` that reads the paths in KR_FILES and writes its JSON to KR_RESULTS)
    in kritarunner with a fresh home, outside the test's venv; returns what it wrote."""
    scripts, home, results = tmp_path / "scripts", tmp_path / "home", tmp_path / "results.json"
    scripts.mkdir()
    (scripts / "kread.py").write_text(script)
    (home / "run").mkdir(parents=True)
    os.chmod(home / "run", 0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONPATH")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_RUNTIME_DIR=str(home / "run"), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=str(scripts), KR_FILES=os.pathsep.join(map(str, files)), KR_RESULTS=str(results))
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    proc = subprocess.Popen(["kritarunner", "-s", "kread", "-f", "main"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log = proc.communicate(timeout=240)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        log = proc.communicate()[0].decode(errors="replace")
    assert results.is_file(), log[-3000:]
    return json.loads(results.read_text())
