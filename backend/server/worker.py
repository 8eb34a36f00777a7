"""The job queue: one model worker thread, a FIFO with positions, cancel, progress fan-out, result retention; split
tasks (no model) on threads of their own beside it.

With `--cluster` the model runs on replicas instead (backend/cluster): the queue stays here and hands one job to
each replica at a time, so positions, `busy` and cancel mean what they mean in-process."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Protocol

import numpy as np

from ..model.engine import Engine, JobCancelled, ModelState, ModelStatus
from ..model.split_task import run_split
from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import Job, JobParams, JobResult, JobState, Progress, Stage
from .job_ids import RecentJobIds

log = logging.getLogger("layerbridge.worker")

# Failed and cancelled jobs hold no pixels: they do not count against max_results, and this many are kept at most.
ENDED_WITHOUT_RESULT_KEPT = 1000
# Split tasks run at once on threads of their own, never behind the model; beyond this many at a time they wait for a
# thread (still position 0: they are not in the model's queue).
SPLIT_THREADS = 2


class JobDispatcher(Protocol):
    """The model elsewhere (backend/cluster's ClusterEngine): `slots` jobs at once, each run by `run_job`."""

    slots: int
    model_status: ModelStatus

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status_json(self) -> dict[str, Any]: ...
    def first_progress(self, params: JobParams) -> Progress: ...
    def cancel_job(self, job_id: str) -> None: ...
    async def run_job(self, job: Job, on_progress: Callable[[Progress], None]) -> JobResult: ...


class Worker:
    """Owns every job. All public methods are called on the event loop; the model runs on one thread (or, given a
    JobDispatcher, on its replicas: one job per replica at a time)."""

    def __init__(self, engine: Engine | JobDispatcher, max_queue: int, result_ttl_s: float, max_results: int = 16,
                 max_result_bytes: int | None = None, job_ids: RecentJobIds | None = None):
        self.engine = engine
        self.dispatcher: JobDispatcher | None = engine if hasattr(engine, "run_job") else None
        self.max_queue = max_queue
        self.result_ttl_s = result_ttl_s
        self.max_results = max_results
        self.max_result_bytes = max_result_bytes
        self.job_ids = job_ids or RecentJobIds(None)
        self.jobs: dict[str, Job] = {}
        self.queue: collections.deque[str] = collections.deque()
        self.running_jobs: list[str] = []  # in the order they started; at most one in-process
        self._listeners: dict[str, set[asyncio.Queue]] = collections.defaultdict(set)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._load_task: asyncio.Future | None = None
        # One dedicated thread for the model: the GPU runs one job at a time, and CUDA state stays on one thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layerbridge-model")
        self._model_calls: set[Future] = set()  # submitted to the model thread and not yet returned
        self._split_executor = ThreadPoolExecutor(max_workers=SPLIT_THREADS, thread_name_prefix="layerbridge-split")
        self.splits: set[str] = set()  # split tasks not finished yet
        self._split_tasks: set[asyncio.Task] = set()
        self._job_tasks: set[asyncio.Task] = set()  # jobs running on a dispatcher's replicas

    @property
    def running(self) -> str | None:
        """The job that started first of those running (the only one, in-process)."""
        return self.running_jobs[0] if self.running_jobs else None

    @property
    def slots(self) -> int:
        return self.dispatcher.slots if self.dispatcher is not None else 1

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.dispatcher is not None:
            self.dispatcher.start()
        self._task = asyncio.create_task(self._serve())

    def end_jobs(self) -> None:
        """The server is stopping: every unfinished job fails with `server_stopped`, and its followers are told
        now, while their connections are still open. A running job is also asked to stop at its next step."""
        for job in [j for j in self.jobs.values() if not j.state.finished]:
            job.cancel_requested = True
            job.error = LayerBridgeError(
                ErrorCode.server_stopped, "the server was stopped before the job finished: start it and try again", job.id
            )
            self._finish(job, JobState.failed, Progress(Stage.failed, job.progress.step, job.progress.total, None, job.error.message))
        self.queue.clear()

    def model_busy(self) -> bool:
        """Whether the model thread is still in a call (a load, or a job before its next cancel check)."""
        return any(not f.done() for f in self._model_calls)

    def _in_model_thread(self, fn: Any, *args: Any) -> asyncio.Future:
        future = self._executor.submit(fn, *args)
        self._model_calls.add(future)
        future.add_done_callback(self._model_calls.discard)
        return asyncio.wrap_future(future)

    async def stop(self) -> None:
        for job_id in list(self.queue):
            self.cancel(job_id)
        for job_id in list(self.running_jobs):
            self.cancel(job_id)
        for job_id in list(self.splits):
            self.cancel(job_id)
        for task in list(self._split_tasks):
            task.cancel()
        if self.dispatcher is not None:
            for task in list(self._job_tasks):
                task.cancel()
            await asyncio.get_running_loop().run_in_executor(None, self.dispatcher.stop)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        close = getattr(self.engine, "close", None)
        if self.dispatcher is None and close is not None and not self.model_busy():
            await asyncio.get_running_loop().run_in_executor(None, close)  # a CFG partner process
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._split_executor.shutdown(wait=False, cancel_futures=True)

    def load_model(self) -> None:
        """Start loading the model in the background if nothing is loading it already (replicas load as they
        start)."""
        if self.dispatcher is not None:
            return
        if self._load_task is None or self._load_task.done():
            if self.engine.model_status.state not in (ModelState.ready,):
                self.engine.model_status = ModelStatus(ModelState.loading if self.engine.is_local else ModelState.downloading)
            self._load_task = self._in_model_thread(self._load_quietly)

    def _load_quietly(self) -> None:
        try:
            self.engine.load(warm_up=True)
        except LayerBridgeError as exc:
            log.error("model load failed: %s", exc.message)

    # ---- jobs ----------------------------------------------------------------------------------------------

    def submit(self, image: np.ndarray, params: JobParams, task: str = "decompose") -> Job:
        """Queue a decomposition for the model, or start a split task (`task` "split") at once beside it.

        Args:
            image: (h, w, 4) uint8 straight RGBA.
            params: parsed with JobParams.parse (decompose) or JobParams.parse_split (split).
            task: one of options.TASKS.
        """
        self._expire()
        if task == "split":
            return self._submit_split(image, params)
        if len(self.queue) >= self.max_queue:
            raise LayerBridgeError(
                ErrorCode.queue_full, f"{len(self.queue)} jobs are already waiting; try again when some have finished"
            )
        job = Job(params=params, image=image)
        self.jobs[job.id] = job
        self.job_ids.remember(job.id)
        self.queue.append(job.id)
        self._wake.set()
        self._publish(job)
        return job

    def _submit_split(self, image: np.ndarray, params: JobParams) -> Job:
        if len(self.splits) >= self.max_queue:
            raise LayerBridgeError(
                ErrorCode.queue_full, f"{len(self.splits)} splits are already running or waiting; try again when some have finished"
            )
        job = Job(params=params, image=image, task="split")
        job.progress = Progress(Stage.queued, message="Starting")
        self.jobs[job.id] = job
        self.job_ids.remember(job.id)
        self.splits.add(job.id)
        self._publish(job)
        task = asyncio.get_running_loop().create_task(self._run_split(job))
        self._split_tasks.add(task)
        task.add_done_callback(self._split_tasks.discard)
        return job

    def get(self, job_id: str) -> Job:
        self._expire()
        job = self.jobs.get(job_id)
        if job is None and self.job_ids.before_restart(job_id):
            raise LayerBridgeError(
                ErrorCode.server_stopped,
                f"job {job_id} was lost when the server stopped or restarted: it has no result; submit it again",
                job_id,
            )
        if job is None:
            raise LayerBridgeError(ErrorCode.not_found, f"no job {job_id!r} (unknown, or its result has expired)")
        return job

    def position(self, job: Job) -> int | None:
        if job.task == "split":
            return None if job.state.finished else 0
        if job.id in self.running_jobs:
            return 0
        try:
            return self.queue.index(job.id) + 1
        except ValueError:
            return None

    def state_json(self, job: Job) -> dict[str, Any]:
        return job.state_json(self.position(job))

    def expires_in(self, job: Job) -> float:
        if job.finished_at is None:
            return self.result_ttl_s
        return job.finished_at + self.result_ttl_s - time.monotonic()

    def cancel(self, job_id: str) -> Job:
        """Idempotent. A queued job ends at once; a running one within one denoising step."""
        job = self.get(job_id)
        if job.state.finished:
            return job
        job.cancel_requested = True
        if job.state == JobState.queued:
            try:
                self.queue.remove(job.id)
            except ValueError:
                pass
            self._finish(job, JobState.cancelled, Progress(Stage.cancelled, message="Cancelled"))
            self._publish_positions()
        else:
            job.progress = Progress(job.progress.stage, job.progress.step, job.progress.total, None, "Cancelling…")
            self._publish(job)
            if self.dispatcher is not None:
                self.dispatcher.cancel_job(job.id)
        return job

    def subscribe(self, job_id: str) -> asyncio.Queue:
        """A queue of this job's state objects, starting with the current one."""
        job = self.get(job_id)
        q: asyncio.Queue = asyncio.Queue()
        self._listeners[job_id].add(q)
        q.put_nowait(self.state_json(job))
        return q

    def unsubscribe(self, job_id: str, q: asyncio.Queue) -> None:
        self._listeners.get(job_id, set()).discard(q)

    def queue_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"length": len(self.queue), "running": self.running}
        if self.dispatcher is not None:
            data["running_jobs"] = list(self.running_jobs)
        return data

    # ---- internals -----------------------------------------------------------------------------------------

    def _publish(self, job: Job) -> None:
        state = self.state_json(job)
        for q in list(self._listeners.get(job.id, ())):
            q.put_nowait(state)

    def _publish_positions(self) -> None:
        for job_id in self.queue:
            self._publish(self.jobs[job_id])

    def _finish(self, job: Job, state: JobState, progress: Progress) -> None:
        if job.state.finished:
            return  # ended by end_jobs while its model call was still returning
        if job.id in self.running_jobs:
            self.running_jobs.remove(job.id)  # before publishing: a finished job has no position
        self.splits.discard(job.id)
        job.state = state
        job.progress = progress
        job.finished_at = time.monotonic()
        job.image = np.zeros((0, 0, 4), np.uint8)  # the upload is no longer needed
        self._publish(job)

    def _expire(self) -> None:
        now = time.monotonic()
        finished = sorted((j for j in self.jobs.values() if j.finished_at is not None), key=lambda j: j.finished_at)
        results = [j for j in finished if j.result is not None]
        ended = [j for j in finished if j.result is None]
        surplus = len(results) - self.max_results
        kept_bytes = 0
        for i, job in reversed(list(enumerate(results))):  # newest first: the bytes bound keeps the newest
            size = sum(layer.pixels.nbytes for layer in job.result.layers)
            over = self.max_result_bytes is not None and kept_bytes > 0 and kept_bytes + size > self.max_result_bytes
            if i < surplus or now - job.finished_at > self.result_ttl_s or over:
                self._forget(job)
            else:
                kept_bytes += size
        surplus = len(ended) - ENDED_WITHOUT_RESULT_KEPT
        for i, job in enumerate(ended):
            if i < surplus or now - job.finished_at > self.result_ttl_s:
                self._forget(job)

    def _forget(self, job: Job) -> None:
        del self.jobs[job.id]
        self._listeners.pop(job.id, None)

    async def _serve(self) -> None:
        while True:
            if not self.queue or len(self.running_jobs) >= self.slots:
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self.jobs[self.queue.popleft()]
            self.running_jobs.append(job.id)
            job.state = JobState.running
            job.started = time.monotonic()
            if self._load_task is not None and not self._load_task.done():
                # the model thread is still loading (or compiling in its warm-up job): say so, not "in the queue"
                job.progress = Progress(Stage.loading_model, message="Preparing the model")
            else:
                job.progress = self.engine.first_progress(job.params)
            self._publish(job)
            self._publish_positions()
            if self.dispatcher is None:
                await self._run(job)
            else:  # one job per replica: the next one starts as soon as a replica is free
                task = asyncio.create_task(self._run(job))
                self._job_tasks.add(task)
                task.add_done_callback(self._job_task_done)

    def _job_task_done(self, task: asyncio.Task) -> None:
        self._job_tasks.discard(task)
        self._wake.set()

    async def _run(self, job: Job) -> None:
        """Run one started job to its end: done, failed or cancelled."""

        if self.dispatcher is None:
            loop = asyncio.get_running_loop()
            call = self._in_model_thread(
                self.engine.run, job.image, job.params, lambda p: loop.call_soon_threadsafe(self._progress, job, p),
                lambda: job.cancel_requested,
            )
        else:
            call = self.dispatcher.run_job(job, lambda p: self._progress(job, p))
        try:
            await self._conclude(job, call)
        finally:
            if job.id in self.running_jobs:
                self.running_jobs.remove(job.id)

    async def _run_split(self, job: Job) -> None:
        """A split task: on a split thread as soon as one is free, its progress and end published as a job's."""
        loop = asyncio.get_running_loop()

        def started() -> None:
            if job.state == JobState.queued:
                job.state = JobState.running
                job.started = time.monotonic()
                self._publish(job)

        def on_progress(progress: Progress) -> None:
            loop.call_soon_threadsafe(self._progress, job, progress)

        def run() -> Any:
            if job.cancel_requested:  # cancelled while waiting for a thread
                raise JobCancelled()
            loop.call_soon_threadsafe(started)
            return run_split(job.image, job.params, on_progress, lambda: job.cancel_requested)

        await self._conclude(job, asyncio.wrap_future(self._split_executor.submit(run)))

    def _progress(self, job: Job, progress: Progress) -> None:
        """A running job's progress, published (on the event loop; a job that has ended keeps its last)."""
        if job.state == JobState.running:
            job.progress = progress
            self._publish(job)

    async def _conclude(self, job: Job, call: Any) -> None:
        """Awaits a job's run and ends the job by its outcome: done with its result, cancelled, or failed with a code."""
        try:
            result = await call
        except JobCancelled:
            self._finish(job, JobState.cancelled, Progress(Stage.cancelled, job.progress.step, job.progress.total, None, "Cancelled"))
        except asyncio.CancelledError:
            if job.task != "split" and self.dispatcher is None:
                raise  # the worker is stopping: its loop ends here
            self._finish(job, JobState.cancelled, Progress(Stage.cancelled, job.progress.step, job.progress.total, None, "Cancelled"))
        except LayerBridgeError as exc:
            exc.job = job.id
            job.error = exc
            self._finish(job, JobState.failed, Progress(Stage.failed, message=exc.message))
        except Exception as exc:  # a bug or an unexpected library error: the job fails, the server stays up
            log.exception("job %s failed", job.id)
            job.error = LayerBridgeError(ErrorCode.job_failed, f"the job failed: {type(exc).__name__}: {exc}", job.id)
            self._finish(job, JobState.failed, Progress(Stage.failed, message=job.error.message))
        else:
            if job.cancel_requested:
                self._finish(job, JobState.cancelled, Progress(Stage.cancelled, message="Cancelled"))
            else:
                started = job.started if job.started is not None else job.created
                result.timings = {"queued_s": started - job.created, **result.timings}
                job.result = result
                total = job.progress.total
                self._finish(job, JobState.done, Progress(Stage.done, total, total, 0.0, "Done"))
