"""Loading the model: QwenImageLayeredPipeline downloaded where needed, loaded and placed by the memory plan (with its
quantisation, attention backend and compilation), and the model's state as the server reports it."""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import download, transformer_file
from ..core.errors import ErrorCode, LayerBridgeError
from ..core.settings import Settings
from .attention import attention_backend
from .compile import enable_compile
from .device import DeviceInfo, model_dtype, probe_device
from .placement import apply_mode, group_offload_options
from .plan import STREAMED, MemoryChoice, MemoryMode, plan, plan_checked, smaller_mode_advice
from .presets import PRESETS
from .quantize import enable_fp8, enable_int8, linear_shapes

log = logging.getLogger("layerbridge.engine")


class ModelState(str, enum.Enum):
    not_loaded = "not_loaded"
    downloading = "downloading"
    loading = "loading"
    ready = "ready"
    failed = "failed"


@dataclass
class ModelStatus:
    state: ModelState = ModelState.not_loaded
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None


class ModelLoading:
    """The model's side of the engine: the pipeline loaded (downloaded first where needed) and placed by the memory
    plan, and its state as the server reports it. `Engine` runs jobs on it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model_status = ModelStatus()
        self.device: DeviceInfo | None = None
        self.memory: MemoryChoice | None = None
        self.pipe: Any = None
        self._load_lock = threading.Lock()
        self.attention: str | None = None  # None: PyTorch's scaled_dot_product_attention
        # Compiled captioning: the text encoder decodes with a static cache, which transformers compiles (CUDA graphs)
        # on CUDA. Follows the compile lever, only with the whole model on the GPU.
        self.caption_compiled = False
        self._model_dir: str | None = None  # the loaded pipeline's folder (None for a pipeline attached as built)
        self.offload: Any = None  # the HostOffload placing whole components (host offload; 16 GB text encoder)

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
                    f"({self.memory.reason}). {smaller_mode_advice(self.memory.mode)}"
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


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def quiet_libraries() -> None:
    """No progress bars or warnings from diffusers and transformers in the log (the job's progress is LayerBridge's)."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except Exception:  # logging niceties never stop a server or a replica
        pass
