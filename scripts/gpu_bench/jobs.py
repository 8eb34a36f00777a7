"""Phases that time whole jobs all on the GPU: the presets, compilation (eager and FP8), and naming the layers."""

from __future__ import annotations

import os
import time


class JobPhases:
    """Mixed into the runner's Bench: uses its job(), _compile(), _place(), record() and peak figures."""

    def phase_presets(self) -> None:
        for preset in self.args.presets.split(","):
            self.job("presets", preset)

    def phase_compile(self) -> None:
        """Compiled jobs; the first one compiles, from the disk cache where an earlier process filled it (run the phase
        twice, in two processes, to time a start with the cache filled)."""
        from torch._dynamo.utils import counters

        self._compile(True)
        try:
            before = dict(counters["inductor"])
            self.job("compile-first", "fast", compile_included=True)
            self.record({"phase": "compile-cache", "folder": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                         **{k: counters["inductor"].get(k, 0) - before.get(k, 0)
                            for k in ("fxgraph_cache_miss", "fxgraph_cache_hit")}})
            if self.time_left() > 120:
                self.job("compiled", "best")
            self.job("compiled", "fast")
        finally:
            self._compile(False)

    def phase_fp8compile(self) -> None:
        """All on the GPU, FP8 (after the fp8 phase) plus compilation: the fastest configuration."""
        self._place("gpu")
        self._compile(True)
        try:
            self.job("fp8-compile-first" if self.fp8 else "compile-first", "fast", compile_included=True)
            if self.time_left() > 30:
                self.job("fp8-compiled" if self.fp8 else "compiled", "fast")
        finally:
            self._compile(False)

    def phase_naming(self) -> None:
        import numpy as np

        from backend.model.inputs import bucket_size
        from backend.model.naming import NAME_TOKENS, name_layers, plain_names

        width, height = bucket_size(self.args.width, self.args.height, self.args.resolution)
        rng = np.random.default_rng(3)
        layers = [rng.integers(0, 256, (height, width, 4), dtype=np.uint8) for _ in range(self.args.layers)]
        self.peak_reset()
        t = time.monotonic()
        names = name_layers(self.pipe, layers, "en", lambda: None)
        if self.cuda:
            self.torch.cuda.synchronize()
        seconds = time.monotonic() - t
        self.record({"phase": "naming", "layers": self.args.layers, "bucket": f"{width}x{height}",
                     "mode": self.engine.memory.mode.value, "name_s": round(seconds, 2),
                     "per_layer_s": round(seconds / max(1, self.args.layers - 1), 3), "max_tokens": NAME_TOKENS,
                     "named": sum(n != p for n, p in zip(names, plain_names(len(names)))),
                     "peak_vram_gib": self.peak_gib()})
