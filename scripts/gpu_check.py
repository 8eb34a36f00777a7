#!/usr/bin/env python3
"""The engine end to end at 640 with 4 layers and a few steps in each memory mode, full-size random weights.

Prints seconds per step and peak VRAM per mode; a thin entry to scripts/gpu_bench.py's `modes` phase.
  python3 scripts/gpu_check.py [--steps 4] [--out DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--phases", "modes", *sys.argv[1:]]))
