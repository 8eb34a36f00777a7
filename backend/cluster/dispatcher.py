"""The front's side of the cluster: starts or joins Ray, deploys the model replicas, and runs each job the server's
worker hands it on a free replica, relaying its progress, its cancel and its end.

The worker keeps its own queue (positions, `queue_full`, cancel of waiting jobs) and hands over at most one job per
replica: with `max_ongoing_requests=1`, Serve routes each to a replica that is free, in the order they were handed
over. A replica that dies under a job (its process killed, its machine gone) breaks that job's stream: the job runs
again once, on a replica that is alive, and fails with `worker_lost` if that one dies too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import ray
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import RequestCancelledError

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import Job, JobResult, Progress, Stage
from ..core.options import PRESETS
from ..core.settings import CLUSTER_AUTO, CLUSTER_LOCAL, Settings
from ..model.device import visible_gpus
from ..model.engine import JobCancelled, ModelState, ModelStatus
from ..model.presets import resolve_preset
from .registry import ReplicaRegistry

log = logging.getLogger("layerbridge.cluster")

APP_NAME = "layerbridge"
# a job whose stream broke before any replica said "started" was never run: it is sent again, this many times at most
UNSTARTED_RESENDS = 5
# the order in which replicas' model states stand for the cluster's: the most useful one a replica has
MODEL_STATE_RANK = {"ready": 0, "loading": 1, "downloading": 2, "not_loaded": 3, "failed": 4}
REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError)


def worker_lost_error(job_id: str) -> LayerBridgeError:
    return LayerBridgeError(
        ErrorCode.worker_lost,
        "the model replica running the job was lost twice (its process or machine went away): submit it again",
        job_id,
    )


class ClusterEngine:
    """Stands where the in-process `Engine` stands for the server's worker: status, and jobs run on replicas.

    Args:
        settings: the server's settings (`cluster`, `replicas`, `cfg_parallel`; the model settings go to every
            replica).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model_status = ModelStatus(ModelState.loading)
        self.slots = max(1, settings.replicas)  # jobs handed over at once: one per replica (known once started)
        self.error: str | None = None
        self._handle: Any = None
        self._registry: Any = None
        self._ready: asyncio.Future | None = None
        self._streams: dict[str, Any] = {}  # job id → its response stream, while it runs on a replica
        self._replica_of: dict[str, str] = {}  # job id → the replica running it (once it said "started")
        self._started_ray = False

    # ---- the engine's face for the worker ------------------------------------------------------------------

    def first_progress(self, params: Any) -> Progress:
        if self._handle is None:
            return Progress(Stage.loading_model, message="Starting the model replicas")
        return Progress(Stage.loading_model, message="Starting on a model replica")

    def status_json(self) -> dict[str, Any]:
        """The in-process status's keys, for the best replica, plus `replicas` (each one's host, GPU, state, job)."""
        replicas = self._snapshot()
        statuses = [r["status"] for r in replicas if r.get("status") and r.get("state") != "lost"]
        best = min(statuses, key=lambda s: MODEL_STATE_RANK.get(s["model"]["state"], 9), default=None)
        if best is None:
            state = ModelState.failed.value if self.error else ModelState.loading.value
            best = {
                "model": {"id": self.settings.model, "transformer_file": self.settings.transformer_file, "state": state,
                          "downloaded": False, "bytes_done": 0, "bytes_total": 0, "error": self.error},
                "device": {"kind": "cluster", "name": "no replica yet", "vram_total": 0, "vram_free": 0},
                "memory_mode": None,
                "attention": "native",
                "preset_default": self.settings.preset,
                "presets": {name: spec.summary for name, spec in PRESETS.items()},
            }
        job_on = {replica: job for job, replica in self._replica_of.items()}  # what the front knows runs where
        listed = []
        for r in replicas:
            job = job_on.get(r["id"], r.get("job"))
            state = r.get("state", "loading")
            if state == "ready" and job:
                state = "busy"
            listed.append({"id": r["id"], "host": r.get("host"), "gpu": r.get("gpu"), "pid": r.get("pid"),
                           "state": state, "job": job if state == "busy" else None})
        return {**best, "replicas": listed,
                "cluster": {"address": self.settings.cluster, "replicas": self.slots, "error": self.error}}

    def _snapshot(self) -> list[dict[str, Any]]:
        if self._registry is None:
            return []
        try:
            return ray.get(self._registry.snapshot.remote(), timeout=5)
        except Exception as exc:  # the status must answer even while Ray does not
            log.warning("replica registry did not answer: %s", exc)
            return []

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start or join Ray and deploy the replicas, in the background: the server answers meanwhile."""
        loop = asyncio.get_running_loop()
        self._ready = loop.run_in_executor(None, self._start)
        self._ready.add_done_callback(self._started)

    def _started(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.error = f"the cluster could not start: {type(exc).__name__}: {exc}"
            self.model_status = ModelStatus(ModelState.failed, error=self.error)
            log.error("%s", self.error)
        else:
            log.info("%d model replica(s) deployed through Ray Serve (%s)", self.slots, self.settings.cluster)

    def _start(self) -> None:
        from .replica import ModelReplica  # imports the model stack's Ray side only now

        address = self.settings.cluster
        per_replica = 2 if self.settings.cfg_parallel else 1  # GPUs
        if address == CLUSTER_LOCAL:
            gpus = len(visible_gpus())
            replicas = self.settings.replicas or max(1, gpus // per_replica)
            # a CPU-only machine runs CPU replicas (the tiny test model): one CPU each
            ray.init(address="local", num_cpus=None if gpus else max(replicas, 1), num_gpus=gpus,
                     include_dashboard=False, namespace=APP_NAME, configure_logging=False)
        else:
            ray.init(address=address if address != CLUSTER_AUTO else "auto", namespace=APP_NAME,
                     configure_logging=False)
            gpus = int(ray.cluster_resources().get("GPU", 0))
            replicas = self.settings.replicas or max(1, gpus // per_replica)
        self._started_ray = True
        self.slots = replicas
        actor_options = {"num_gpus": per_replica, "num_cpus": 1} if gpus else {"num_cpus": 1}
        self._registry = ReplicaRegistry.remote()
        replica_settings = Settings(**{**vars(self.settings), "cluster": None, "replicas": 0, "preload": True})
        serve.start(proxy_location="Disabled")
        app = ModelReplica.options(num_replicas=replicas, ray_actor_options=actor_options).bind(
            replica_settings, self._registry)
        self._handle = serve.run(app, name=APP_NAME, route_prefix=None)
        self.model_status = ModelStatus(ModelState.ready)

    def stop(self) -> None:
        """Remove the replicas; leave Ray (and stop it when it was started here). Blocks for seconds: call it off the
        event loop."""
        for stream in list(self._streams.values()):
            stream.cancel()
        if not self._started_ray:
            return
        try:
            if self.settings.cluster == CLUSTER_LOCAL:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        except Exception as exc:  # stopping goes on whatever Serve says
            log.warning("stopping the replicas: %s", exc)
        ray.shutdown()

    # ---- jobs ----------------------------------------------------------------------------------------------

    def cancel_job(self, job_id: str) -> None:
        """Ask the job's replica to stop it (within one denoising step); `run_job` then raises JobCancelled."""
        stream = self._streams.get(job_id)
        if stream is not None:
            stream.cancel()

    async def run_job(self, job: Job, on_progress: Callable[[Progress], None]) -> JobResult:
        """Run `job` on a free replica; its progress goes to `on_progress` (called on the event loop).

        Raises JobCancelled, or LayerBridgeError (the replica's own error, model_unavailable when the cluster did
        not start, worker_lost when two replicas died under the job).
        """
        assert self._ready is not None, "start() first"
        try:
            await asyncio.shield(self._ready)
        except Exception:
            raise LayerBridgeError(ErrorCode.model_unavailable, self.error or "the cluster could not start", job.id)
        lost = resends = 0
        while True:
            if job.cancel_requested:
                raise JobCancelled()
            replica: str | None = None
            stream = self._handle.options(stream=True).run.remote(job.id, job.image, job.params)
            self._streams[job.id] = stream
            try:
                async for event in stream:
                    kind = event[0]
                    if kind == "started":
                        replica = event[1]["id"]
                        self._replica_of[job.id] = replica
                        log.info("job %s runs on replica %s (%s, %s)", job.id, replica, event[1]["host"],
                                 event[1]["gpu"] or "CPU")
                    elif kind == "progress":
                        on_progress(event[1])
                    elif kind == "result":
                        return event[1]
                    elif kind == "cancelled":
                        raise JobCancelled()
                    elif kind == "error":
                        raise LayerBridgeError(ErrorCode(event[1]), event[2], job.id)
                raise LayerBridgeError(ErrorCode.job_failed, "the replica ended the job without a result", job.id)
            except RequestCancelledError:
                raise JobCancelled()
            except REPLICA_LOST as exc:
                if job.cancel_requested:
                    raise JobCancelled()
                if replica is None and resends < UNSTARTED_RESENDS:
                    resends += 1  # routed to a replica that had just died, before it started the job
                    await asyncio.sleep(0.2 * resends)
                    continue
                lost += 1
                if replica is not None:
                    self._registry.lost.remote(replica)
                log.warning("job %s: replica %s was lost (%s)", job.id, replica, type(exc).__name__)
                if lost > 1:
                    raise worker_lost_error(job.id) from exc
                on_progress(Progress(Stage.loading_model, 0, resolve_preset(job.params).steps, None,
                                     "The model replica was lost: running the job again on another"))
            finally:
                self._streams.pop(job.id, None)
                self._replica_of.pop(job.id, None)

