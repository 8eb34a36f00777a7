"""An uploaded image and its job parameters: parsing, decoding, and WebSocket uploads arriving in chunks."""

from __future__ import annotations

import bisect
import json
from typing import Any

import numpy as np

from ..core.errors import ErrorCode, LayerBridgeError
from ..core.job import JobParams
from ..core.protocol import PIXEL_FORMATS
from ..core.settings import Settings
from ..imaging.image import decode, from_raw


def json_object(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LayerBridgeError(ErrorCode.bad_request, f"malformed JSON: {exc}")


def raw_pixel_format(value: Any) -> str:
    """The layout of a raw image or layer: rgba8 unless the client names another (docs/protocol.md)."""
    if value is None:
        return "rgba8"
    if value not in PIXEL_FORMATS:
        raise LayerBridgeError(ErrorCode.invalid_params, f"pixel format {value!r} is not one of {', '.join(PIXEL_FORMATS)}")
    return value


def parse_upload(settings: Settings, raw_params: Any, data: bytes, raw_format: bool) -> tuple[np.ndarray, JobParams]:
    """Validate params and decode the image (runs off the event loop: decoding can take a while)."""
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, dict):
        raise LayerBridgeError(ErrorCode.invalid_params, "params must be a JSON object")
    raw_params = dict(raw_params)
    width, height = raw_params.pop("width", None), raw_params.pop("height", None)
    pixel_format = raw_params.pop("pixel_format", None)
    params = JobParams.parse(raw_params, settings.preset)
    if raw_format:
        if not isinstance(width, int) or not isinstance(height, int) or isinstance(width, bool) or isinstance(height, bool):
            raise LayerBridgeError(ErrorCode.invalid_params, "a raw image needs integer width and height in params")
        image = from_raw(data, width, height, settings.max_pixels, raw_pixel_format(pixel_format))
    elif pixel_format is not None:
        raise LayerBridgeError(ErrorCode.invalid_params, "pixel_format is for a raw image (Content-Type application/octet-stream)")
    else:
        image = decode(data, settings.max_pixels)
    return image, params


class Upload:
    def __init__(self, ref: Any, params: Any, width: int, height: int, size: int, pixel_format: str):
        self.ref, self.params, self.width, self.height, self.pixel_format = ref, params, width, height, pixel_format
        self.buffer = bytearray(size)
        # the covered byte ranges [starts[i], ends[i]), sorted, disjoint and not touching (in-order chunks: one range)
        self.starts: list[int] = []
        self.ends: list[int] = []

    def write(self, offset: int, chunk: memoryview) -> None:
        start, end = offset, offset + len(chunk)
        self.buffer[start:end] = chunk
        lo = bisect.bisect_left(self.ends, start)  # the first range ending at or after start
        hi = bisect.bisect_right(self.starts, end)  # past the last range starting at or before end
        if lo < hi:
            start, end = min(start, self.starts[lo]), max(end, self.ends[hi - 1])
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]

    @property
    def complete(self) -> bool:
        """Every byte covered (a resent chunk counts once): touching ranges merge, so that is one range."""
        return self.starts == [0] and self.ends == [len(self.buffer)]
