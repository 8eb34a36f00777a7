"""A server started by the launcher lives and dies with it: the environment the two agree on, and the child's side.

The launcher starts the server as a command (`python -m backend serve ...`), never by importing it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PARENT_ENV = "LAYERBRIDGE_PARENT_PID"  # the launcher's process id: the server ends when that process goes
# The launcher writes all the server prints to its own rotated server.log: the server's file handler on that file would
# write every line twice, and two processes would rotate one file.
LOG_TO_CONSOLE_ENV = "LAYERBRIDGE_LOG_TO_CONSOLE"


def tie_to_launcher() -> None:
    """Where the launcher started this process, end it when the launcher goes, however it goes."""
    parent = os.environ.pop(PARENT_ENV, "")
    if parent:
        die_with_parent(int(parent))


def log_to_console_only() -> bool:
    return bool(os.environ.get(LOG_TO_CONSOLE_ENV))


def die_with_parent(parent: int) -> None:
    """Child side: end this process when the launcher goes, however it goes."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.name == "nt" or not parent:
        return  # Windows: the launcher's job object does it
    if os.getppid() != parent:
        os._exit(1)  # the launcher died before the signal was armed

    def watch() -> None:
        # macOS has no parent-death signal; on Linux this also covers a server that ignores SIGTERM.
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
