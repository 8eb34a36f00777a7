"""The OCR engine: PP-OCRv4 detection and recognition (Chinese and English) through rapidocr-onnxruntime, whose
wheel carries the ONNX weights. Detection runs on a reduced copy; each line is read from the full-resolution pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

DETECT_SIDE = 1280  # the longest side of the copy lines are detected on, its edges included
EDGE = 8  # the picture's edge pixels repeated around it: room for glyphs touching it (32 for a tiny picture)
MIN_SCORE = 0.6  # recognitions below this confidence are dropped (shapes read as "O", "I", "—")
PLAIN_SPREAD = 6  # a row or column whose channels vary by at most this much holds no text
PLAIN_KEPT = 24  # the fewest plain rows or columns kept next to content in the detector's copy

RECOGNISE_HEIGHT = 48  # the recogniser's input height; its width follows each batch's widest line
RECOGNISE_MIN_RATIO = 320 / 48  # narrower lines are padded to this width/height
RECOGNISE_BATCH = 6  # at most this many lines are read in one run, ...
RECOGNISE_SPREAD = 1.1  # ... lines at most this much wider than the narrowest of the run: the recogniser's time
# grows with the padded width, and padding also changes its readings a little

_engine: "Engine | None" = None
_lock = threading.Lock()
# One reading at a time: the detector keeps the resizing it picks for a picture on itself, so two threads (the model
# thread's job and a split task beside it) must not interleave.
_running = threading.Lock()


@dataclass
class Engine:
    """PP-OCRv4's detector and recogniser as ONNX Runtime sessions, and rapidocr's steps around them (the
    detector's box finding, the recogniser's decoding)."""

    detector: Any  # onnxruntime.InferenceSession
    recogniser: Any
    boxes: Any  # rapidocr's DBPostProcess: the detector's probability map → line quads
    decode: Any  # rapidocr's CTCLabelDecode: the recogniser's output → (text, confidence)


def _session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.enable_cpu_mem_arena = False  # as rapidocr: no pool held at its peak size between readings
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle threads sleep instead of spinning: on a busy machine a spinning thread takes the core the other one needs
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def engine() -> Engine:
    """The shared engine, loaded once (about 0.2 s); raises ImportError when rapidocr-onnxruntime is missing."""
    global _engine
    with _lock:
        if _engine is None:
            from ..imaging.opencv import cv2  # noqa: F401  (first: rapidocr imports it too)
            from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess
            from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
            from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH, read_yaml, update_model_path

            config = update_model_path(read_yaml(DEFAULT_CFG_PATH))
            det, rec = config["Det"], config["Rec"]
            recogniser = _session(rec["model_path"])
            characters = recogniser.get_modelmeta().custom_metadata_map["character"].splitlines()
            _engine = Engine(
                detector=_session(det["model_path"]),
                recogniser=recogniser,
                boxes=DBPostProcess(thresh=det["thresh"], box_thresh=det["box_thresh"],
                                    max_candidates=det["max_candidates"], unclip_ratio=det["unclip_ratio"],
                                    use_dilation=det["use_dilation"], score_mode=det["score_mode"]),
                decode=CTCLabelDecode(character=characters),
            )
        return _engine


def detect(rgb: np.ndarray) -> list[np.ndarray]:
    """Quads of the text lines in an RGB picture, found on a copy reduced to DETECT_SIDE, in full-resolution pixels.

    Long runs of plain rows and columns (a flat background, a transparent area) are cut short in that copy first: the
    detector's time grows with its input's area, and they hold no text."""
    h, w = rgb.shape[:2]
    scale = min(1.0, (DETECT_SIDE - 2 * EDGE) / max(h, w))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    rows, cols = _kept(small)
    if rows.size == 0 or cols.size == 0:
        return []  # every row (or every column) of one colour: one colour, or a gradient across the picture
    small = small[rows][:, cols] if len(rows) < small.shape[0] or len(cols) < small.shape[1] else small
    pad = 32 if min(small.shape[:2]) < 64 else EDGE
    top, left = pad, pad
    bottom = -(small.shape[0] + 2 * pad) % 32 + pad  # the network takes sides in multiples of 32
    right = -(small.shape[1] + 2 * pad) % 32 + pad
    small = np.pad(small, ((top, bottom), (left, right), (0, 0)), mode="edge")
    with _running:
        boxes = _detect_boxes(small)
    if not boxes:
        return []
    quads = []
    for box in boxes:
        box = np.asarray(box, dtype=np.float64) - (left, top)
        x, y = _unkept(box[:, 0], cols), _unkept(box[:, 1], rows)
        quads.append(np.stack([x, y], axis=1) / scale)
    return quads


def _detect_boxes(rgb: np.ndarray) -> list[np.ndarray]:
    """The detector's line quads in an RGB picture whose sides are multiples of 32."""
    e = engine()
    tensor = ((rgb.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[np.newaxis]
    (probability,) = e.detector.run(None, {e.detector.get_inputs()[0].name: np.ascontiguousarray(tensor)})
    boxes, _ = e.boxes(probability, rgb.shape[:2])
    h, w = rgb.shape[:2]
    kept = []
    for box in boxes:
        box = np.clip(np.asarray(box, dtype=np.float64).round(), 0, (w - 1, h - 1))
        if np.linalg.norm(box[0] - box[1]) > 3 and np.linalg.norm(box[0] - box[3]) > 3:
            kept.append(box)
    return kept


def _kept(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns of a picture the detector sees: all but the middle of long runs of plain ones. Next to
    content, a run keeps as many rows as the content is tall (at least PLAIN_KEPT), as the detector's boxes reach a
    little beyond the glyphs; the columns keep as many as the tallest content."""
    from ..imaging.opencv import cv2

    def plain(axis: int) -> np.ndarray:  # OpenCV: numpy reduces a row of an H×W×3 array several times slower
        spread = cv2.reduce(rgb, axis, cv2.REDUCE_MAX).astype(np.int16) - cv2.reduce(rgb, axis, cv2.REDUCE_MIN)
        return (spread.reshape(-1, rgb.shape[2]) <= PLAIN_SPREAD).all(axis=-1)

    rgb = np.ascontiguousarray(rgb)
    row_plain = plain(1)
    rows = _keep_runs(row_plain, None)
    tallest = max((b - a for a, b in _runs(~row_plain)), default=0)
    col_plain = plain(0)
    cols = _keep_runs(col_plain, tallest)
    return rows, cols


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _keep_runs(plain: np.ndarray, reach: int | None) -> np.ndarray:
    """Indices kept of a row (or column) sequence: each plain run keeps `reach` (or, None: the neighbouring content's
    length) next to each content run it touches, at least PLAIN_KEPT."""
    n = len(plain)
    keep = np.ones(n, dtype=bool)
    content = _runs(~plain)
    if not content:
        return np.arange(0)
    for start, end in _runs(plain):
        before = next((b - a for a, b in content if b == start), 0)
        after = next((b - a for a, b in content if a == end), 0)
        head = max(PLAIN_KEPT, reach if reach is not None else before) if start > 0 else 0
        tail = max(PLAIN_KEPT, reach if reach is not None else after) if end < n else 0
        if head + tail < end - start:
            keep[start + head : end - tail] = False
    return np.flatnonzero(keep)


def _unkept(coords: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Coordinates in the cut copy back in the reduced copy's pixels (those in the padding beyond its edges too)."""
    last = len(kept) - 1
    inside = np.interp(np.clip(coords, 0, last), np.arange(len(kept)), kept)
    return inside + np.minimum(coords, 0) + np.maximum(coords - last, 0)


def recognize(crops: list[np.ndarray]) -> list[tuple[str, float]]:
    """(text, confidence) for each RGB line crop, upright."""
    from ..imaging.opencv import cv2

    e = engine()
    results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
    ratios = [max(RECOGNISE_MIN_RATIO, c.shape[1] / c.shape[0]) for c in crops]
    batches: list[list[int]] = []
    for i in sorted(range(len(crops)), key=lambda i: ratios[i]):
        if batches and len(batches[-1]) < RECOGNISE_BATCH and ratios[i] <= RECOGNISE_SPREAD * ratios[batches[-1][0]]:
            batches[-1].append(i)
        else:
            batches.append([i])
    for batch in batches:
        ratio = max(ratios[i] for i in batch)
        width = int(RECOGNISE_HEIGHT * ratio)
        tensor = np.zeros((len(batch), 3, RECOGNISE_HEIGHT, width), dtype=np.float32)
        for row, i in enumerate(batch):
            h, w = crops[i].shape[:2]
            resized_w = min(width, int(np.ceil(RECOGNISE_HEIGHT * w / h)))
            resized = cv2.resize(np.ascontiguousarray(crops[i]), (resized_w, RECOGNISE_HEIGHT))
            tensor[row, :, :, :resized_w] = (resized.astype(np.float32).transpose(2, 0, 1) / 255 - 0.5) / 0.5
        (probabilities,) = e.recogniser.run(None, {e.recogniser.get_inputs()[0].name: tensor})
        for i, (text, score, *_) in zip(batch, e.decode(probabilities)):
            results[i] = (str(text), float(score))
    return results
