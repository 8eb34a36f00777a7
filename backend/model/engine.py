"""The engine: one job on the loaded model, from the source picture to finished layers, with progress, the time left and
cancel. Loading lives in loading.py, captioning in captioning.py; `Engine` is the class the server and the command line
use."""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any, Callable

import numpy as np

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import JobParams, JobResult, Progress, Stage
from ..core.settings import Settings
from ..imaging.finish import finish_layers
from ..text.layers import read_layers_text
from .captioning import Captioning
from .cfg_parallel import CfgJob, CfgSplit, Partner, PartnerLeft, init_group, receive_job, send_job
from .inputs import model_input
from .job_hooks import CancelCheck, JobCancelled, ProgressCallback, raise_if_cancelled
from .loading import ModelLoading, ModelState, ModelStatus
from .naming import name_layers, plain_names
from .plan import STREAMED, smaller_mode_advice
from .presets import resolve_preset
from .split_task import SPLITTING, split_job_layers

log = logging.getLogger("layerbridge.engine")

# The warm-up job after a load where the transformer is compiled: the default size and layer count.
WARM_UP_SIZE = 640
WARM_UP_JOB = {"layers": 4, "resolution": 640, "steps": 2, "seed": 0, "prompt": "", "restore": False, "name_layers": False}


def step_work(layers: int, resolution: int) -> int:
    """What one denoising step costs, up to a constant, for the pace of one job to estimate another's: the
    transformer reads the output layers, the composite and the input picture, each resolution² pixels."""
    return (layers + 2) * resolution * resolution


class Engine(ModelLoading, Captioning):
    """Owns the pipeline. `run` is called from one worker thread at a time; `status` from anywhere."""

    def __init__(self, settings: Settings):
        ModelLoading.__init__(self, settings)
        Captioning.__init__(self)
        self._step_seconds: float | None = None
        self._step_work = 0  # the work of one step of the job _step_seconds was measured on (step_work)
        self._decode_seconds: float | None = None
        self._finish_seconds: float | None = None
        self._name_seconds: float | None = None
        self._naming = False  # whether the running job names its layers
        self._reading_text, self._text_seconds = False, None  # whether it reads their text; how long that last took
        self._splitting, self._split_seconds = False, None  # whether it splits them into elements; how long that took
        self.last_latents: Any = None  # the final latents of the last job (benchmarks compare presets with them)
        self.cfg_split: CfgSplit | None = None  # --cfg-parallel: rank 0's side, once the partner has joined
        self._partner: Partner | None = None

    def load(self, warm_up: bool = False) -> None:
        """Load the pipeline if it is not loaded; raise model_unavailable if that fails.

        `warm_up` (a load asked for ahead of any job): where the transformer is compiled, one small job runs right
        after loading, so the first user's job does not wait for the compiler. A load that a job triggers skips it:
        that job compiles anyway.
        """
        with self._load_lock:
            if self.model_status.state == ModelState.ready:
                return
            if self.settings.cfg_parallel and self._partner is None:
                from .device import probe_device

                # the partner loads its copy while this process loads its own
                try:
                    self._partner = Partner(self.settings, (self.device or probe_device()).kind, cfg_partner_main)
                except RuntimeError as exc:  # one GPU only
                    self.model_status = ModelStatus(ModelState.failed, error=str(exc))
                    raise LayerBridgeError(ErrorCode.model_unavailable, str(exc)) from exc
            self._load_locked()
            if self._partner is not None and self.cfg_split is None:
                self._partner.join()
                self.cfg_split = CfgSplit(self.pipe.transformer, rank=0)
        if warm_up and self.memory is not None and self.memory.compile:
            self._warm_up()

    def _warm_up(self) -> None:
        """One small job on a grey image (caption, CFG's two prompt lengths, 2 steps, no restoration): it compiles
        the caption decoder and the transformer blocks' graph, cached for the jobs that follow."""
        started = time.monotonic()
        image = np.full((WARM_UP_SIZE, WARM_UP_SIZE, 4), 128, np.uint8)
        image[..., 3] = 255
        try:
            self.run(image, JobParams.parse(WARM_UP_JOB), lambda p: None, lambda: False)
        except Exception as exc:  # a failed warm-up leaves the compiling to the first job; it must not fail the load
            log.warning("warm-up job failed (%s: %s); the first job will compile", type(exc).__name__, exc)
        else:
            log.info("warm-up job (compiling) done in %.0f s", time.monotonic() - started)
        finally:
            self._captions.clear()
            self._finish_seconds = None  # it skipped restoration: no estimate for a real job's

    def close(self) -> None:
        """Stop the CFG partner process, if there is one."""
        self._end_cfg_parallel(Partner.stop)

    def _end_cfg_parallel(self, end_partner: Callable[[Partner], None]) -> None:
        """Without the partner from now on (`end_partner` stops or kills it): both passes run in this process."""
        if self._partner is not None:
            end_partner(self._partner)
            self._partner = None
        if self.cfg_split is not None:
            self.cfg_split.remove()
            self.cfg_split = None

    def _pipe_arguments(self, pil: Any, prompt: str, params: JobParams, steps: int, seed: int) -> dict[str, Any]:
        """The pipeline call of a job, but for its step callback and output type (CFG's two ranks make the same)."""
        import torch

        return dict(
            image=pil,
            prompt=prompt,
            negative_prompt=" " if params.cfg_scale > 1 else None,
            true_cfg_scale=params.cfg_scale,
            layers=params.layers,
            num_inference_steps=steps,
            resolution=params.resolution,
            cfg_normalize=params.cfg_normalize,
            use_en_prompt=params.caption_language == "en",
            generator=torch.Generator(device="cpu").manual_seed(seed),
        )

    def run_cfg_partner(self, job: CfgJob, split: CfgSplit) -> None:
        """Rank 1 of CFG parallel (backend/model/cfg_parallel.py): the same pipeline call as rank 0's, through its
        CFG steps; `split` ends it there (PartnerLeft) or when rank 0 cancels (JobCancelled)."""
        preset = resolve_preset(job.params)
        split.begin(preset.cfg_steps)
        preset.apply(self.pipe)
        try:
            self.pipe(**self._pipe_arguments(job.image, job.prompt, job.params, preset.steps, job.seed),
                      output_type="latent")
        finally:
            preset.remove(self.pipe)
            self.pipe.maybe_free_model_hooks()

    def first_progress(self, params: JobParams) -> Progress:
        """The stage a job starts in, as run() will report it: a job's first `running` state."""
        if self.model_status.state != ModelState.ready:
            return Progress(Stage.loading_model, message="Loading the model")
        if not params.prompt.strip():
            return Progress(Stage.captioning, message="Describing the image")
        return self._encoding_progress(resolve_preset(params).steps)

    def _encoding_progress(self, steps: int) -> Progress:
        return Progress(Stage.encoding, 0, steps, self._eta(steps), "Encoding")

    def run(
        self,
        image: np.ndarray,
        params: JobParams,
        on_progress: ProgressCallback,
        cancelled: CancelCheck,
    ) -> JobResult:
        """Decompose one image. Raises JobCancelled, or LayerBridgeError with a code for the client."""
        import torch

        timings: dict[str, float] = {}
        t0 = time.monotonic()
        if self.model_status.state != ModelState.ready:
            on_progress(self.first_progress(params))  # loading the model
            self.load()
        timings["load_s"] = time.monotonic() - t0
        if cancelled():
            raise JobCancelled()
        preset = resolve_preset(params)
        # Streamed (16 GB cards), the text encoder crosses the bus for every token: names only when the job asks.
        self._naming = preset.name_layers and (params.name_layers is not None or self.memory.mode not in STREAMED)
        pipe = self.pipe
        height, width = image.shape[:2]
        pil = model_input(image)
        # below 2**31: a seed the user copies back fits the editors' integer fields (Qt's spin boxes are int32)
        seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
        try:
            t = time.monotonic()
            prompt = params.prompt.strip()
            if not prompt:
                on_progress(self.first_progress(params))  # captioning, the model being ready
                prompt = self._caption(pil, params, preset.caption_tokens, cancelled, on_progress, preset.steps)
            timings["caption_s"] = time.monotonic() - t
            t_encode = time.monotonic()
            on_progress(self._encoding_progress(preset.steps))
            step_times: list[float] = []
            marks = {"last": time.monotonic()}
            work = step_work(params.layers, params.resolution)

            split = self.cfg_split
            cfg_steps = preset.cfg_steps if split is not None else 0

            def on_step(pipeline: Any, i: int, timestep: Any, kwargs: dict) -> dict:
                now = time.monotonic()
                step_times.append(now - marks["last"])
                marks["last"] = now
                # While CFG's two ranks go on together, a cancel is decided by both at the next step (CfgSplit)
                if (split.stopped if i + 1 < cfg_steps else cancelled()):
                    raise JobCancelled()
                done = i + 1
                if done == preset.steps:
                    self.last_latents = kwargs.get("latents")
                # The first interval also holds the prompt's encoding (the vision-language model reading the
                # picture): several steps' worth. The pace is the median of the steps after it; at the first step,
                # the last job's pace scaled to this job's work, or unknown.
                if len(step_times) > 1:
                    self._step_seconds = float(np.median(step_times[1:]))
                    self._step_work = work
                    per_step = self._step_seconds
                elif self._step_seconds is not None and self._step_work:
                    per_step = self._step_seconds * work / self._step_work
                else:
                    per_step = None
                if done == preset.steps:
                    on_progress(Progress(Stage.decoding, done, preset.steps, self._eta(0, per_step), "Decoding layers"))
                else:
                    left = self._eta(preset.steps - done, per_step)
                    on_progress(Progress(Stage.denoising, done, preset.steps, left, f"Denoising {done}/{preset.steps}"))
                return {}

            if split is not None:
                split.begin(cfg_steps, cancelled)
                if cfg_steps:
                    send_job(CfgJob(pil, prompt, params, seed))
            preset.apply(pipe)
            try:
                output = pipe(**self._pipe_arguments(pil, prompt, params, preset.steps, seed),
                              callback_on_step_end=on_step, output_type="np")
            except JobCancelled:
                raise
            except Exception:
                if split is not None and split.exchanges < cfg_steps:
                    self._drop_partner()  # rank 1 waits inside a step that will not come: CFG parallel ends here
                raise
            finally:
                preset.remove(pipe)
                pipe.maybe_free_model_hooks()
            timings["denoise_s"] = marks["last"] - t_encode  # text encoding included
            timings["decode_s"] = time.monotonic() - marks["last"]
            self._decode_seconds = timings["decode_s"]
            if cancelled():
                raise JobCancelled()
            frames = np.asarray(output.images[0])
            layers = [np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8) for f in frames]
            names = None
            if self._naming:
                eta = None if self._finish_seconds is None else self._finish_eta()  # unknown before the first job
                on_progress(Progress(Stage.finishing, preset.steps, preset.steps, eta, "Naming layers"))
                t = time.monotonic()
                try:
                    names = name_layers(pipe, layers, params.caption_language, lambda: raise_if_cancelled(cancelled))
                except JobCancelled:
                    raise
                except Exception as exc:  # names are a nicety: the layers come with plain ones rather than not at all
                    log.warning("naming the layers failed (%s: %s); plain names", type(exc).__name__, exc)
                    if isinstance(exc, torch.cuda.OutOfMemoryError):
                        torch.cuda.empty_cache()
                timings["name_s"] = self._name_seconds = time.monotonic() - t
            message = "Restoring full resolution" if params.restore else "Resizing layers"
            on_progress(Progress(Stage.finishing, preset.steps, preset.steps, self._finish_seconds, message))
            t = time.monotonic()
            placed = finish_layers(image, layers, params.restore, names or plain_names(len(layers)))
            timings["finish_s"] = self._finish_seconds = time.monotonic() - t
            notes, self._reading_text, self._splitting = [], params.text_layers, params.split_elements
            if params.text_layers:
                eta = self._text_seconds
                if eta is not None and params.split_elements:
                    eta += self._split_seconds or 0.0
                on_progress(Progress(Stage.finishing, preset.steps, preset.steps, eta, "Reading text"))
                t = time.monotonic()
                notes = read_layers_text(placed, lambda: raise_if_cancelled(cancelled))
                timings["text_s"] = self._text_seconds = time.monotonic() - t
            if params.split_elements:
                on_progress(Progress(Stage.finishing, preset.steps, preset.steps, self._split_seconds, SPLITTING))
                t = time.monotonic()
                placed, split_notes = split_job_layers(placed, cancelled)
                notes += split_notes
                timings["split_s"] = self._split_seconds = time.monotonic() - t
        except JobCancelled:
            raise
        except LayerBridgeError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise LayerBridgeError(
                ErrorCode.out_of_memory,
                "the GPU ran out of memory. Try resolution 640 or fewer layers. "
                + smaller_mode_advice(self.memory.mode),
            ) from exc
        return JobResult(width, height, placed, seed, prompt, params.restore, timings, notes)

    def _drop_partner(self) -> None:
        log.error("CFG parallel: the job failed between the two ranks; the partner is stopped and this server runs "
                  "both passes itself from now on")
        self._end_cfg_parallel(Partner.kill)

    def _eta(self, steps_left: int, per_step: float | None = None) -> float | None:
        """Seconds left: the remaining steps at `per_step` (default: the last measured pace), then decoding and
        finishing as they last took."""
        per_step = self._step_seconds if per_step is None else per_step
        if per_step is None:
            return None
        return steps_left * per_step + (self._decode_seconds or 0.0) + self._finish_eta()

    def _finish_eta(self) -> float:
        """Seconds from the decoded layers to the result, as the last job took: naming (when this job names its
        layers), restoring, reading the text (when it reads it) and splitting into elements (when it splits)."""
        naming = (self._name_seconds or 0.0) if self._naming else 0.0
        reading = (self._text_seconds or 0.0) if self._reading_text else 0.0
        splitting = (self._split_seconds or 0.0) if self._splitting else 0.0
        return naming + (self._finish_seconds or 0.0) + reading + splitting


def cfg_partner_main(settings: Any, init_file: str, gpu: str | None, threads: int | None) -> None:
    """Rank 1's process: load the model (on the GPU named by `gpu`, or the CPU with `threads` threads), then run the
    CFG part of every job rank 0 sends, until it sends None."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    if threads:
        torch.set_num_threads(threads)
    from dataclasses import replace

    engine = Engine(replace(settings, cfg_parallel=False))
    engine.load()
    init_group(1, init_file, engine.device.kind)
    split = CfgSplit(engine.pipe.transformer, rank=1)
    while True:
        job = receive_job()
        if job is None:
            break
        try:
            engine.run_cfg_partner(job, split)
        except (PartnerLeft, JobCancelled):
            pass  # its part of the job is over (or rank 0 cancelled the job): the next one
        except Exception:  # rank 0 learns from its own side; the partner waits for the next job
            log.exception("CFG partner: the job failed")
    import torch.distributed as dist

    dist.destroy_process_group()


# the engine's public face: what the server's worker and the command line take from here
__all__ = ["Engine", "JobCancelled", "ModelState", "ModelStatus"]
