"""Quality presets, the model side: how a preset's per-job speed levers are applied to the pipeline and removed.

The presets themselves (name, label, steps, CFG share, cache, caption length, naming) are declared once in
backend/core/options.py. Best is the exact recipe; the others trade exactness for time.

Levers, each measured on its own by scripts/gpu_bench.py:
- steps: fewer denoising steps.
- cfg_until: run the unconditional (CFG) pass only for the first part of the schedule; after that the step uses the
  conditional prediction alone, which is what the pipeline computes when CFG is off. Halves the late steps' cost.
- cache: diffusers' FirstBlockCache on the transformer: a step whose first-block residual barely changed reuses the
  previous step's remaining blocks.
- caption_tokens: the longest automatic caption (the text encoder generates one token at a time).
- names: the text encoder names each layer (backend/model/naming.py: up to 8 tokens a layer) instead of "Layer 2".
Load-time levers (regional compilation in compile.py, FP8 or int8 weights in quantize.py, chosen by plan.py) apply to
every preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.job import JobParams
from ..core.options import PRESETS, PresetSpec


class _LateCfgSkip:
    """Wraps the transformer's forward: after `cutoff` steps, the unconditional call returns the conditional output.

    The pipeline calls the transformer twice per step when CFG is on, conditional first, so the call count gives the
    step. neg == cond makes `neg + s * (cond - neg)` equal to cond, and CFG normalisation then scales by 1.
    """

    def __init__(self, transformer: Any, cutoff: int):
        self.transformer = transformer
        self.cutoff = cutoff
        self.calls = 0
        self.last: Any = None
        self.skipped = 0
        self.inner = transformer.forward
        # An offload hook may have put its own forward on the instance: `remove` puts that one back.
        self.previous = vars(transformer).get("forward")
        transformer.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        step, is_uncond = divmod(self.calls, 2)
        self.calls += 1
        if is_uncond and step >= self.cutoff:
            self.skipped += 1
            return self.last
        out = self.inner(*args, **kwargs)
        if not is_uncond:
            self.last = out
        return out

    def remove(self) -> None:
        attributes = vars(self.transformer)
        if attributes.get("forward") is not self:
            return  # replaced meanwhile (diffusers' model offload re-hooks the transformer after each call)
        if self.previous is None:
            del attributes["forward"]  # back to the class's method
        else:
            attributes["forward"] = self.previous


@dataclass
class Preset:
    name: str
    steps: int
    spec: PresetSpec
    use_cfg: bool
    name_layers: bool = False
    _skip: _LateCfgSkip | None = None
    _cached: bool = False

    @property
    def caption_tokens(self) -> int:
        return self.spec.caption_tokens

    @property
    def cfg_steps(self) -> int:
        """The steps that run both passes (with and without the prompt): the first `cfg_until` of them, or none."""
        if not self.use_cfg:
            return 0
        return min(self.steps, round(self.steps * self.spec.cfg_until))

    def apply(self, pipe: Any) -> None:
        """Turn this preset's per-job levers on (undone by `remove`)."""
        transformer = pipe.transformer
        if self.spec.cache_threshold is not None:
            from diffusers import FirstBlockCacheConfig

            transformer.enable_cache(FirstBlockCacheConfig(threshold=self.spec.cache_threshold))
            self._cached = True
        cutoff = round(self.steps * self.spec.cfg_until)
        if self.use_cfg and cutoff < self.steps:
            self._skip = _LateCfgSkip(transformer, cutoff)

    def remove(self, pipe: Any) -> None:
        """Undo `apply`, so the next job starts from the exact pipeline."""
        if self._skip is not None:
            self._skip.remove()
            self._skip = None
        if self._cached:
            pipe.transformer.disable_cache()
            self._cached = False


def resolve_preset(params: JobParams) -> Preset:
    spec = PRESETS[params.preset]
    steps = params.steps if params.steps is not None else spec.steps
    names = params.name_layers if params.name_layers is not None else spec.names
    return Preset(params.preset, steps, spec, use_cfg=params.cfg_scale > 1, name_layers=names)


def describe_presets(device: Any = None) -> str:
    return "; ".join(f"{name}: {spec.summary}" for name, spec in PRESETS.items())
