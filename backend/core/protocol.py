"""The wire's constants (docs/protocol.md): versions, capabilities, pixel formats, frames and the fixed limits.

Declared once here; the server announces them in `hello` and the clients read them from there.
"""

from __future__ import annotations

import struct

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1

CAPABILITIES = ["http", "websocket", "rgba8", "bgra8", "png", "cancel", "restore", "presets", "ndjson_events", "caption",
                "job_options", "text_layers", "split_elements"]
PIXEL_FORMATS = ("rgba8", "bgra8")

MAX_SIDE = 30_000
# The model works on about resolution² pixels at the image's aspect, in sides of multiples of 32 px: past this ratio
# the short side at 640 would be under 64 px (and at some point 0), which no layer can be read from.
MAX_ASPECT = 100

# WebSocket binary frames: "LBPX", transfer id (u32), byte offset (u32), then at most CHUNK_BYTES of pixels.
CHUNK_BYTES = 4 * 1024 * 1024
FRAME_MAGIC = b"LBPX"
FRAME_HEADER = struct.Struct("<4sII")
MAX_TEXT_BYTES = 1024 * 1024
MAX_FRAME_BYTES = CHUNK_BYTES + FRAME_HEADER.size
