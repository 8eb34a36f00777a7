"""OpenCV, imported through here only: without what its Qt build adds to the environment on import.

opencv-python (the build rapidocr-onnxruntime requires) sets QT_QPA_PLATFORM_PLUGIN_PATH, QT_QPA_FONTDIR and
LD_LIBRARY_PATH to its own bundled Qt when imported. Every program this process starts inherits them: a Krita or
any other Qt program started from here then loads OpenCV's Qt plugins instead of its own and aborts ("could not
load the Qt platform plugin xcb"). Nothing here uses OpenCV's windows, so the environment is put back as it was.
"""

from __future__ import annotations

import os

_ADDED_ON_IMPORT = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR", "LD_LIBRARY_PATH")
_before = {name: os.environ.get(name) for name in _ADDED_ON_IMPORT}

import cv2  # noqa: E402

for _name, _value in _before.items():
    if _value is None:
        os.environ.pop(_name, None)
    else:
        os.environ[_name] = _value

__all__ = ["cv2"]
