"""What a job may ask for: the presets, the ranges and the choices of its parameters, declared once.

JobParams.parse validates against these, the command line takes its choices and help from them, and the server
announces them to clients as `job_options` in its hello (docs/protocol.md §5), from which the plugins build their
controls. The model side of a preset (how its levers are applied) lives in backend/model/presets.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PresetSpec:
    """One quality preset: which per-job speed levers a job uses (backend/model/presets.py applies them)."""

    label: str  # for people, in the plugins' pickers
    steps: int
    cfg_until: float  # fraction of the steps that run the unconditional pass
    cache_threshold: float | None  # FirstBlockCache threshold, None = off
    caption_tokens: int
    names: bool  # layers named by the text encoder, unless the job says otherwise (name_layers)
    summary: str


@dataclass(frozen=True)
class Range:
    """A number from `min` to `max`, both included; `default` None means the job's preset decides."""

    min: int | float
    max: int | float
    default: int | float | None

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "default": self.default}


@dataclass(frozen=True)
class Choice:
    """One of `choices`."""

    choices: tuple[Any, ...]
    default: Any

    def to_json(self) -> dict[str, Any]:
        return {"choices": list(self.choices), "default": self.default}


# In this order in pickers and in the announcement: the exact recipe first, then faster and less exact.
PRESETS: dict[str, PresetSpec] = {
    "best": PresetSpec("Best", 50, 1.0, None, 512, True, "the exact recipe: 50 steps, CFG on every step, layers named"),
    "balanced": PresetSpec("Balanced", 30, 0.6, None, 256, True, "30 steps, CFG on the first 60%, layers named"),
    "fast": PresetSpec("Fast", 20, 0.4, 0.06, 160, False,
                       "20 steps, CFG on the first 40%, first-block cache, plain layer names"),
}
DEFAULT_PRESET = "best"  # the server's --preset unless set

LAYERS = Range(2, 10, 4)
RESOLUTION = Choice((640, 1024), 640)  # the model's resolution buckets: about resolution² pixels
STEPS = Range(2, 100, None)
CFG_SCALE = Range(1.0, 20.0, 4.0)  # true CFG; 1.0 turns it off
CAPTION_LANGUAGE = Choice(("en", "zh"), "en")
PROMPT_CHARACTERS = 2000
NAME_CHARACTERS = 256
SEED = Range(0, 2**32 - 1, None)  # None: random, the one used is reported
# Each model layer but the background comes back as a group of its separate elements (docs/elements.md). Off on the
# server (the HTTP API and `layerbridge decompose` keep their flat result unless asked); the plugins ask for it.
SPLIT_ELEMENTS = Choice((False, True), False)

# The tasks a job may be (docs/protocol.md §4, §5): a decomposition on the model, or a split of one layer into its
# elements, without the model. The split task takes only these parameters, with JobParams's meanings.
TASKS = ("decompose", "split")
SPLIT_TASK_PARAMS = ("name", "text_layers")


def job_options_json(default_preset: str) -> dict[str, Any]:
    """The `job_options` object of the hello (docs/protocol.md §5): presets in order, then each parameter's range.

    Args:
        default_preset: the server's default preset (its settings.preset), used when a job names none.
    """
    return {
        "presets": [
            {
                "name": name,
                "label": spec.label,
                "steps": spec.steps,
                "cfg_until": spec.cfg_until,
                "caption_tokens": spec.caption_tokens,
                "name_layers": spec.names,
                "summary": spec.summary,
            }
            for name, spec in PRESETS.items()
        ],
        "preset": default_preset,
        "layers": LAYERS.to_json(),
        "resolution": RESOLUTION.to_json(),
        "steps": STEPS.to_json(),
        "cfg_scale": CFG_SCALE.to_json(),
        "caption_language": CAPTION_LANGUAGE.to_json(),
        "split_elements": SPLIT_ELEMENTS.to_json(),
    }
