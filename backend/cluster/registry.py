"""What each model replica reports about itself (host, GPU, state, current job), kept by one small Ray actor.

A replica serves one job at a time (`max_ongoing_requests=1`), so it cannot also answer status calls while it works:
instead it tells the registry whenever its state changes, and every few seconds that it is alive. The front reads
one snapshot per `/v1/status`.
"""

from __future__ import annotations

import time
from typing import Any

import ray

# a replica says it is alive this often; one silent for LOST_AFTER_S is listed as lost, and dropped after FORGET_AFTER_S
HEARTBEAT_S = 2.0
LOST_AFTER_S = 10.0
FORGET_AFTER_S = 120.0


@ray.remote(num_cpus=0, max_concurrency=16)
class ReplicaRegistry:
    """replica id → what it last said (plus `seen`, the time it last spoke)."""

    def __init__(self) -> None:
        self.replicas: dict[str, dict[str, Any]] = {}

    def update(self, replica_id: str, fields: dict[str, Any]) -> None:
        entry = self.replicas.setdefault(replica_id, {"id": replica_id})
        entry.update(fields)
        entry["seen"] = time.time()

    def lost(self, replica_id: str) -> None:
        """The front saw this replica die (its job's stream broke): listed as lost until it is forgotten."""
        if replica_id in self.replicas:
            self.replicas[replica_id].update(state="lost", job=None, lost=True)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.time()
        listed = []
        for replica_id, entry in list(self.replicas.items()):
            silent = now - entry["seen"]
            if silent > FORGET_AFTER_S or (entry.get("lost") and silent > LOST_AFTER_S):
                del self.replicas[replica_id]
                continue
            item = dict(entry)
            if silent > LOST_AFTER_S:
                item.update(state="lost", job=None)
            listed.append(item)
        return sorted(listed, key=lambda e: (e.get("host", ""), e.get("started", 0.0)))
