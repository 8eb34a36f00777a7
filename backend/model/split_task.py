"""Element split in jobs (docs/elements.md): the step that turns a decomposition's layers into groups of their
elements, and the split task, which splits one sent layer without the model (no GPU, beside the model queue)."""

from __future__ import annotations

import logging
import time

import numpy as np

from ..core.job import JobParams, JobResult, Progress, Stage
from ..core.layer import PlacedLayer
from ..imaging.export import layer_name
from ..imaging.split import assign_text, split_layer, split_stack, text_block
from ..text.layers import read_layers_text
from .job_hooks import CancelCheck, JobCancelled, ProgressCallback, raise_if_cancelled

log = logging.getLogger("layerbridge.split")

SPLITTING = "Splitting elements"
READING_TEXT = "Reading text"


def split_job_layers(layers: list[PlacedLayer], cancelled: CancelCheck) -> tuple[list[PlacedLayer], list[str]]:
    """A decomposition's layers as groups of their elements (the background never split), and notes for the result.
    An unexpected failure leaves the layers unsplit with a note, never failing the job; a cancel passes through.

    Args:
        layers: the finished layers, bottom to top, their text read.
        cancelled: the job's cancel check, asked between layers.
    """
    try:
        return split_stack(layers, lambda: raise_if_cancelled(cancelled)), []
    except JobCancelled:
        raise
    except Exception as exc:  # the split is an addition: the layers come back unsplit rather than not at all
        log.warning("splitting elements failed (%s: %s); unsplit layers", type(exc).__name__, exc)
        for layer in layers:
            layer.parent = None
        return list(layers), [f"The layers were not split into elements ({type(exc).__name__}: {exc})."]


def run_split(image: np.ndarray, params: JobParams, on_progress: ProgressCallback, cancelled: CancelCheck) -> JobResult:
    """The split task (docs/protocol.md §4, POST /v1/split): the sent layer's elements, bottom to top, flat, in the
    sent image's pixels; its text read first when `params.text_layers` (it guides the split). One element: a single
    entry, the whole layer; a fully transparent layer: a single empty entry (0×0). Raises JobCancelled.

    Args:
        image: (h, w, 4) uint8 straight RGBA, the layer as sent.
        params: its parameters (JobParams.parse_split: `name`, `text_layers`).
        on_progress: told each stage.
        cancelled: asked between stages.
    """
    height, width = image.shape[:2]
    layer = PlacedLayer(layer_name(params.name), 0, 0, image)
    timings: dict[str, float] = {}
    notes: list[str] = []
    raise_if_cancelled(cancelled)
    if params.text_layers:
        on_progress(Progress(Stage.finishing, 0, 0, None, READING_TEXT))
        t = time.monotonic()
        notes = read_layers_text([layer], lambda: raise_if_cancelled(cancelled))
        timings["text_s"] = time.monotonic() - t
        raise_if_cancelled(cancelled)
    on_progress(Progress(Stage.finishing, 0, 0, None, SPLITTING))
    t = time.monotonic()
    elements = split_layer(layer, [text_block(b) for b in layer.text])
    if not elements:
        elements = [PlacedLayer(layer.name, 0, 0, np.zeros((0, 0, 4), np.uint8))]
    elif len(elements) == 1:
        elements[0].text = layer.text
    else:
        assign_text(elements, layer.text)
    timings["split_s"] = time.monotonic() - t
    raise_if_cancelled(cancelled)
    return JobResult(width, height, elements, None, "", False, timings, notes)
