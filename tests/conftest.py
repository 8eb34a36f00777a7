"""Fixtures every test file can use, and how the suite runs in parallel.

- `tiny_model` (session): the folder of the tiny random-weights pipeline (outputs noise; test structure, sizes,
  order and errors with it, never the quality of the noise).
- `engine` (session): one loaded tiny-model `Engine` with the default settings, for tests that run jobs in process.
  A test may change it only through `monkeypatch` (undone after the test) or in a `try/finally` that puts it back; a
  test that needs other settings, other load-time choices or changes it for good makes its own `Engine`.
- `live_server` (session): one real `layerbridge serve --preload` process on the tiny model, on a free loopback
  port, for tests that only talk to a server. It is shared: a test leaves it as it found it (its jobs ended, no
  queue left behind). A test that needs other server options, stops the server or patches it starts its own with
  `server_process.start_server`.
- `fp8_on_cpu`, `start_env`: see their docstrings.

`bash scripts/test.sh` runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup`): session fixtures are
made once per worker, and each test goes to whichever worker is free. Tests that must run in one process, in
order, because they share module-scoped fixtures or one resource (a Krita home, a desktop), carry
`pytest.mark.xdist_group("<name>")`: a group runs whole on one worker. Nothing may use a fixed port, display or
folder outside tmp_path: start servers with `--port 0 --port-file` (server_process does), Xvfb with `-displayfd` or
`xvfb-run -a`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from server_process import LAYERBRIDGE, REPO, LiveServer, start_server, stop_server


def pytest_configure(config: pytest.Config) -> None:
    # Several workers share the cores: one torch thread each (in the worker and in every process it starts: servers,
    # the command line, benchmarks), where two threads apiece on two cores would spin against each other.
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def ensure_tiny_model() -> Path:
    """Build the tiny pipeline once per checkout (through the CLI, as users do); env LAYERBRIDGE_TINY_MODEL overrides."""
    override = os.environ.get("LAYERBRIDGE_TINY_MODEL")
    if override:
        return Path(override)
    target = REPO / ".tiny-model"
    if (target / "model_index.json").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=REPO))
    subprocess.run([*LAYERBRIDGE, "make-tiny-model", str(tmp)], check=True, cwd=REPO, timeout=300)
    try:
        os.rename(tmp, target)
    except OSError:  # built concurrently by another process: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return ensure_tiny_model()


@pytest.fixture(scope="session")
def engine(tiny_model: Path) -> Any:
    """The tiny pipeline loaded once, as the server loads it (default settings: the CPU, float32)."""
    from backend.core.settings import Settings
    from backend.model.engine import Engine, ModelState

    e = Engine(Settings(model=str(tiny_model)))
    assert e.model_status.state == ModelState.not_loaded
    e.load()
    assert e.model_status.state == ModelState.ready
    return e


@pytest.fixture(scope="session")
def live_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tiny_model, tmp_path_factory.mktemp("server"), "--preload")
    yield server
    stop_server(server)


@pytest.fixture()
def fp8_on_cpu(monkeypatch):
    """torchao refuses FP8 without an FP8 GPU: the CPU stands in for one (quantising, and torch's CPU FP8 product)."""
    import importlib

    pytest.importorskip("torchao")
    for name in ("torchao.quantization.quant_api", "torchao.float8.inference"):
        module = importlib.import_module(name)
        if hasattr(module, "_check_hardware_support"):
            monkeypatch.setattr(module, "_check_hardware_support", lambda *a, **k: None)


@pytest.fixture()
def start_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh start of a server (or benchmark) process: the user cache folder empty, under
    tmp_path / "cache", and torch's compile cache folder left for the server to choose."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["LAYERBRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    return env
