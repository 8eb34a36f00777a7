"""Krita test harness: the plugin as installed from its zip, Krita run as a subprocess with its own HOME.
Fixtures are exposed by conftest.py; tests import the helpers from here."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import zipfile

try:
    import fcntl
except ImportError:        # not on Windows
    fcntl = None

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
SHARED = ROOT / ".test-home"     # Krita homes kept between runs: its resource cache takes ~8 s to build

needs_krita = pytest.mark.skipif(shutil.which("kritarunner") is None, reason="Krita is not installed")


def krita_env(home: pathlib.Path, **extra: str) -> dict:
    env = dict(os.environ)
    for key in ("PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(key, None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_RUNTIME_DIR=str(home / "run"))
    (home / "run").mkdir(parents=True, exist_ok=True)
    os.chmod(home / "run", 0o700)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def krita_homes(tmp_path_factory) -> pathlib.Path:
    """The folder holding the Krita homes (`krita`, `krita-gui`): the shared one under .test-home when this
    session gets its lock, else a fresh one (another test session is using Krita at the same time)."""
    SHARED.mkdir(parents=True, exist_ok=True)
    lock = open(SHARED / "krita.lock", "w")
    try:
        if fcntl is None:
            raise OSError
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield SHARED
    except OSError:
        yield tmp_path_factory.mktemp("krita_homes")
    finally:
        lock.close()


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> pathlib.Path:
    """The plugin extracted from the zip that scripts/build_krita_zip.py makes."""
    dest = tmp_path_factory.mktemp("krita_zip")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_krita_zip.py"), "--dest", str(dest)],
                         capture_output=True, text=True, check=True).stdout.strip()
    install_zip(pathlib.Path(out), dest)
    return dest / "pykrita"


def krita_importer() -> "pathlib.Path | None":
    """Krita's own "Import Python Plugin from File…" logic, where Krita is installed."""
    for base in ("/usr/share/krita", "/usr/local/share/krita", "/app/share/krita"):
        path = pathlib.Path(base) / "pykrita" / "plugin_importer" / "plugin_importer.py"
        if path.is_file():
            return path
    return None


def install_zip(zip_path: pathlib.Path, resources: pathlib.Path) -> str:
    """Installs the zip into resources/pykrita as Krita's importer does (or by extraction without Krita)."""
    importer = krita_importer()
    if importer is None:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(resources / "pykrita")
        return "extracted"
    proc = subprocess.run([sys.executable, str(importer), str(zip_path), str(resources)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Imported plugin: LayerBridge" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)


def run_to_results(cmd: list, env: dict, log_path: pathlib.Path, results: pathlib.Path, timeout: float) -> dict:
    """Run a Krita process until it exits or times out, end it by its PID, and return its results file."""
    if results.exists():
        results.unlink()
    timed_out = False
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            seconds = time.monotonic() - start
            stop(proc)
    if not results.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise AssertionError("Krita wrote no results (exit %s). Log tail:\n%s" % (proc.returncode, tail))
    data = json.loads(results.read_text())
    # how Krita ended: its exit status (negative: a signal), and whether it had to be stopped
    data["_exit"] = {"code": proc.returncode, "timed_out": timed_out, "seconds": round(seconds, 1)}
    return data


class Runner:
    def __init__(self, plugin: pathlib.Path, work: pathlib.Path, home: pathlib.Path) -> None:
        self.plugin = plugin
        self.work = work
        self.home = home

    def run(self, scenarios: list, timeout: float = 240, **env: str) -> dict:
        """Runs kritarunner on tests/krita/kscripts/lb_headless.py; returns its results."""
        name = "_".join(scenarios)
        results = self.work / ("results_%s.json" % name)
        e = krita_env(self.home, PYTHONPATH=os.pathsep.join([str(HERE / "kscripts"), str(self.plugin)]),
                      QT_QPA_PLATFORM="offscreen", LB_RESULTS=str(results), LB_WORKDIR=str(self.work), **env)
        data = run_to_results(["kritarunner", "-s", "lb_headless", "-f", "main", *scenarios], e,
                              self.work / ("krita_%s.log" % name), results, timeout)
        assert not data.get("errors"), data.get("errors")
        return data


@pytest.fixture(scope="session")
def krita(plugin_dir, krita_homes, tmp_path_factory) -> Runner:
    if shutil.which("kritarunner") is None:
        pytest.skip("Krita is not installed")
    home = krita_homes / "krita"
    home.mkdir(parents=True, exist_ok=True)
    return Runner(plugin_dir, tmp_path_factory.mktemp("krita_work"), home)
