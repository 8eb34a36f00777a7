"""Quality presets: which speed levers a job uses. Best is the exact recipe; the others trade exactness for time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .job import JobParams

DEFAULT_STEPS = {"best": 50, "balanced": 30, "fast": 20}


@dataclass
class Preset:
    name: str
    steps: int
    levers: list[str] = field(default_factory=list)

    def apply(self, pipe: Any) -> None:
        """Turn this preset's per-job levers on (undone by `remove`)."""

    def remove(self, pipe: Any) -> None:
        """Undo `apply`, so the next job starts from the exact pipeline."""


def resolve_preset(params: JobParams) -> Preset:
    steps = params.steps if params.steps is not None else DEFAULT_STEPS[params.preset]
    return Preset(params.preset, steps)


def describe_presets(device: Any) -> str:
    return ", ".join(f"{name}: {steps} steps" for name, steps in DEFAULT_STEPS.items())
