"""The ids of recent jobs, kept in a small file (no pixels), so that a restarted server can answer `server_stopped`
for a job of an earlier run instead of `not_found` (docs/protocol.md §2)."""

from __future__ import annotations

import collections
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("layerbridge.worker")

JOB_IDS_FILE = "recent-jobs.json"
KEPT = 1000  # ids remembered at most, the newest


class RecentJobIds:
    """Job ids remembered across restarts.

    Args:
        path: the file; None remembers nothing (a server made for a test, or a tool).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.ids: collections.deque[str] = collections.deque(maxlen=KEPT)
        if path is not None:
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                self.ids.extend(i for i in stored.get("jobs", []) if isinstance(i, str))
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("cannot read the ids of earlier jobs from %s: %s", path, exc)
        self.earlier_runs = frozenset(self.ids)
        self._warned = False

    def before_restart(self, job_id: str) -> bool:
        """Whether the job was submitted to an earlier run of the server."""
        return job_id in self.earlier_runs

    def remember(self, job_id: str) -> None:
        if self.path is None:
            return
        self.ids.append(job_id)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"jobs": list(self.ids)}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot remember job ids in %s (a restart will call them unknown): %s", self.path, exc)
                self._warned = True
