"""Job parameters, states and results: the objects of docs/protocol.md §3."""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .errors import ErrorCode, LayerBridgeError
from .layer import PlacedLayer

PRESETS = ("best", "balanced", "fast")


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
    layers: int = 4
    resolution: int = 640
    steps: int | None = None  # None: the preset's
    cfg_scale: float = 4.0
    cfg_normalize: bool = True
    prompt: str = ""
    caption_language: str = "en"
    seed: int | None = None
    preset: str = "best"
    restore: bool = True
    name: str = ""
    name_layers: bool | None = None  # None: the preset's choice
    text_layers: bool = True  # read each layer's text (docs/text.md)

    @classmethod
    def parse(cls, raw: Any, default_preset: str = "best") -> "JobParams":
        """Validate a JSON object into parameters, or raise invalid_params naming the field."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise LayerBridgeError(ErrorCode.invalid_params, f"unknown parameter(s): {', '.join(unknown)}")
        p = cls(preset=default_preset)
        p.layers = _int(raw, "layers", p.layers, 2, 10)
        p.resolution = _int(raw, "resolution", p.resolution, None, None)
        if p.resolution not in (640, 1024):
            raise LayerBridgeError(ErrorCode.invalid_params, f"resolution must be 640 or 1024 (got {p.resolution})")
        if raw.get("steps") is not None:
            p.steps = _int(raw, "steps", 0, 2, 100)
        p.cfg_scale = _float(raw, "cfg_scale", p.cfg_scale, 1.0, 20.0)
        p.cfg_normalize = _bool(raw, "cfg_normalize", p.cfg_normalize)
        p.prompt = _str(raw, "prompt", p.prompt, 2000)
        p.caption_language = _str(raw, "caption_language", p.caption_language, 2)
        if p.caption_language not in ("en", "zh"):
            raise LayerBridgeError(ErrorCode.invalid_params, "caption_language must be 'en' or 'zh'")
        if raw.get("seed") is not None:
            p.seed = _int(raw, "seed", 0, 0, 2**32 - 1)
        p.preset = _str(raw, "preset", p.preset, 16)
        if p.preset not in PRESETS:
            raise LayerBridgeError(ErrorCode.invalid_params, f"preset must be one of {', '.join(PRESETS)}")
        p.restore = _bool(raw, "restore", p.restore)
        p.name = _str(raw, "name", p.name, 256)
        if raw.get("name_layers") is not None:
            p.name_layers = _bool(raw, "name_layers", False)
        p.text_layers = _bool(raw, "text_layers", p.text_layers)
        return p

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int(raw: dict, key: str, default: int, low: int | None, high: int | None) -> int:
    """An integer (or a whole float) in [low, high]; None bounds check nothing (the caller checks its values)."""
    value = raw.get(key, default)
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())  # NaN and ±inf are not
    if isinstance(value, bool) or not whole:
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be an integer (got {value!r})")
    value = int(value)
    if low is not None and high is not None and not low <= value <= high:
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be between {low} and {high} (got {value})")
    return value


def _float(raw: dict, key: str, default: float, low: float, high: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be a number (got {value!r})")
    if not low <= value <= high:
        raise LayerBridgeError(ErrorCode.invalid_params, f"{key} must be between {low} and {high} (got {value})")
    return float(value)


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
    layers: list[PlacedLayer]
    seed: int
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
            "layers": [
                {
                    "index": i,
                    "name": layer.name,
                    "x": layer.x,
                    "y": layer.y,
                    "width": layer.width,
                    "height": layer.height,
                    "bytes": layer.width * layer.height * 4,
                    "text": layer.text,
                }
                for i, layer in enumerate(r.layers)
            ],
            "seed": r.seed,
            "caption": r.caption,
            "restored": r.restored,
            "timings": {k: round(v, 3) for k, v in r.timings.items()},
            "notes": r.notes,
            "expires_in_s": max(0, int(expires_in_s)),
        }
