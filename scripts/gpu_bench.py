#!/usr/bin/env python3
"""The GPU benchmark's command: `python3 scripts/gpu_bench.py --help`. The bench itself is the package
scripts/gpu_bench/ (runner.py and its phases)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a package beside this file wins over this file

from gpu_bench import gguf_pack, main  # noqa: E402

__all__ = ["gguf_pack", "main"]

if __name__ == "__main__":
    sys.exit(main())
