"""Shared fixtures: the tiny real pipeline and a real server process on a loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from server_process import LAYERBRIDGE, REPO, LiveServer, start_server, stop_server


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
