"""One model replica: a Ray Serve deployment wrapping the in-process `Engine`, one job at a time, its progress
streamed back to the front as the job runs.

The replica loads the model as soon as it starts (each replica plans memory for the GPU Ray gave it, as
`layerbridge serve` does for its own), runs restoration and text reading next to the model (docs/team-server.md says
why), and reports its state to the registry. A job's stream is a sequence of events:
`("started", replica)`, then `("progress", Progress)`…, then one of `("result", JobResult)`, `("cancelled",)`,
`("error", code, message)`. Cancelling the stream (the front's cancel) stops the job within one denoising step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

import numpy as np
import ray
from ray import serve

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import JobParams
from ..core.settings import Settings
from ..model.engine import Engine, JobCancelled
from ..model.loading import quiet_libraries
from .registry import HEARTBEAT_S

log = logging.getLogger("layerbridge.replica")

DEPLOYMENT_NAME = "ModelReplica"


def _gpu() -> tuple[str | None, int]:
    """(the name of the GPU Ray gave this replica or None on the CPU, the GPUs of this machine in the cluster)."""
    try:
        import torch

        if torch.cuda.is_available():
            node = ray.get_runtime_context().get_node_id()
            gpus = next((n["Resources"].get("GPU", 1) for n in ray.nodes() if n["NodeID"] == node), 1)
            return torch.cuda.get_device_name(0), max(1, int(gpus))
    except Exception:  # a replica without a working CUDA runs on the CPU
        pass
    return None, 0


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=1, health_check_period_s=2, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=5)
class ModelReplica:
    """The model on one GPU (or the CPU), behind Ray Serve."""

    def __init__(self, settings: Settings, registry: Any):
        quiet_libraries()
        self.registry = registry
        self.engine = Engine(settings)
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id if context is not None else f"pid-{os.getpid()}"
        gpu, node_gpus = _gpu()
        if gpu is not None:
            # Ray gives the replica one CPU to schedule by; restoration and text reading use this machine's cores
            # shared among its GPUs' replicas.
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // node_gpus))
        self.info = {"id": self.replica_id, "host": socket.gethostname(), "pid": os.getpid(), "gpu": gpu,
                     "started": time.time()}
        # one thread for the model: loading and every job, so CUDA state stays on one thread (as in-process)
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layerbridge-replica")
        self._stopping = threading.Event()
        self._report(state="loading", job=None)
        self._model_thread.submit(self._load)
        threading.Thread(target=self._heartbeat, name="layerbridge-heartbeat", daemon=True).start()

    def _report(self, **fields: Any) -> None:
        try:
            model = self.engine.status_json()
        except Exception:  # the status is a nicety; it must never fail a job
            model = {}
        self.registry.update.remote(self.replica_id, {**self.info, **fields, "status": model})

    def _heartbeat(self) -> None:
        while not self._stopping.wait(HEARTBEAT_S):
            self.registry.update.remote(self.replica_id, {})

    def _load(self) -> None:
        try:
            self.engine.load(warm_up=True)
        except LayerBridgeError as exc:
            log.error("model load failed: %s", exc.message)
            self._report(state="failed", job=None)
        else:
            self._report(state="ready", job=None)

    def check_health(self) -> None:
        """Serve's health check: a replica whose model failed to load is still healthy (it answers every job with
        model_unavailable, as the in-process server does); only a dead process is not."""

    async def run(self, job_id: str, image: np.ndarray, params: JobParams) -> AsyncIterator[tuple]:
        """Run one job, streaming its events (see the module's docstring)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def on_progress(progress: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("progress", progress))

        def work() -> tuple:
            try:
                return ("result", self.engine.run(image, params, on_progress, cancel.is_set))
            except JobCancelled:
                return ("cancelled",)
            except LayerBridgeError as exc:
                return ("error", exc.code.value, exc.message)
            except Exception as exc:  # a bug or an unexpected library error: this job fails, the replica serves on
                log.exception("job %s failed", job_id)
                return ("error", ErrorCode.job_failed.value, f"the job failed: {type(exc).__name__}: {exc}")

        self._report(state="busy", job=job_id)
        outcome = loop.run_in_executor(self._model_thread, work)
        outcome.add_done_callback(lambda _: events.put_nowait(("end",)))
        try:
            yield ("started", self.info)
            while True:
                event = await events.get()
                if event[0] == "end":
                    yield outcome.result()
                    return
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            # the front cancelled the job: the engine stops at its next step; the replica takes no other job before
            cancel.set()
            await asyncio.shield(outcome)
            raise
        finally:
            self._report(state="ready" if self.engine.model_status.state.value == "ready" else "failed",
                         job=None, last_job=job_id, last_outcome="cancelled" if cancel.is_set() else "ended")

    def __del__(self) -> None:
        self._stopping.set()
