"""The launcher's view of the server: a state kind with its words, and how a GET /v1/status answer maps to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# State kinds, in the order a start goes through them.
STOPPED = "stopped"
STARTING = "starting"
NOT_DOWNLOADED = "not_downloaded"
NOT_LOADED = "not_loaded"
DOWNLOADING = "downloading"
LOADING = "loading"
READY = "ready"
BUSY = "busy"
STOPPING = "stopping"
ERROR = "error"
RUNNING_KINDS = (STARTING, NOT_DOWNLOADED, NOT_LOADED, DOWNLOADING, LOADING, READY, BUSY)


@dataclass(frozen=True)
class State:
    kind: str
    percent: int | None = None
    queue: int = 0
    message: str = ""

    def words(self) -> str:
        if self.kind == DOWNLOADING:
            return f"Downloading the model ({self.percent}%)" if self.percent is not None else "Downloading the model"
        text = {
            STOPPED: "Server stopped",
            STARTING: "Starting the server",
            NOT_DOWNLOADED: "Model not downloaded",
            NOT_LOADED: "Idle (model loads on the first job)",
            LOADING: "Loading the model",
            READY: "Ready",
            BUSY: f"Busy ({self.queue} job{'s' if self.queue != 1 else ''})",
            STOPPING: "Stopping the server",
            ERROR: "Error",
        }[self.kind]
        return f"{text}: {self.message}" if self.message and self.kind in (ERROR, NOT_DOWNLOADED) else text

    @property
    def running(self) -> bool:
        return self.kind in RUNNING_KINDS


def state_from_status(status: dict[str, Any]) -> State:
    """Maps a GET /v1/status answer to a launcher state."""
    model = status.get("model") or {}
    q = status.get("queue") or {}
    # `length` counts the jobs waiting; the running one is not among them
    jobs = int(q.get("length") or 0) + (1 if q.get("running") else 0)
    mstate = model.get("state")
    if mstate == "failed":
        return State(ERROR, message=str(model.get("error") or "the model could not be loaded"))
    if jobs and mstate in ("ready", "loading", "not_loaded", "downloading"):
        return State(BUSY, queue=jobs)
    if mstate == "ready":
        return State(READY)
    if mstate == "loading":
        return State(LOADING)
    if mstate == "downloading":
        done, total = model.get("bytes_done"), model.get("bytes_total")
        percent = int(100 * done / total) if isinstance(done, (int, float)) and total else None
        return State(DOWNLOADING, percent=None if percent is None else max(0, min(100, percent)))
    if model.get("downloaded") is False:
        return State(NOT_DOWNLOADED)
    return State(NOT_LOADED)
