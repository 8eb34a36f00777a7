"""The handshake: what the server announces (`hello`, GET /v1/info) and the protocol versions it accepts."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..core import options
from ..core.errors import ErrorCode, LayerBridgeError
from ..core.protocol import CAPABILITIES, CHUNK_BYTES, MAX_ASPECT, MAX_SIDE, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
from ..core.settings import Settings


def hello_json(settings: Settings) -> dict[str, Any]:
    """The handshake's answer: versions, capabilities, limits, and what a job may ask for (docs/protocol.md §5)."""
    return {
        "type": "hello",
        "server": "layerbridge",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "min_protocol": MIN_PROTOCOL_VERSION,
        "capabilities": CAPABILITIES,
        "limits": {
            "max_pixels": settings.max_pixels,
            "max_side": MAX_SIDE,
            "max_aspect": MAX_ASPECT,
            "max_upload_bytes": settings.max_upload_bytes,
            "chunk_bytes": CHUNK_BYTES,
        },
        "job_options": options.job_options_json(settings.preset),
    }


def check_protocol(value: Any) -> None:
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise LayerBridgeError(ErrorCode.bad_request, f"protocol must be an integer (got {value!r})")
    if version > PROTOCOL_VERSION:
        raise LayerBridgeError(
            ErrorCode.protocol_mismatch,
            f"this client speaks protocol {version}, but the LayerBridge server ({__version__}) speaks "
            f"{MIN_PROTOCOL_VERSION}–{PROTOCOL_VERSION}: update the LayerBridge server",
        )
    if version < MIN_PROTOCOL_VERSION:
        raise LayerBridgeError(
            ErrorCode.protocol_mismatch,
            f"this client speaks protocol {version}, but the LayerBridge server ({__version__}) needs at least "
            f"{MIN_PROTOCOL_VERSION}: update the plugin",
        )
