"""Captioning: the pipeline's own description of the picture, where a job has no prompt, with cancel between tokens,
progress with the time left, compiled decoding where the model is compiled, and a per-image cache."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

from ..core.job import JobParams, Progress, Stage
from .inputs import bucket_size
from .job_hooks import CancelCheck, JobCancelled, ProgressCallback

log = logging.getLogger("layerbridge.engine")

# Compiled captioning decodes into a fixed-size key/value cache: one size (rounded up to this) means one compilation
# for every image and preset instead of one per prompt length.
CAPTION_CACHE_STEP = 2048
CAPTION_PROGRESS_S = 0.5  # how often captioning reports the time left


class Captioning:
    """The engine's captions. Uses the engine's loaded pipeline (`pipe`, `caption_compiled`) and its time estimate
    (`_eta`)."""

    def __init__(self) -> None:
        self._captions: OrderedDict[str, str] = OrderedDict()

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
