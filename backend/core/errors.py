"""Stable error codes (docs/protocol.md §2) and the exception that carries them."""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(str, enum.Enum):
    bad_request = "bad_request"
    invalid_params = "invalid_params"
    invalid_image = "invalid_image"
    unsupported_image = "unsupported_image"
    image_too_large = "image_too_large"
    payload_too_large = "payload_too_large"
    unauthorized = "unauthorized"
    forbidden_host = "forbidden_host"
    forbidden_origin = "forbidden_origin"
    protocol_mismatch = "protocol_mismatch"
    not_found = "not_found"
    not_ready = "not_ready"
    queue_full = "queue_full"
    out_of_memory = "out_of_memory"
    model_unavailable = "model_unavailable"
    job_failed = "job_failed"
    cancelled = "cancelled"
    server_stopped = "server_stopped"
    worker_lost = "worker_lost"
    internal = "internal"


HTTP_STATUS = {
    ErrorCode.bad_request: 400,
    ErrorCode.invalid_params: 400,
    ErrorCode.invalid_image: 400,
    ErrorCode.unsupported_image: 415,
    ErrorCode.image_too_large: 413,
    ErrorCode.payload_too_large: 413,
    ErrorCode.unauthorized: 401,
    ErrorCode.forbidden_host: 403,
    ErrorCode.forbidden_origin: 403,
    ErrorCode.protocol_mismatch: 426,
    ErrorCode.not_found: 404,
    ErrorCode.not_ready: 409,
    ErrorCode.queue_full: 503,
    ErrorCode.out_of_memory: 507,
    ErrorCode.model_unavailable: 503,
    ErrorCode.job_failed: 500,
    ErrorCode.cancelled: 409,
    ErrorCode.server_stopped: 503,
    ErrorCode.worker_lost: 503,
    ErrorCode.internal: 500,
}


class LayerBridgeError(Exception):
    """An error a client is told about, with a stable code and a message for people."""

    def __init__(self, code: ErrorCode, message: str, job: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.job = job

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_json(self, ref: Any = None) -> dict[str, Any]:
        return {"type": "error", "code": self.code.value, "message": self.message, "job": self.job, "ref": ref}
