"""Reading the text of a job's returned layers: each layer's blocks in canvas pixels, never failing the job."""

from __future__ import annotations

import logging
from typing import Callable

from ..core.layer import PlacedLayer

log = logging.getLogger(__name__)


def read_layers_text(layers: list[PlacedLayer], check: Callable[[], None]) -> list[str]:
    """Sets each layer's `text` to its blocks, placed on the canvas; returns notes for the result (empty when all
    went well). A failure of the text engine leaves plain layers and a note; `check` (called between layers) may
    raise to cancel, and that passes through.

    Args:
        layers: the restored layers, each cropped to its content and placed at (x, y).
        check: raises when the job is cancelled.
    """
    for layer in layers:
        check()
        if not layer.width or not layer.height:
            continue
        try:
            from .reading import read_text  # here: a missing engine (OpenCV, ONNX Runtime) is a note, not a failure

            blocks = read_text(layer.pixels).to_dict()["blocks"]
        except Exception as exc:  # text is an addition: the layers come back as pixels rather than not at all
            log.warning("reading text failed (%s: %s); plain layers", type(exc).__name__, exc)
            for done in layers:
                done.text = []
            return [f"Text was not read ({type(exc).__name__}: {exc}); the layers are plain pixels."]
        for block in blocks:
            _move(block["box"], layer.x, layer.y)
            for line in block["lines"]:
                _move(line["box"], layer.x, layer.y)
                line["baseline"] += layer.y
        layer.text = blocks
    return []


def _move(box: dict, dx: int, dy: int) -> None:
    box["x"] += dx
    box["y"] += dy
