"""The launcher's own log and the server's output, each rotated in the log folder."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from ..core.settings import log_dir

LOG_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3


def setup_logging(directory: Path | None = None) -> Path:
    """Launcher log: `<log dir>/launcher.log`, rotated. Returns the log folder."""
    directory = directory or log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("layerbridge.launcher")
    if not any(getattr(h, "_layerbridge", False) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(
            directory / "launcher.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler._layerbridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return directory


def server_logger(directory: Path) -> logging.Logger:
    """The server's output, rotated into `<directory>/server.log` (a logger of its own per supervisor, outside
    the logging tree, so that each writes where it was told)."""
    logger = logging.Logger("layerbridge.launcher.server", logging.INFO)  # noqa: LOG001 (outside the tree on purpose)
    handler = logging.handlers.RotatingFileHandler(
        directory / "server.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger
