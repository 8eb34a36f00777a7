"""The OCR engine: PP-OCRv4 detection and recognition (Chinese and English) through rapidocr-onnxruntime, whose
wheel carries the ONNX weights. Detection runs on a reduced copy; each line is read from the full-resolution pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

DETECT_SIDE = 1280  # the longest side of the copy lines are detected on
MIN_SCORE = 0.6  # recognitions below this confidence are dropped (shapes read as "O", "I", "—")

_engine: Any = None
_lock = threading.Lock()
# One reading at a time: the detector keeps the resizing it picks for a picture on itself, so two threads (the model
# thread's job and a split task beside it) must not interleave.
_running = threading.Lock()


@dataclass
class Detection:
    quad: np.ndarray  # 4×2 corners in full-resolution pixels: top-left, top-right, bottom-right, bottom-left
    text: str
    score: float


def engine() -> Any:
    """The shared RapidOCR engine, loaded once (about 0.1 s); raises ImportError when the package is missing."""
    global _engine
    with _lock:
        if _engine is None:
            from ..imaging.opencv import cv2  # noqa: F401  (first: rapidocr imports it too)
            from rapidocr_onnxruntime import RapidOCR

            _engine = RapidOCR()
            _engine.text_det.limit_type = "max"  # never enlarge the reduced copy
            _engine.text_det.limit_side_len = DETECT_SIDE
        return _engine


def detect(rgb: np.ndarray) -> list[np.ndarray]:
    """Quads of the text lines in an RGB picture, found on a copy reduced to DETECT_SIDE, in full-resolution pixels."""
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    pad = 32 if min(small.shape[:2]) < 64 else 8  # room for glyphs touching the edge, more for a tiny picture
    small = np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    ocr = engine()
    with _running:
        boxes, _ = ocr.text_det(np.ascontiguousarray(small))
    if boxes is None or len(boxes) == 0:
        return []
    return [(np.asarray(b, dtype=np.float64) - pad) / scale for b in boxes]


def recognize(crops: list[np.ndarray]) -> list[tuple[str, float]]:
    """(text, confidence) for each RGB line crop, upright."""
    if not crops:
        return []
    ocr = engine()
    with _running:
        results, _ = ocr.text_rec([np.ascontiguousarray(c) for c in crops])
    return [(str(text), float(score)) for text, score, *_ in results]
