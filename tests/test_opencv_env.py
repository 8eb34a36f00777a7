"""OpenCV's Qt build must not leak into the environment of programs this process starts (backend/imaging/opencv.py):
a Krita started after it was imported aborted, unable to load its platform plugin."""

import os
import subprocess
import sys


def test_importing_the_backends_opencv_leaves_the_environment_as_it_was():
    code = ("import os; before = dict(os.environ); import backend.imaging.split, backend.text.ocr; "
            "backend.text.ocr.engine(); "
            "print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ))
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
