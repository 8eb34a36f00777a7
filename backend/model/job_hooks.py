"""What a running job is handed by its worker: a progress callback and a cancel check, and the exception that stops
the job when it is cancelled."""

from __future__ import annotations

from typing import Callable

from ..core.job import Progress

ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class JobCancelled(Exception):
    """Raised inside the pipeline's step callback: stops the job at once, without decoding."""


def raise_if_cancelled(cancelled: CancelCheck) -> None:
    if cancelled():
        raise JobCancelled()
