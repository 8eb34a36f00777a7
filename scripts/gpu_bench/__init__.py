"""End-to-end speed and memory of LayerBridge's engine on one GPU, with the full-size architecture and random weights:
`python3 scripts/gpu_bench.py --help` (runner.py) lists the phases. One runner (runner.py: the bench's bookkeeping,
building, one job, placing the model) and its phases by what they measure: jobs.py (presets, compilation, naming),
cards.py (memory modes and smaller cards), quantised.py (FP8, int8, GGUF and FP8 files), forward.py (FLOPs and
attention backends)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project, for `backend`

from .quantised import gguf_pack  # noqa: E402
from .runner import main  # noqa: E402

__all__ = ["gguf_pack", "main"]
