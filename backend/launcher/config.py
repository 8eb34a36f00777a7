"""What the launcher starts (`<config dir>/launcher.json`), where the server's token is, and where the project is."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..core.settings import DEFAULT_PORT, config_dir

log = logging.getLogger("layerbridge.launcher")

SETTINGS_FILE = "launcher.json"


@dataclass
class LaunchSettings:
    """What the launcher starts: `<config dir>/launcher.json`, then command-line flags on top."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model: str | None = None
    serve_args: list[str] = field(default_factory=list)
    load_model: bool = True
    start_timeout_s: float = 600.0
    # A server that crashes after it was up is started again after 2, 4, 8 … s (at most max_restarts times in a
    # row); one that never came up is not: its error (a taken port, a wrong model path) would only repeat.
    restart_on_crash: bool = True
    restart_backoff_s: float = 2.0
    restart_backoff_max_s: float = 60.0
    max_restarts: int = 5
    stable_after_s: float = 120.0

    @classmethod
    def load(cls, path: Path | None = None) -> "LaunchSettings":
        path = path or config_dir() / SETTINGS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            log.warning("ignoring %s: %s", path, e)
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def serve_argv(self, port_file: Path | None) -> list[str]:
        argv = ["serve", "--host", self.host, "--port", str(self.port)]
        if self.model:
            argv += ["--model", self.model]
        if port_file is not None:
            argv += ["--port-file", str(port_file)]
        return argv + list(self.serve_args)


def token_path() -> Path:
    return config_dir() / "token"


def read_token() -> str | None:
    try:
        return token_path().read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def repo_root() -> Path:
    """The project folder (the one holding backend/, krita_plugin/, scripts/, README.md)."""
    return Path(__file__).resolve().parents[2]
