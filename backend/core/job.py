"""Job parameters, states and results: the objects of docs/protocol.md §3."""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from . import options
from .errors import ErrorCode, LayerBridgeError
from .layer import PlacedLayer


class JobState(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.done, JobState.failed, JobState.cancelled)


class Stage(str, enum.Enum):
    queued = "queued"
    loading_model = "loading_model"
    captioning = "captioning"
    encoding = "encoding"
    denoising = "denoising"
    decoding = "decoding"
    finishing = "finishing"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


@dataclass
class JobParams:
    """One job's parameters; their ranges and choices are declared in backend/core/options.py."""

    layers: int = options.LAYERS.default
    resolution: int = options.RESOLUTION.default
    steps: int | None = options.STEPS.default  # None: the preset's
    cfg_scale: float = options.CFG_SCALE.default
    cfg_normalize: bool = True
    prompt: str = ""
    caption_language: str = options.CAPTION_LANGUAGE.default
    seed: int | None = None
    preset: str = options.DEFAULT_PRESET
    restore: bool = True
    name: str = ""
    name_layers: bool | None = None  # None: the preset's choice
    text_layers: bool = True  # read each layer's text (docs/text.md)
    split_elements: bool = options.SPLIT_ELEMENTS.default  # each model layer as a group of its elements


    @classmethod
    def parse(cls, raw: Any, default_preset: str = options.DEFAULT_PRESET) -> "JobParams":
        """Validate a JSON object into parameters, or raise invalid_params naming the field.

        Args:
            raw: the job's `params` object (None: every default).
            default_preset: the preset of a job that names none (the server's settings.preset).
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise LayerBridgeError(ErrorCode.invalid_params, f"unknown parameter(s): {', '.join(unknown)}")
        p = cls(preset=default_preset)
        p.layers = _int(raw, "layers", options.LAYERS)
        p.resolution = _int(raw, "resolution", options.RESOLUTION)
        if raw.get("steps") is not None:
            p.steps = _int(raw, "steps", options.STEPS)
        p.cfg_scale = _float(raw, "cfg_scale", options.CFG_SCALE)
        p.cfg_normalize = _bool(raw, "cfg_normalize", p.cfg_normalize)
        p.prompt = _str(raw, "prompt", p.prompt, options.PROMPT_CHARACTERS)
        p.caption_language = _text_choice(raw, "caption_language", options.CAPTION_LANGUAGE)
        if raw.get("seed") is not None:
            p.seed = _int(raw, "seed", options.SEED)
        p.preset = _text_choice(raw, "preset", options.Choice(tuple(options.PRESETS), default_preset))
        p.restore = _bool(raw, "restore", p.restore)
        p.name = _str(raw, "name", p.name, options.NAME_CHARACTERS)
        if raw.get("name_layers") is not None:
            p.name_layers = _bool(raw, "name_layers", False)
        p.text_layers = _bool(raw, "text_layers", p.text_layers)
        p.split_elements = _bool_choice(raw, "split_elements", options.SPLIT_ELEMENTS)
        return p

    @classmethod
    def parse_split(cls, raw: Any) -> "JobParams":
        """The parameters of a split task (docs/protocol.md §4, POST /v1/split): only options.SPLIT_TASK_PARAMS,
        with the meanings they have in a decomposition; anything else is refused with invalid_params.

        Args:
            raw: the task's `params` object (None: every default).
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
        unknown = sorted(set(raw) - set(options.SPLIT_TASK_PARAMS))
        if unknown:
            raise LayerBridgeError(ErrorCode.invalid_params, f"unknown parameter(s) for a split: {', '.join(unknown)} "
                                   f"(it takes {', '.join(options.SPLIT_TASK_PARAMS)})")
        return cls.parse(raw)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int(raw: dict, key: str, declared: options.Range | options.Choice) -> int:
    """An integer (or a whole float) within its declaration; the declared default when absent."""
    value = raw.get(key, declared.default)
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())  # NaN and ±inf are not
    if isinstance(value, bool) or not whole:
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be an integer (got {value!r})")
    return _within(key, int(value), declared)


def _float(raw: dict, key: str, declared: options.Range) -> float:
    value = raw.get(key, declared.default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be a number (got {value!r})")
    return float(_within(key, value, declared))


def _text_choice(raw: dict, key: str, declared: options.Choice) -> str:
    return _within(key, _str(raw, key, declared.default, max(len(c) for c in declared.choices)), declared)


def _within(key: str, value: Any, declared: options.Range | options.Choice) -> Any:
    """`value` when its declaration allows it, else invalid_params saying what is allowed."""
    if isinstance(declared, options.Range):
        if not declared.min <= value <= declared.max:
            raise LayerBridgeError(ErrorCode.invalid_params,
                                   f"{key} must be between {declared.min} and {declared.max} (got {value})")
    elif value not in declared.choices:
        names = [str(c) for c in declared.choices]
        allowed = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be {allowed} (got {value})")
    return value


def _bool_choice(raw: dict, key: str, declared: options.Choice) -> Any:
    """A true/false choice: a JSON bool within its declaration."""
    return _within(key, _bool(raw, key, declared.default), declared)


def _bool(raw: dict, key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be true or false (got {value!r})")
    return value


def _str(raw: dict, key: str, default: str, max_len: int) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be a string")
    if len(value) > max_len:
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} is too long (at most {max_len} characters)")
    return value


@dataclass
class Progress:
    stage: Stage = Stage.queued
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    message: str = "Waiting in the queue"


@dataclass
class JobResult:
    canvas_width: int
    canvas_height: int
    layers: list[PlacedLayer]  # flat, bottom to top; group entries directly followed by their children
    seed: int | None  # None for a split task (no model)
    caption: str
    restored: bool
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)  # what the job could not do, for people (a text reading failed)


@dataclass
class Job:
    params: JobParams
    image: np.ndarray  # (h, w, 4) uint8 straight RGBA, as sent
    id: str = field(default_factory=lambda: "j_" + secrets.token_hex(8))
    state: JobState = JobState.queued
    progress: Progress = field(default_factory=Progress)
    error: LayerBridgeError | None = None
    result: JobResult | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    task: str = "decompose"  # one of options.TASKS

    def state_json(self, position: int | None) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = (self.finished_at or now) - (self.started or now) if self.started else 0.0
        data: dict[str, Any] = {
            "type": "progress",
            "job": self.id,
            "state": self.state.value,
            "stage": self.progress.stage.value,
            "step": self.progress.step,
            "total": self.progress.total,
            "eta_s": None if self.progress.eta_s is None else round(self.progress.eta_s, 1),
            "elapsed_s": round(elapsed, 2),
            "position": position,
            "message": self.progress.message,
        }
        if self.error is not None:
            data["error"] = {"code": self.error.code.value, "message": self.error.message}
        return data

    def result_json(self, expires_in_s: float) -> dict[str, Any]:
        assert self.result is not None
        r = self.result
        return {
            "type": "result",
            "job": self.id,
            "name": self.params.name,
            "canvas": {"width": r.canvas_width, "height": r.canvas_height},
            "layers": [layer_json(i, layer) for i, layer in enumerate(r.layers)],
            "seed": r.seed,
            "caption": r.caption,
            "restored": r.restored,
            "timings": {k: round(v, 3) for k, v in r.timings.items()},
            "notes": r.notes,
            "expires_in_s": max(0, int(expires_in_s)),
        }


def layer_json(index: int, layer: PlacedLayer) -> dict[str, Any]:
    """One entry of a result's `layers` (docs/protocol.md §3): a pixel layer, or a group entry (`children`, no
    pixels: `bytes` 0)."""
    x, y, width, height = layer.box
    entry: dict[str, Any] = {"index": index, "name": layer.name, "group": layer.group}
    if layer.group:
        entry["children"] = list(layer.children or ())
    entry.update({
        "parent": layer.parent,
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "bytes": layer.width * layer.height * 4,
        "text": layer.text,
    })
    return entry
