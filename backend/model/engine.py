"""The model: loading QwenImageLayeredPipeline (lazily, with a reported state) and running one job on it."""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from . import download, transformer_file
from ..core.errors import ErrorCode, LayerBridgeError
from ..imaging.image import PlacedLayer, resample_layers
from ..core.job import JobParams, JobResult, Progress, Stage
from .memory import (
    DeviceInfo,
    MemoryChoice,
    STREAMED,
    MemoryMode,
    apply_mode,
    attention_backend,
    enable_compile,
    enable_fp8,
    enable_int8,
    group_offload_options,
    linear_shapes,
    model_dtype,
    plan,
    plan_checked,
    probe_device,
)
from .naming import name_layers, plain_names
from ..text.layers import read_layers_text
from .presets import PRESETS, resolve_preset
from ..core.settings import Settings

log = logging.getLogger("layerbridge.engine")

# Compiled captioning decodes into a fixed-size key/value cache: one size (rounded up to this) means one compilation
# for every image and preset instead of one per prompt length.
CAPTION_CACHE_STEP = 2048
CAPTION_PROGRESS_S = 0.5  # how often captioning reports the time left
# The warm-up job after a load where the transformer is compiled: the default size and layer count.
WARM_UP_SIZE = 640
WARM_UP_JOB = {"layers": 4, "resolution": 640, "steps": 2, "seed": 0, "prompt": "", "restore": False, "name_layers": False}

ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class ModelState(str, enum.Enum):
    not_loaded = "not_loaded"
    downloading = "downloading"
    loading = "loading"
    ready = "ready"
    failed = "failed"


class JobCancelled(Exception):
    """Raised inside the pipeline's step callback: stops the job at once, without decoding."""


@dataclass
class ModelStatus:
    state: ModelState = ModelState.not_loaded
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None


def bucket_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The pipeline's output size for an input of this size (area resolution², the input's aspect)."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_layered import calculate_dimensions

    w, h = calculate_dimensions(resolution * resolution, width / height)
    return int(w), int(h)


def model_input(image: np.ndarray) -> Image.Image:
    """The source as the pipeline takes it: straight RGBA, with no colour under alpha 0.

    The pipeline resizes its input with Pillow, premultiplied, which clears the colour of transparent pixels, except
    when the image is already the bucket's size and is not resized: its invisible colour (often white or leftovers of
    erased pixels) would then reach the model. Cleared here, two images that look alike get the same layers."""
    hidden = image[..., 3:4] == 0
    if hidden.any():
        image = image * ~hidden
    return Image.fromarray(image, "RGBA")


def finish_layers(
    source: np.ndarray, layers: list[np.ndarray], restore: bool, names: list[str] | None = None
) -> list[PlacedLayer]:
    """Model layers (bucket size) to layers at the source's size, cropped to content."""
    names = names or plain_names(len(layers))
    if restore:
        from ..imaging.restore import restore_layers

        return restore_layers(source, layers, names)
    return resample_layers(source, layers, names)


def _smaller_mode_advice(mode: MemoryMode) -> str:
    """What to start the server with to keep less of the model on the GPU than `mode` does."""
    smaller = {
        MemoryMode.gpu: "--memory host_offload",
        MemoryMode.host_offload: "--memory group_offload",
        MemoryMode.model_offload: "--memory group_offload",
        MemoryMode.group_offload: "--memory sequential_offload",
    }.get(mode)
    if smaller is None:
        return "Close other programs that use the GPU."
    return f"Close other programs that use the GPU, or start the server with {smaller} to keep less of the model on it."


def _raise_if(cancelled: CancelCheck) -> None:
    if cancelled():
        raise JobCancelled()


class Engine:
    """Owns the pipeline. `run` is called from one worker thread at a time; `status` from anywhere."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model_status = ModelStatus()
        self.device: DeviceInfo | None = None
        self.memory: MemoryChoice | None = None
        self.pipe: Any = None
        self._load_lock = threading.Lock()
        self._captions: OrderedDict[str, str] = OrderedDict()
        self._step_seconds: float | None = None
        self._decode_seconds: float | None = None
        self._finish_seconds: float | None = None
        self._name_seconds: float | None = None
        self._naming = False  # whether the running job names its layers
        self._reading_text, self._text_seconds = False, None  # whether it reads their text; how long that last took
        self.attention: str | None = None  # None: PyTorch's scaled_dot_product_attention
        # Compiled captioning: the text encoder decodes with a static cache, which transformers compiles (CUDA graphs)
        # on CUDA. Follows the compile lever, only with the whole model on the GPU.
        self.caption_compiled = False
        self._model_dir: str | None = None  # the loaded pipeline's folder (None for a pipeline attached as built)
        self.offload: Any = None  # the HostOffload placing whole components (host offload; 16 GB text encoder)
        self.last_latents: Any = None  # the final latents of the last job (benchmarks compare presets with them)

    # ---- loading -------------------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return Path(self.settings.model).is_dir()

    def downloaded(self) -> bool:
        """Whether the weights are on this machine (a local folder, or the Hub cache holds the pipeline; and the
        single-file transformer, where one is set)."""
        if self.model_status.state == ModelState.ready:
            return True
        single_file = self.settings.transformer_file
        if single_file and transformer_file.local_path(single_file) is None:
            return False
        if self.is_local:
            return True
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(self.settings.model, "model_index.json"), str)
        except Exception:
            return False

    def status_json(self) -> dict[str, Any]:
        s = self.model_status
        device = self.device or probe_device()
        memory = self.memory or self._plan(device)
        return {
            "model": {
                "id": self.settings.model,
                "transformer_file": self.settings.transformer_file,
                "state": s.state.value,
                "downloaded": self.downloaded(),
                "bytes_done": s.bytes_done,
                "bytes_total": s.bytes_total,
                "error": s.error,
            },
            "device": device.to_json(),
            "memory_mode": memory.to_json(),
            "attention": self.attention or "native",
            "preset_default": self.settings.preset,
            "presets": {name: spec.summary for name, spec in PRESETS.items()},
        }

    def load(self, warm_up: bool = False) -> None:
        """Load the pipeline if it is not loaded; raise model_unavailable if that fails.

        `warm_up` (a load asked for ahead of any job): where the transformer is compiled, one small job runs right
        after loading, so the first user's job does not wait for the compiler. A load that a job triggers skips it:
        that job compiles anyway.
        """
        with self._load_lock:
            if self.model_status.state == ModelState.ready:
                return
            self._load_locked()
        if warm_up and self.memory is not None and self.memory.compile:
            self._warm_up()

    def _load_locked(self) -> None:
        self.model_status = ModelStatus(ModelState.loading if self.is_local else ModelState.downloading)
        try:
            self._load()
        except LayerBridgeError as exc:
            self.model_status.state = ModelState.failed
            self.model_status.error = exc.message
            raise
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError" and self.memory is not None:  # torch's, without importing it
                message = (
                    f"the GPU ran out of memory placing the model in {self.memory.mode.value} mode "
                    f"({self.memory.reason}). {_smaller_mode_advice(self.memory.mode)}"
                )
                log.error("model load failed: %s", message)
                self.model_status.state = ModelState.failed
                self.model_status.error = message
                raise LayerBridgeError(ErrorCode.model_unavailable, message) from exc
            log.exception("model load failed")
            self.model_status.state = ModelState.failed
            self.model_status.error = f"{type(exc).__name__}: {exc}"
            raise LayerBridgeError(
                ErrorCode.model_unavailable, f"the model could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc

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

    def _load(self) -> None:

        from diffusers import QwenImageLayeredPipeline

        from . import tiny_model  # noqa: F401  (registers the image-only processor class by its dotted path)

        model = self.settings.model
        single_file = self.settings.transformer_file

        def on_bytes(done: int, total: int) -> None:
            self.model_status.bytes_done, self.model_status.bytes_total = done, total

        if not Path(model).is_dir():
            self.model_status.state = ModelState.downloading
            model = str(download.fetch(model, on_bytes, skip_transformer=bool(single_file)))
        if single_file:
            if transformer_file.local_path(single_file) is None:
                self.model_status.state = ModelState.downloading
            single_path = transformer_file.resolve(single_file, on_bytes)
        self.model_status.state = ModelState.loading
        device = probe_device()
        dtype = model_dtype(device)
        extra: dict[str, Any] = {}
        if not _torchvision_works():
            extra["processor"] = tiny_model.ImageOnlyQwen2VLProcessor.from_pretrained(model, subfolder="processor")
        if single_file:
            extra["transformer"] = transformer_file.load(single_path, model, dtype, single_file)
        pipe = QwenImageLayeredPipeline.from_pretrained(model, dtype=dtype, **extra)
        self._model_dir = model
        self.attach(pipe, device)

    def _plan(self, device: DeviceInfo) -> MemoryChoice:
        s = self.settings
        return plan(device, s.model, s.memory, s.quantize, s.compile, s.transformer_file)

    def attach(self, pipe: Any, device: DeviceInfo | None = None) -> None:
        """Place a loaded pipeline by the memory plan and mark the model ready (benchmarks attach random weights)."""
        started = time.monotonic()
        self.device = device or probe_device()
        self.memory = plan_checked(self.device, lambda: self._plan(self.device), lambda: linear_shapes(pipe.transformer))
        if self.device.fp8_problem:
            log.warning("%s", self.device.fp8_problem)
        pipe.set_progress_bar_config(disable=True)
        quantise = enable_fp8 if self.memory.fp8 else enable_int8 if self.memory.transformer_int8 else None
        if quantise is not None:
            if self.memory.mode == MemoryMode.gpu:
                pipe.transformer.to(self.device.kind)
                quantise(pipe.transformer)
            else:  # the transformer does not fit in bf16: quantised layer by layer on the GPU, kept on the CPU
                quantise(pipe.transformer, staging=self.device.kind)
        elif self.memory.mode in STREAMED:
            transformer_file.widen_fp8_linears(pipe.transformer)  # an FP8 file's weights, for the streaming hooks
        self.offload = apply_mode(
            pipe, self.memory.mode, self.device, self.memory.text_encoder_int8, self.memory.pin_streamed
        )
        if self.memory.text_encoder_int8:
            self._check_int8_text_encoder(pipe)
        self.attention = attention_backend(self.device, self.settings.attention)
        if self.attention:
            pipe.transformer.set_attention_backend(self.attention)
        if self.memory.compile:
            enable_compile(pipe.transformer)
        self.caption_compiled = self.memory.compile and self.memory.mode == MemoryMode.gpu
        self.pipe = pipe
        self.model_status.state = ModelState.ready
        log.info(
            "model %s ready in %.1f s on %s (%s: %s; transformer %s, compile %s, attention %s)",
            self.settings.model, time.monotonic() - started, self.device.name, self.memory.mode.value,
            self.memory.reason, self.memory.transformer_weights(), self.memory.compile, self.attention or "native",
        )

    def _check_int8_text_encoder(self, pipe: Any) -> None:
        """One tiny forward of the int8 text encoder at load. Where it fails, the bf16 text encoder is loaded again
        and streamed like the transformer: slower captions, but jobs that run."""
        try:
            self._text_encoder_smoke(pipe)
            self.offload.offload()
            return
        except Exception as exc:
            if self._model_dir is None:
                raise
            log.warning("the int8 text encoder failed its check (%s: %s); streaming the bf16 one", type(exc).__name__, exc)
        from diffusers.hooks import apply_group_offloading

        from .offload import HostOffload

        self.offload.remove()
        self.offload = None
        text_encoder = type(pipe.text_encoder).from_pretrained(
            self._model_dir, subfolder="text_encoder", dtype=model_dtype(self.device)
        )
        # page-locked as it streams: the plan's RAM check counted the text encoder as placed whole, not page-locked
        apply_group_offloading(text_encoder, **group_offload_options(self.device, pin_streamed=False))
        pipe.register_modules(text_encoder=text_encoder)
        if self.memory.mode == MemoryMode.host_offload:  # the others stay placed whole; they leave before it runs
            self.offload = HostOffload(pipe, self.device.kind, ("transformer", "vae"), release_before=(text_encoder,))
        self.memory.text_encoder_int8 = False
        self.memory.reason += " (the int8 text encoder failed its check at load: bf16, streamed)"

    @staticmethod
    def _text_encoder_smoke(pipe: Any) -> None:
        import torch

        with torch.no_grad():
            pipe.text_encoder(input_ids=torch.tensor([[0, 1]]))

    # ---- running -------------------------------------------------------------------------------------------

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

            def on_step(pipeline: Any, i: int, timestep: Any, kwargs: dict) -> dict:
                now = time.monotonic()
                step_times.append(now - marks["last"])
                marks["last"] = now
                if cancelled():
                    raise JobCancelled()
                done = i + 1
                if done == preset.steps:
                    self.last_latents = kwargs.get("latents")
                # the first interval also holds the text encoding: leave it out of the per-step estimate
                per_step = float(np.median(step_times[1:] or step_times))
                self._step_seconds = per_step
                if done == preset.steps:
                    on_progress(Progress(Stage.decoding, done, preset.steps, self._eta(0), "Decoding layers"))
                else:
                    left = self._eta(preset.steps - done)
                    on_progress(Progress(Stage.denoising, done, preset.steps, left, f"Denoising {done}/{preset.steps}"))
                return {}

            preset.apply(pipe)
            try:
                output = pipe(
                    image=pil,
                    prompt=prompt,
                    negative_prompt=" " if params.cfg_scale > 1 else None,
                    true_cfg_scale=params.cfg_scale,
                    layers=params.layers,
                    num_inference_steps=preset.steps,
                    resolution=params.resolution,
                    cfg_normalize=params.cfg_normalize,
                    use_en_prompt=params.caption_language == "en",
                    generator=torch.Generator(device="cpu").manual_seed(seed),
                    callback_on_step_end=on_step,
                    output_type="np",
                )
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
                    names = name_layers(pipe, layers, params.caption_language, lambda: _raise_if(cancelled))
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
            placed = finish_layers(image, layers, params.restore, names)
            timings["finish_s"] = self._finish_seconds = time.monotonic() - t
            notes, self._reading_text = [], params.text_layers
            if params.text_layers:
                on_progress(Progress(Stage.finishing, preset.steps, preset.steps, self._text_seconds, "Reading text"))
                t = time.monotonic()
                notes = read_layers_text(placed, lambda: _raise_if(cancelled))
                timings["text_s"] = self._text_seconds = time.monotonic() - t
        except JobCancelled:
            raise
        except LayerBridgeError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise LayerBridgeError(
                ErrorCode.out_of_memory,
                "the GPU ran out of memory. Try resolution 640 or fewer layers. "
                + _smaller_mode_advice(self.memory.mode),
            ) from exc
        return JobResult(width, height, placed, seed, prompt, params.restore, timings, notes)

    def _eta(self, steps_left: int) -> float | None:
        """Seconds left: the remaining steps at the last job's pace, then decoding and finishing as they last took."""
        if self._step_seconds is None:
            return None
        return steps_left * self._step_seconds + (self._decode_seconds or 0.0) + self._finish_eta()

    def _finish_eta(self) -> float:
        """Seconds from the decoded layers to the result, as the last job took: naming (when this job names its
        layers), restoring and reading the text (when it reads it)."""
        naming = (self._name_seconds or 0.0) if self._naming else 0.0
        reading = (self._text_seconds or 0.0) if self._reading_text else 0.0
        return naming + (self._finish_seconds or 0.0) + reading

    def _caption(
        self,
        pil: Any,
        params: JobParams,
        max_tokens: int,
        cancelled: CancelCheck,
        on_progress: ProgressCallback | None = None,
        steps: int = 0,
    ) -> str:
        """The pipeline's automatic caption, with cancel between tokens, progress with the time left, and a per-image
        cache."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        key = hashlib.sha256(pil.tobytes() + f"{pil.size}{params.resolution}{params.caption_language}{max_tokens}".encode()).hexdigest()
        if key in self._captions:
            self._captions.move_to_end(key)
            return self._captions[key]
        pipe = self.pipe
        w, h = bucket_size(pil.width, pil.height, params.resolution)
        prompt_image = pipe.image_processor.resize(pil, h, w)
        template = pipe.image_caption_prompt_en if params.caption_language == "en" else pipe.image_caption_prompt_cn

        engine = self
        clock: dict[str, float] = {}

        class StopOnCancel(StoppingCriteria):
            """Called after every token: cancel, and now and then the job's time left at this caption's pace (the
            caption may end early, so that is an upper bound)."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                if cancelled():
                    raise JobCancelled()
                now = time.monotonic()
                made = input_ids.shape[1] - prompt_tokens
                clock.setdefault("first", now)  # after the image is read and the first token made
                if on_progress is not None and made > 1 and now - clock.get("sent", 0.0) >= CAPTION_PROGRESS_S:
                    clock["sent"] = now
                    rest = engine._eta(steps)
                    per_token = (now - clock["first"]) / (made - 1)
                    eta = None if rest is None else rest + (max_tokens - made) * per_token
                    on_progress(Progress(Stage.captioning, 0, steps, eta, "Describing the image"))
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        # Same steps as QwenImageLayeredPipeline.get_image_caption, plus the stopping criterion for cancel.
        inputs = pipe.vl_processor(text=template, images=prompt_image, padding=True, return_tensors="pt").to(
            pipe._execution_device
        )
        prompt_tokens = inputs.input_ids.shape[1]
        stop = StoppingCriteriaList([StopOnCancel()])
        from .offload import onload_for_generate  # accelerate (and torch) only once a model runs

        onload_for_generate(pipe.text_encoder)
        if self.caption_compiled:
            need = prompt_tokens + max_tokens
            static = {"cache_implementation": "static", "max_cache_len": -(-need // CAPTION_CACHE_STEP) * CAPTION_CACHE_STEP}
            try:
                generated = pipe.text_encoder.generate(**inputs, max_new_tokens=max_tokens, stopping_criteria=stop, **static)
            except JobCancelled:
                raise
            except Exception as exc:  # a compiler failure must not fail the job: caption without it from now on
                log.warning("compiled captioning failed (%s: %s); captioning uncompiled from now on", type(exc).__name__, exc)
                self.caption_compiled = False
                generated = pipe.text_encoder.generate(**inputs, max_new_tokens=max_tokens, stopping_criteria=stop)
        else:
            generated = pipe.text_encoder.generate(**inputs, max_new_tokens=max_tokens, stopping_criteria=stop)
        trimmed = [out[len(inp):] for inp, out in zip(inputs.input_ids, generated)]
        caption = pipe.vl_processor.batch_decode(trimmed, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
        caption = caption.strip() or "an image"
        self._captions[key] = caption
        while len(self._captions) > 64:
            self._captions.popitem(last=False)
        return caption


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


__all__ = ["Engine", "JobCancelled", "ModelState", "MemoryMode", "bucket_size", "finish_layers", "model_input"]
