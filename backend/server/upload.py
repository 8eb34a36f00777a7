"""An uploaded image and its job parameters: parsed once, on either transport, into `JobParams` and, for raw pixels,
an `ImageSpec`; WebSocket uploads arriving in chunks, holding memory only as their bytes arrive."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import JobParams
from ..core.protocol import MAX_ASPECT, PIXEL_FORMATS
from ..core.settings import Settings
from ..imaging.image import check_size, decode, from_raw

IMAGE_SPEC_KEYS = ("width", "height", "pixel_format")  # what HTTP params carry about a raw image (protocol §4)


def json_object(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise LayerBridgeError(ErrorCode.bad_request, "malformed JSON: nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:
        raise LayerBridgeError(ErrorCode.bad_request, f"malformed JSON: {exc}")


def raw_pixel_format(value: Any) -> str:
    """The layout of a raw image or layer: rgba8 unless the client names another (docs/protocol.md)."""
    if value is None:
        return "rgba8"
    if value not in PIXEL_FORMATS:
        raise LayerBridgeError(ErrorCode.invalid_params, f"pixel format {value!r} is not one of {', '.join(PIXEL_FORMATS)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ImageSpec:
    """Raw pixels as a client describes them: their size and layout (docs/protocol.md). HTTP carries it in params
    (width, height, pixel_format), the WebSocket in submit's image object (width, height, format)."""

    width: int
    height: int
    pixel_format: str = "rgba8"
    max_aspect: int | None = MAX_ASPECT  # None for a task without the model (max_aspect_for)

    @classmethod
    def parse(cls, width: Any, height: Any, pixel_format: Any, max_pixels: int,
              code: ErrorCode = ErrorCode.invalid_params, max_aspect: int | None = MAX_ASPECT) -> "ImageSpec":
        """Validate a description, the size against `max_pixels` included, before any pixel arrives."""
        if not _is_int(width) or not _is_int(height):
            raise LayerBridgeError(code, "a raw image needs integer width and height")
        spec = cls(width, height, raw_pixel_format(pixel_format), max_aspect)
        check_size(width, height, max_pixels, max_aspect)
        return spec

    @property
    def bytes(self) -> int:
        return self.width * self.height * 4

    def pixels(self, data: bytes | bytearray, max_pixels: int) -> np.ndarray:
        return from_raw(data, self.width, self.height, max_pixels, self.pixel_format, self.max_aspect)


def max_aspect_for(task: str) -> int | None:
    """The aspect limit of a task's image: the model's for a decomposition; none for a split (a 30000×1 strip splits)."""
    return None if task == "split" else MAX_ASPECT


def parse_job_params(settings: Settings, raw_params: Any, task: str) -> JobParams:
    """A job's parameters by its task (options.TASKS): a decomposition's, or a split task's (fewer)."""
    if task == "split":
        return JobParams.parse_split(raw_params)
    return JobParams.parse(raw_params, settings.preset)


def parse_params(settings: Settings, raw_params: Any, raw_format: bool,
                 task: str = "decompose") -> tuple[JobParams, ImageSpec | None]:
    """An HTTP upload's params part: the job's parameters, and the raw image's description where the image is raw."""
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, dict):
        raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
    described = {key: raw_params[key] for key in IMAGE_SPEC_KEYS if key in raw_params}
    params = parse_job_params(settings, {k: v for k, v in raw_params.items() if k not in described}, task)
    if raw_format:
        return params, ImageSpec.parse(described.get("width"), described.get("height"), described.get("pixel_format"),
                                       settings.max_pixels, max_aspect=max_aspect_for(task))
    if "pixel_format" in described:
        raise LayerBridgeError(ErrorCode.invalid_params, "pixel_format is for a raw image (Content-Type application/octet-stream)")
    return params, None


def decode_image(settings: Settings, spec: ImageSpec | None, data: bytes | bytearray,
                 task: str = "decompose") -> np.ndarray:
    """Raw pixels by their description, or an image file (runs off the event loop: decoding can take a while)."""
    if spec is not None:
        return spec.pixels(data, settings.max_pixels)
    return decode(data, settings.max_pixels, max_aspect_for(task))


class UploadBudget:
    """The bytes that WebSocket uploads in progress hold over all connections, against one cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def reserve(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def release(self, n: int) -> None:
        self.held = max(0, self.held - n)


class Upload:
    """One WebSocket upload: its job's parameters, parsed at `submit`, and the pixels, arriving in chunks. Memory is
    taken (and reserved against the budget) as bytes arrive: in-order chunks extend the buffer, a chunk ahead of it
    waits apart until the gap before it is filled."""

    def __init__(self, ref: Any, params: JobParams, spec: ImageSpec, budget: UploadBudget, task: str = "decompose"):
        self.ref, self.params, self.spec, self.budget, self.task = ref, params, spec, budget, task
        self.buffer = bytearray()
        self.ahead: dict[int, bytes] = {}  # chunks past the end of the buffer, by offset
        self.held = 0  # bytes reserved from the budget

    @property
    def size(self) -> int:
        return self.spec.bytes

    def write(self, offset: int, chunk: memoryview) -> None:
        """Take one chunk (a resent chunk counts once); raise payload_too_large where the budget is spent."""
        if offset > len(self.buffer):
            self._reserve(len(chunk) - len(self.ahead.get(offset, b"")))
            self.ahead[offset] = bytes(chunk)
            return
        self._extend(offset, chunk)
        while self.ahead:
            start = min(self.ahead)
            if start > len(self.buffer):
                break
            data = self.ahead.pop(start)
            self._release(len(data))
            self._extend(start, memoryview(data))

    def _extend(self, offset: int, chunk: memoryview) -> None:
        end = offset + len(chunk)
        if end > len(self.buffer):
            self._reserve(end - len(self.buffer))
        self.buffer[offset:end] = chunk

    def _reserve(self, n: int) -> None:
        if n <= 0:
            return
        if not self.budget.reserve(n):
            raise LayerBridgeError(
                ErrorCode.payload_too_large,
                f"the server holds {self.budget.limit // (1024 * 1024)} MiB of uploads at most over all connections; "
                "try again when other uploads have finished",
            )
        self.held += n

    def _release(self, n: int) -> None:
        self.budget.release(n)
        self.held -= n

    def discard(self) -> None:
        """Give its memory back: the upload is finished, refused, or its connection has gone."""
        self.budget.release(self.held)
        self.held = 0
        self.buffer = bytearray()
        self.ahead.clear()

    @property
    def complete(self) -> bool:
        return len(self.buffer) == self.size and not self.ahead
