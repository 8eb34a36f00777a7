"""Fixtures of the tray tests: a shared desktop per module and launchers that leave no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest

from tray_desktop import Desktop, Launcher, desktop_missing, tagged_processes


@pytest.fixture(scope="module")
def desktop():
    why = desktop_missing()
    if why:
        pytest.skip(why)
    d = Desktop()
    try:
        yield d
    finally:
        d.close()
    left = tagged_processes(d.tag)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"desktop processes left behind: {left}"


@pytest.fixture
def run_launcher(tmp_path):
    started: list[Launcher] = []

    def run(env: dict[str, str], *args: str, stdin: Any = subprocess.DEVNULL) -> Launcher:
        root = tmp_path / f"launcher{len(started)}"
        root.mkdir()
        launcher = Launcher(root, env, list(args), stdin)
        started.append(launcher)
        return launcher

    yield run
    for launcher in started:
        launcher.close()
    leftover = {launcher.root.name: launcher.leftovers() for launcher in started}
    assert not any(leftover.values()), f"processes left behind: {leftover}"


@pytest.fixture
def model_args(tiny_model) -> list[str]:
    return ["--model", str(tiny_model)]
